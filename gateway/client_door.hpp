#pragma once

// The client door (runtime/client_protocol.hpp, docs/client.md): the actor
// a coordinator publishes on its admin port for droverctl and programs
// using the client API (include/drover/client.hpp). It checks every
// request's API key against the same keys, tenants, scopes and per-key rate
// limits as the HTTP gateway (gateway/auth.hpp), confines it to the key's
// tenant, and hands it to the node API (actors/api.hpp). With no keys the
// node is in development mode: every request acts with every scope, as
// over HTTP, and the admin port must stay on loopback.

#include "gateway/auth.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/client_protocol.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <vector>

namespace drover {

struct client_door_config {
  /// The node's API keys (--api-key); empty = development mode.
  std::vector<http::api_key> keys;
  /// Requests per second per key unless the key says otherwise; 0 = none.
  double default_rate = 1000;
  /// Items of one batch submission at most (--http-max-batch).
  size_t max_batch = 1000;
  /// Input bytes of one submission or batch at most, all items together
  /// (--http-max-body-bytes: what one HTTP body may hold).
  size_t max_batch_bytes = size_t{8} << 20;
  /// How long the door waits for the node API (--http-request-timeout).
  std::chrono::milliseconds timeout{10000};
  /// A door for a client in this process (gateway/local_client.hpp), never
  /// published: progress subscribers are actors of this node. A published
  /// door refuses those (a remote client could otherwise point the relay
  /// at the node's own actors).
  bool in_process = false;
};

/// A door in front of `api` (the node API actor).
client_door_actor spawn_client_door(caf::actor_system& sys, api_actor api,
                                    client_door_config cfg);

} // namespace drover
