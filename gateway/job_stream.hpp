#pragma once

// One job's event stream for the HTTP gateway (GET /api/jobs/{id}/stream and
// each subscription of GET /api/ws): the audit log's events after a given
// sequence, live progress as it happens, the rest of the log up to the
// terminal event, then the end, into a sink (an SSE response or a WebSocket
// subscription).

#include "runtime/api_protocol.hpp"
#include "runtime/model.hpp"

#include <caf/actor.hpp>
#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

namespace drover::http {

/// Where a job's event stream goes: an SSE response or one subscription of
/// a WebSocket. Returns false once the client is gone.
struct stream_sink {
  /// (SSE event name, id (0 = none), JSON data)
  std::function<bool(const std::string&, uint64_t, const std::string&)> emit;
  std::function<bool()> keepalive;
  std::function<void()> end;
};

/// Runs one job's event stream into `sink`: the audit log's events after
/// `after` (each with its sequence as id), then live progress as it
/// happens (no id: not in the log yet), then the rest of the log up to the
/// terminal event, then the end. Requests to `api` wait at most `timeout`;
/// the sink's keepalive runs every `keepalive`. Returns the streaming
/// actor (it ends with the stream, or when its client goes).
caf::actor spawn_job_stream(caf::actor_system& sys, api_actor api,
                            std::chrono::milliseconds timeout,
                            std::chrono::milliseconds keepalive, std::string id,
                            uint64_t after, stream_sink sink);

} // namespace drover::http
