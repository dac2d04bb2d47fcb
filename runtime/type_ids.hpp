#pragma once

// Drover's message types for CAF: the project's one type-ID block and an
// `inspect` overload per type.
//
// Every type in the block crosses nodes as Cap'n Proto bytes (a
// std::vector of them as a CAF sequence of such byte strings): when CAF
// serializes one, `inspect` encodes it with runtime/codec's `to_bytes` and
// hands CAF a std::vector<char>; when CAF deserializes, it reads that
// vector and decodes it with `from_bytes` under the default decode_limits.
// Bad bytes become a caf::error from the deserializer; nothing throws.
// CAF's stringification (deep_to_string, logging) uses the `to_string`
// overloads from runtime/codec.hpp, which render JSON.
//
// Register with `register_types(cfg)` on every node, before the actor
// system starts. The block is append-only: reordering changes type IDs.
// tests/runtime/type_ids_test.cpp round-trips every type and fails if a type
// is added here without a test.

#include "runtime/cluster_protocol.hpp"
#include "runtime/codec.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tree.hpp"

#include <caf/error.hpp>
#include <caf/none.hpp>
#include <caf/type_id.hpp>

#include <utility>
#include <vector>

namespace caf {
class actor_system_config;
} // namespace caf

CAF_BEGIN_TYPE_ID_BLOCK(drover, caf::first_custom_type_id)

CAF_ADD_TYPE_ID(drover, (drover::job_spec))
CAF_ADD_TYPE_ID(drover, (drover::job_record))
CAF_ADD_TYPE_ID(drover, (drover::job_event))
CAF_ADD_TYPE_ID(drover, (drover::progress_update))
CAF_ADD_TYPE_ID(drover, (drover::register_worker))
CAF_ADD_TYPE_ID(drover, (drover::lease_batch))
CAF_ADD_TYPE_ID(drover, (drover::heartbeat))
CAF_ADD_TYPE_ID(drover, (drover::progress_batch))
CAF_ADD_TYPE_ID(drover, (drover::completion_batch))
CAF_ADD_TYPE_ID(drover, (drover::tree_node))
CAF_ADD_TYPE_ID(drover, (drover::tree_snapshot))
CAF_ADD_TYPE_ID(drover, (std::vector<drover::job_record>))
CAF_ADD_TYPE_ID(drover, (std::vector<drover::job_event>))
CAF_ADD_TYPE_ID(drover, (drover::lease))
CAF_ADD_TYPE_ID(drover, (drover::completion))
CAF_ADD_TYPE_ID(drover, (drover::submit_request))
CAF_ADD_TYPE_ID(drover, (drover::job_query))
CAF_ADD_TYPE_ID(drover, (drover::queue_stats))
CAF_ADD_TYPE_ID(drover, (std::vector<drover::submit_request>))
CAF_ADD_TYPE_ID(drover, (drover::coordinator_reply))
CAF_ADD_TYPE_ID(drover, (drover::worker_agent_actor))
CAF_ADD_TYPE_ID(drover, (drover::node_link_actor))

CAF_END_TYPE_ID_BLOCK(drover)

namespace drover {

/// Adds the type-ID block's message types and Drover's error category to
/// `cfg`.
void register_types(caf::actor_system_config& cfg);

namespace detail {

/// `inspect` for a type carried as Cap'n Proto bytes (see the top of this
/// file). Works with any CAF 0.17 inspector: saving ones (reads_state) see
/// a std::vector<char>, loading ones (writes_state) must provide one.
template <class Inspector, class T>
typename Inspector::result_type inspect_as_capnp(Inspector& f, T& x) {
  if constexpr (Inspector::reads_state) {
    auto bytes = to_bytes(x);
    return f(bytes);
  } else {
    static_assert(Inspector::writes_state,
                  "inspector neither reads nor writes");
    std::vector<char> bytes;
    if (auto err = f(bytes))
      return err;
    auto decoded = from_bytes<T>(bytes.data(), bytes.size());
    if (!decoded)
      return std::move(decoded.error());
    x = std::move(*decoded);
    return caf::none;
  }
}

} // namespace detail

// Every model type has `inspect`, so those outside the block can still be
// members of other inspected message types.
#define DROVER_INSPECT_AS_CAPNP(type)                                          \
  template <class Inspector>                                                   \
  typename Inspector::result_type inspect(Inspector& f, type& x) {             \
    return detail::inspect_as_capnp(f, x);                                     \
  }

DROVER_INSPECT_AS_CAPNP(backoff_policy)
DROVER_INSPECT_AS_CAPNP(resource_request)
DROVER_INSPECT_AS_CAPNP(job_spec)
DROVER_INSPECT_AS_CAPNP(stage)
DROVER_INSPECT_AS_CAPNP(progress_update)
DROVER_INSPECT_AS_CAPNP(error_info)
DROVER_INSPECT_AS_CAPNP(job_record)
DROVER_INSPECT_AS_CAPNP(webhook_attempt)
DROVER_INSPECT_AS_CAPNP(job_event)
DROVER_INSPECT_AS_CAPNP(resource_capacity)
DROVER_INSPECT_AS_CAPNP(register_worker)
DROVER_INSPECT_AS_CAPNP(lease)
DROVER_INSPECT_AS_CAPNP(lease_batch)
DROVER_INSPECT_AS_CAPNP(running_attempt)
DROVER_INSPECT_AS_CAPNP(heartbeat)
DROVER_INSPECT_AS_CAPNP(progress_batch)
DROVER_INSPECT_AS_CAPNP(completion)
DROVER_INSPECT_AS_CAPNP(completion_batch)
DROVER_INSPECT_AS_CAPNP(coordinator_reply)
DROVER_INSPECT_AS_CAPNP(tree_node)
DROVER_INSPECT_AS_CAPNP(tree_snapshot)
DROVER_INSPECT_AS_CAPNP(submit_request)
DROVER_INSPECT_AS_CAPNP(job_query)
DROVER_INSPECT_AS_CAPNP(queue_stats)

#undef DROVER_INSPECT_AS_CAPNP

} // namespace drover
