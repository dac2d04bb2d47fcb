#pragma once

// The typed interfaces between nodes (docs/cluster.md). Every message that
// crosses nodes is listed here; its payloads are Cap'n Proto structs from
// schemas/node_protocol.capnp (runtime/type_ids.hpp carries them as bytes).
//
// Joining (a worker or gateway node -> the coordinator's cluster port):
//   1. (hello_atom, register_worker{node_id, role, protocol_min/max})
//        -> coordinator_reply{protocol, challenge}
//      A node whose version range does not meet the coordinator's is
//      refused here, with a message naming both ranges; the coordinator
//      logs the refusal too.
//   2. (join_atom, register_worker{..., proof, capacity, job_types,
//       running}, worker_agent_actor) -> coordinator_reply, node_link_actor
//      for a worker; (join_atom, register_worker{..., proof}) ->
//      coordinator_reply, api actor for a gateway. A gateway keeps the
//      version the hello settled on per coordinator: which requests of the
//      API that coordinator serves (runtime/api_protocol.hpp).
// The endpoint's own interface (cluster_endpoint_actor) is frozen: CAF
// checks it when a node connects, so it never gains or loses a message;
// everything that evolves is negotiated through the protocol version and
// lives behind the handles the join returns.
//
// Worker <-> coordinator, after the join:
//   worker -> link: (heartbeat_atom, heartbeat) -> coordinator_reply
//       renews the leases of the attempts it lists (one heartbeat per node,
//       not per attempt); the reply names superseded attempts the worker
//       must stop and completions whose commit is settled.
//   worker -> link: (report_atom, progress_batch, completion_batch)
//       -> coordinator_reply: progress (newest per attempt), checkpoints
//       (progress updates with a checkpoint) and outcomes, batched; at
//       most one report in flight per worker.
//   worker -> link (protocol 2): (take_atom, job, attempt, wanted)
//       -> (granted, retry_ms): tokens of the job's rate limit for its
//       running attempt, from the coordinator's limiter (at most one block
//       per answer); the node asks for the sum of what its attempts of one
//       key wait for, one request per key at a time.
//   link -> worker: (lease_atom, lease_batch), (cancel_atom, job, attempt),
//       (abandon_atom, job, attempt). Each lease carries the epoch at
//       which the coordinator holds the job's partition (0 = none); a
//       worker refuses one older than an epoch it was sent before for that
//       partition (runtime/partition_epochs.hpp). The field is optional in
//       the schema: no protocol version of its own.
// Flow control: the link never has more leases outstanding on a worker
// than the slots it registered (credits come back with completions), and
// a worker has at most one report and one heartbeat in flight: neither
// side buffers more than its peer's capacity for a stopped peer.

#include "runtime/atoms.hpp"
#include "runtime/model.hpp"

#include <caf/actor.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace drover {

/// The node-protocol versions this build speaks. 2 added (take_atom) on
/// the link: tokens of a job's rate limit mid-attempt. 3 added (events_atom,
/// job_id, after, limit) on the node API: a job's log a page at a time. 4
/// marks worker nodes that take CoordinatorReply.handedOver and
/// ownedElsewhere (lending_protocol). 5 marks coordinators that move a
/// running attempt's reports to another agent of its machine when the
/// agent running it lets it go (moving_protocol).
constexpr uint32_t cluster_protocol_min = 1;
constexpr uint32_t cluster_protocol_max = 5;

/// The first version whose node API serves (events_atom, job_id, after,
/// limit): a gateway node reads a page of an older coordinator's log from
/// the whole log (nodes/events_after.hpp).
constexpr uint32_t paged_events_protocol = 3;

/// The first version whose worker nodes take CoordinatorReply.handedOver
/// and ownedElsewhere (actors/node_link_join.cpp, hand_over and pass_on):
/// an attempt whose partition is another coordinator's runs on and is
/// offered to the node's other coordinators. A node that ignored them would
/// run it on unowned, its outcome never settled, while the partition's
/// owner ran the job again; so an older node's attempt is abandoned (a
/// hand-over) or superseded (a refused re-report) as before these fields.
/// (handedOver came without a version of its own: a version-3 node may or
/// may not know it, and nothing in its hello says which.)
constexpr uint32_t lending_protocol = 4;

/// The first version whose coordinators take Heartbeat.lent listing an
/// attempt that still reports to them as the node letting its reports go
/// (an agent going home: actors/worker_agent.hpp): the lease holds, and the
/// node's agent joined there may take the attempt over
/// (actors/queue_partitions.cpp, move_running). An older coordinator would
/// let that lease lapse, so an agent moves attempts only at version 5; and
/// a coordinator moves only attempts the node running them let go, never
/// on another agent's word alone.
constexpr uint32_t moving_protocol = 5;

/// A worker node, as its coordinator sees it.
using worker_agent_actor
    = caf::typed_actor<caf::reacts_to<lease_atom, lease_batch>,
                       caf::reacts_to<cancel_atom, std::string, uint32_t>,
                       caf::reacts_to<abandon_atom, std::string, uint32_t>>;

/// The coordinator's side of one worker node's connection.
using node_link_actor = caf::typed_actor<
    caf::replies_to<heartbeat_atom, heartbeat>::with<coordinator_reply>,
    caf::replies_to<report_atom, progress_batch,
                    completion_batch>::with<coordinator_reply>,
    caf::replies_to<take_atom, std::string, uint32_t, uint32_t>::with<uint32_t,
                                                                      int64_t>>;

/// The coordinator's cluster port (frozen; see above).
using cluster_endpoint_actor = caf::typed_actor<
    caf::replies_to<hello_atom, register_worker>::with<coordinator_reply>,
    caf::replies_to<join_atom, register_worker, worker_agent_actor>::with<
        coordinator_reply, node_link_actor>,
    caf::replies_to<join_atom, register_worker>::with<coordinator_reply,
                                                      caf::actor>>;

} // namespace drover
