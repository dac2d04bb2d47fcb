#pragma once

// A coordinator's admin port and the client door behind it
// (gateway/client_door.hpp, docs/client.md): configured from the node's
// keys and HTTP limits, published at start, and put back on the same port
// if it ever stops while the node runs. Anyone who reaches the port can
// message the door, and CAF 0.17 lets no actor refuse exit_reason::kill:
// the door ignores every other exit request, and a killed one is replaced.

#include "gateway/client_door.hpp"
#include "runtime/config.hpp"

#include <caf/actor.hpp>
#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <cstdint>

namespace drover::node {

class admin_door {
public:
  /// Publishes a door in front of `api` on --admin-host:--admin-port,
  /// with the node's mutual TLS when it has --tls-* (clients then present
  /// a certificate of the cluster's CA, runtime/tls.hpp). errc::bad_config
  /// for bad keys; errc::unavailable if it cannot listen.
  static caf::expected<admin_door> open(caf::actor_system& sys,
                                        const node_config& cfg, api_actor api);

  uint16_t port() const {
    return port_;
  }

  const client_door_actor& handle() const {
    return door_;
  }

  /// After the door stopped while the node runs: a new one on the same
  /// port. Logs what happened.
  caf::error reopen(caf::actor_system& sys);

  /// Stops the door (at the node's shutdown).
  void close();

private:
  admin_door(client_door_config dc, api_actor api, std::string host, bool tls)
      : config_(std::move(dc)),
        api_(std::move(api)),
        host_(std::move(host)),
        tls_(tls) {
    // nop
  }

  caf::error publish(caf::actor_system& sys, uint16_t port);

  /// Closes the stopped door's listener and waits until it is closed.
  void unpublish(caf::actor_system& sys);

  client_door_config config_;
  api_actor api_;
  std::string host_;
  bool tls_ = false;
  uint16_t port_ = 0;
  client_door_actor door_;
};

} // namespace drover::node
