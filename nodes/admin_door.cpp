#include "nodes/admin_door.hpp"

#include "nodes/node_setup.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/send.hpp>

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

caf::error admin_door::reopen(caf::actor_system& sys) {
  if (tls_)
    // caf::openssl::unpublish does not compile in CAF 0.17 (it sends the
    // wrong atom): the same request by hand. Enqueued before publish's
    // request to the same actor, so it is handled first.
    caf::anon_send(sys.openssl_manager().actor_handle(),
                   caf::unpublish_atom::value, door_.address(), port_);
  else
    sys.middleman().unpublish(door_, port_);
  auto err = publish(sys, port_);
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
