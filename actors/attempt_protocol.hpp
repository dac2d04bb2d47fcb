#pragma once

// The typed interfaces of the parties to one attempt, in one header because
// they name each other: a job supervisor hands itself to a worker, a worker
// hands itself to its home.
//
//   queue ── spawns ──> job supervisor ── (run, lease, self) ──> worker
//     ^                   ^                                        │
//     └─ ready / take ────┼──────────── (the worker's home) ───────┤
//                         └─────── progress, checkpoint, done ─────┘
//
// A "worker" is either a local worker (actors/worker.hpp) or, on a
// coordinator, the node link's actor for one slot of a worker node
// (actors/node_link.hpp); the job supervisor cannot tell them apart. On a
// worker node the local workers' home is the node's agent
// (actors/worker_agent.hpp), which also owns the attempts it runs on them.
// The protocols themselves are described in actors/worker.hpp and
// actors/job_supervisor.hpp.
//
// None of these handles crosses the network: the node protocol
// (runtime/cluster_protocol.hpp) carries leases and reports, not workers or
// job supervisors.

#include "runtime/atoms.hpp"
#include "runtime/model.hpp"

#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>

namespace drover {

/// Where a running attempt's reports go: its job supervisor, or on a worker
/// node the agent that runs leases on its local workers.
using attempt_owner_actor = caf::typed_actor<
    caf::reacts_to<progress_atom, progress_update>,
    caf::reacts_to<checkpoint_atom, std::string, uint32_t, std::string>,
    caf::reacts_to<done_atom, completion>>;

/// A job supervisor: the owner of an attempt, which also takes the queue's
/// cancel (with its reason, and whether the queue recorded the request)
/// and partition hand-over, and a node link's
/// report that the attempt's lease lapsed.
using job_supervisor_actor = attempt_owner_actor::extend<
    caf::reacts_to<cancel_atom, std::string, bool>,
    caf::reacts_to<expired_atom, std::string, uint32_t>,
    caf::reacts_to<partitions_atom>>;

/// What a job supervisor (and the queue, for a supervisor that is gone)
/// sends a worker: a local worker or a worker node's slot.
using worker_actor
    = caf::typed_actor<caf::reacts_to<run_atom, lease, job_supervisor_actor>,
                       caf::reacts_to<cancel_atom, std::string, uint32_t>,
                       caf::reacts_to<abandon_atom, std::string, uint32_t>,
                       caf::reacts_to<handover_atom, std::string, uint32_t>>;

/// A worker of this process: it also runs an attempt for an owner that only
/// takes its reports (a worker node's agent, which relays them).
using local_worker_actor = worker_actor::extend<
    caf::reacts_to<run_atom, lease, attempt_owner_actor>>;

/// A local worker's home: where it says it is idle (naming itself with the
/// interface its home may use) and asks for tokens of its running job's
/// rate limit (naming itself as the worker the attempt runs on). The queue,
/// or on a worker node its agent.
using worker_home_actor = caf::typed_actor<
    caf::reacts_to<ready_atom, std::string, std::string, local_worker_actor>,
    caf::replies_to<take_atom, std::string, worker_actor,
                    uint32_t>::with<uint32_t, int64_t>>;

} // namespace drover
