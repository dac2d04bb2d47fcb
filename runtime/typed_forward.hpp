#pragma once

// Handlers for every message of a typed interface, generated from the
// interface itself: for actors that stand in for another of the same
// interface (a relay to whichever API is current, a router that picks the
// API by partition). Each generated handler receives its message's own
// types and answers with its signature's own result type, so the stand-in
// is checked by the compiler like any other typed actor, and an interface
// that grows a message grows its stand-ins with it.
//
//   auto handlers = forward_handlers<api_actor>(
//       [](auto reply, auto&... xs) -> typename decltype(reply)::result {
//         return self->delegate(target, std::move(xs)...);
//       });
//
// `f` is called as f(reply_tag<Os...>{}, xs...) and must return
// caf::result<Os...> (caf::result<void> for a reacts_to). The handlers come
// back as a std::tuple, so that an extension's own handlers can be added
// before behavior_of makes them a behaviour.

#include <caf/atom.hpp>
#include <caf/detail/type_list.hpp>
#include <caf/replies_to.hpp>
#include <caf/result.hpp>

#include <tuple>
#include <type_traits>

namespace drover {

/// The result types of the message being forwarded: a generic `f` names
/// its return type `typename decltype(reply)::result`.
template <class... Os>
struct reply_tag {
  using result = caf::result<Os...>;
};

namespace detail {

/// Atoms are matched by value; everything else by mutable reference (no
/// copy of a batch on its way through).
template <class T>
using forward_arg_t
    = std::conditional_t<caf::is_atom_constant<T>::value, T, T&>;

template <class Signature>
struct forwarder;

template <class... Is, class... Os>
struct forwarder<
    caf::typed_mpi<caf::detail::type_list<Is...>, caf::output_tuple<Os...>>> {
  template <class F>
  static auto make(F f) {
    return [f](forward_arg_t<Is>... xs) mutable -> caf::result<Os...> {
      return f(reply_tag<Os...>{}, xs...);
    };
  }
};

template <class... Signatures, class F>
auto forward_tuple(caf::detail::type_list<Signatures...>, F f) {
  return std::make_tuple(forwarder<Signatures>::make(f)...);
}

} // namespace detail

/// One handler per message of `Handle`'s interface, each calling `f`.
template <class Handle, class F>
auto forward_handlers(F f) {
  return detail::forward_tuple(typename Handle::signatures{}, std::move(f));
}

/// The behaviour of `Handle` made of a tuple of handlers (forward_handlers'
/// own, perhaps with an extension's added by std::tuple_cat).
template <class Handle, class Tuple>
typename Handle::behavior_type behavior_of(Tuple handlers) {
  return std::apply(
      [](auto&... fs) {
        return typename Handle::behavior_type{std::move(fs)...};
      },
      handlers);
}

} // namespace drover
