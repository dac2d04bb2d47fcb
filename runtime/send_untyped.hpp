#pragma once

// Sending from a typed actor to a dynamically typed one (caf::actor).
//
// CAF 0.17's send() refuses at compile time when a statically typed actor
// sends to a caf::actor: it can check nothing about such a receiver. Typed
// actors still talk to untyped ones (a progress subscriber may be any
// actor), so they send through here: the same message send() would enqueue
// (this actor as the sender, so the receiver may answer or monitor it;
// this actor's execution context; normal priority), without the check.
// Not anon_send(): its name promises no sender, which a receiver that
// answers would then not get.

#include <caf/abstract_actor.hpp>
#include <caf/actor.hpp>
#include <caf/actor_cast.hpp>
#include <caf/message_id.hpp>

#include <utility>

namespace drover {

/// Sends `xs...` from `self` to `dest` as `self->send(dest, xs...)` would;
/// nothing when `dest` is invalid. `self` is any scheduled actor pointer.
template <class Self, class... Ts>
void send_untyped(Self* self, const caf::actor& dest, Ts&&... xs) {
  static_assert(sizeof...(Ts) > 0, "no message to send");
  if (!dest)
    return;
  caf::actor_cast<caf::abstract_actor*>(dest)->eq_impl(
      caf::make_message_id(), self->ctrl(), self->context(),
      std::forward<Ts>(xs)...);
}

} // namespace drover
