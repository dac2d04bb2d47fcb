#include "runtime/client_protocol.hpp"

#include "runtime/connect.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <set>

namespace drover {

caf::expected<client_door_actor>
connect_client_door(caf::actor_system& sys, const std::string& host,
                    uint16_t port, std::chrono::milliseconds timeout,
                    bool tls) {
  // An older door (without the partitions request) is taken too: its
  // partitions request fails, and the client routes nothing.
  auto mm = tls ? sys.openssl_manager().actor_handle()
                : sys.middleman().actor_handle();
  auto door = connect_within<client_door_base>(sys, mm, host, port, timeout);
  if (!door && is(door.error(), errc::forbidden))
    return make_error(errc::forbidden, "not a Drover admin port (the "
                                       "published actor speaks another "
                                       "protocol)");
  if (!door)
    return std::move(door.error());
  return caf::actor_cast<client_door_actor>(*door);
}

} // namespace drover
