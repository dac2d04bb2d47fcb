#include "nodes/admin_door.hpp"

#include "nodes/node_setup.hpp"
#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <chrono>
#include <thread>

namespace drover::node {

caf::expected<admin_door> admin_door::open(caf::actor_system& sys,
                                           const node_config& cfg,
                                           api_actor api) {
  // The same keys, rates and request limits as the HTTP API.
  auto gw = gateway_config_of(cfg);
  if (!gw)
    return std::move(gw.error());
  client_door_config dc;
  dc.keys = std::move(gw->keys);
  dc.default_rate = gw->default_rate;
  dc.max_batch = gw->max_batch;
  dc.max_batch_bytes = gw->limits.max_body_bytes;
  dc.timeout = gw->request_timeout;
  admin_door d{std::move(dc), std::move(api), cfg.admin_host,
               tls_files_of(cfg).enabled()};
  if (auto err = d.publish(sys, cfg.admin_port))
    return err;
  return d;
}

caf::error admin_door::publish(caf::actor_system& sys, uint16_t port) {
  door_ = spawn_client_door(sys, api_, config_);
  auto bound = tls_ ? caf::openssl::publish(door_, port, host_.c_str(), true)
                    : sys.middleman().publish(door_, port, host_.c_str(), true);
  if (!bound) {
    caf::anon_send_exit(door_, caf::exit_reason::kill);
    return make_error(errc::unavailable, "cannot listen on " + host_ + ':'
                                             + std::to_string(port) + ": "
                                             + sys.render(bound.error()));
  }
  port_ = *bound;
  return {};
}

void admin_door::unpublish(caf::actor_system& sys) {
  if (!tls_) {
    sys.middleman().unpublish(door_, port_); // blocks until it is done
    return;
  }
  // caf::openssl::unpublish does not compile in CAF 0.17 (it sends the
  // wrong atom): the same request by hand, waited for like the plain one.
  // The old listener must be closed before the new door binds the port
  // (CAF sets SO_REUSEADDR only: a second listener is refused).
  caf::scoped_actor self{sys};
  self->request(sys.openssl_manager().actor_handle(), std::chrono::seconds{5},
                caf::unpublish_atom::value, door_.address(), port_)
      .receive([] {},
               [](caf::error& err) {
                 log::warn("admin",
                           "unpublishing the stopped door failed; "
                           "publishing the new one anyway",
                           {{"error", describe(err)}});
               });
}

caf::error admin_door::reopen(caf::actor_system& sys) {
  unpublish(sys);
  // A few tries with backoff: the port may take a moment to be free.
  backoff_counter backoff{backoff_schedule{std::chrono::milliseconds{50},
                                           std::chrono::milliseconds{1000}, 2.0,
                                           0.2}};
  caf::error err;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    err = publish(sys, port_);
    if (!err)
      break;
    std::this_thread::sleep_for(backoff.next());
  }
  if (err)
    log::error("admin",
               "the admin port's door stopped and could not be "
               "put back; droverctl and clients cannot reach this "
               "node",
               {{"error", describe(err)}});
  else
    log::warn("admin",
              "the admin port's door stopped (killed by a client?); "
              "a new one serves the same port",
              {{"port", port_}});
  return err;
}

void admin_door::close() {
  if (door_)
    caf::anon_send_exit(door_, caf::exit_reason::kill); // ignores the rest
}

} // namespace drover::node
