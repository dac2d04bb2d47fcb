#include "runtime/client_protocol.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <set>

namespace drover {

caf::expected<client_door_actor>
connect_client_door(caf::actor_system& sys, const std::string& host,
                    uint16_t port, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0)
    return make_error(errc::unavailable, "no time left to connect");
  caf::expected<client_door_actor> result{caf::error{}};
  caf::scoped_actor self{sys};
  self->request(sys.middleman().actor_handle(), timeout,
                caf::connect_atom::value, host, port)
      .receive(
          [&](caf::node_id&, caf::strong_actor_ptr& ptr,
              std::set<std::string>& published) {
            // An older door (without the partitions request) is taken too:
            // its partitions request fails, and the client routes nothing.
            auto want
                = sys.message_types(caf::detail::type_list<client_door_base>{});
            if (!ptr)
              result = make_error(errc::unavailable, "no actor published");
            else if (!std::includes(published.begin(), published.end(),
                                    want.begin(), want.end()))
              result = make_error(errc::forbidden,
                                  "not a Drover admin port (the published "
                                  "actor speaks another protocol)");
            else
              result = caf::actor_cast<client_door_actor>(std::move(ptr));
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
