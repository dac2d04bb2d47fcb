#include "gateway/local_client.hpp"

#include "actors/api.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

namespace drover {

caf::expected<std::unique_ptr<client>> local_client(
    caf::actor_system& sys, std::shared_ptr<const job_system_handles> handles,
    supervisor_actor root, client_options opts, client_door_config door) {
  if (!handles)
    return make_error(errc::bad_config, "client: no job system");
  auto api = spawn_api(sys, std::move(handles), std::move(root));
  door.in_process = true;
  auto d = spawn_client_door(sys, api, std::move(door));
  auto stop = [api, d] {
    // The door ignores every other exit request (gateway/client_door.cpp).
    caf::anon_send_exit(d, caf::exit_reason::kill);
    caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  };
  // Refused options: attach runs `stop` at once, nothing stays behind.
  return client::attach(sys, d, std::move(opts), stop);
}

} // namespace drover
