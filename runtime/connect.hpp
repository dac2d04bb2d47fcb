#pragma once

// Connecting to a remote actor published on host:port within a deadline —
// what middleman::remote_actor<Handle> does, but remote_actor waits for
// CAF's handshake without one, so a peer that accepts the connection and
// then says nothing (a SIGSTOPped node) held the caller for ever. The
// published interface is checked before the handle is typed, as
// remote_actor checks it. Blocks the calling thread: for client threads
// and joiner threads, never for an actor (actors ask the middleman with
// request(...).then, as the worker agent does).

#include "runtime/errors.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <chrono>
#include <set>
#include <string>

namespace drover {

/// `Handle` at host:port through `mm` (the middleman's or the OpenSSL
/// manager's actor), giving up after `timeout`. errc::unavailable (no
/// answer, refused, nothing published) or errc::forbidden (the published
/// actor speaks another protocol: its interface lacks `Handle`'s).
template <class Handle>
caf::expected<Handle> connect_within(caf::actor_system& sys,
                                     const caf::io::middleman_actor& mm,
                                     const std::string& host, uint16_t port,
                                     std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0)
    return make_error(errc::unavailable, "no time left to connect");
  caf::expected<Handle> result{caf::error{}};
  caf::scoped_actor self{sys};
  self->request(mm, timeout, caf::connect_atom::value, host, port)
      .receive(
          [&](caf::node_id&, caf::strong_actor_ptr& ptr,
              std::set<std::string>& published) {
            auto want = sys.message_types(caf::detail::type_list<Handle>{});
            if (!ptr)
              result = make_error(errc::unavailable, "no actor published");
            else if (!std::includes(published.begin(), published.end(),
                                    want.begin(), want.end()))
              result = make_error(errc::forbidden,
                                  "the actor published at " + host + ':'
                                      + std::to_string(port)
                                      + " speaks another protocol");
            else
              result = caf::actor_cast<Handle>(std::move(ptr));
          },
          [&](caf::error& err) {
            result
                = make_error(errc::unavailable, "cannot reach " + host + ':'
                                                    + std::to_string(port)
                                                    + ": " + sys.render(err));
          });
  return result;
}

} // namespace drover
