#pragma once

// The coordinator's side of one worker node (docs/cluster.md).
//
// A node link is created when a worker node joins and lives until the node
// is gone for good (disconnected and every lease lapsed). To the queue it
// looks like ordinary workers: one small slot actor per slot the node
// registered (a worker_actor, actors/attempt_protocol.hpp), each announced
// with (ready_atom, class, worker_id, slot, job_types, pools) and receiving
// (run_atom, lease, job_supervisor), (cancel_atom, ...), (abandon_atom, ...)
// exactly as a local worker does, so the job supervisor owns the attempt
// whether it runs here or elsewhere.
// The link batches what the slots are handed into lease batches to the
// worker node, relays the node's batched reports to the job supervisors,
// and keeps every attempt's lease:
//
// - a lease lasts `lease_ttl` from its last renewal; one heartbeat per
//   node renews every attempt it lists;
// - a lapsed lease is reclaimed: the job supervisor is told
//   (expired_atom), records `lease_expired` and runs the job again (not
//   counted against max_attempts); the attempt is superseded;
// - anything a superseded attempt reports later (progress, checkpoint,
//   outcome) is refused and recorded once as `report_rejected`, never
//   applied, and the worker is told to stop it (cooperative cancel, then
//   abandon);
// - a completion is forwarded to its job supervisor and acknowledged to the
//   worker ("settled") once that supervisor has finished, i.e. once the
//   outcome is committed or refused for good.
// Credits: a slot is announced to the queue only while it is free on the
// worker node, so the link never has more leases outstanding on a node
// than the node has slots.

#include "actors/attempt_protocol.hpp"
#include "actors/job_system.hpp"
#include "runtime/cluster_protocol.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/tree.hpp"

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>

namespace drover {

namespace link_timers {
using tick_atom = caf::atom_constant<caf::atom("nl_tick")>;
using flush_atom = caf::atom_constant<caf::atom("nl_flush")>;
} // namespace link_timers

/// Local messages (the endpoint and the slot actors) on top of the
/// node-facing interface.
using node_link_local = node_link_actor::extend<
    // slot -> link
    caf::reacts_to<run_atom, uint32_t, lease, job_supervisor_actor>,
    caf::reacts_to<cancel_atom, uint32_t, std::string, uint32_t>,
    caf::reacts_to<abandon_atom, uint32_t, std::string, uint32_t>,
    caf::reacts_to<handover_atom, uint32_t, std::string, uint32_t>,
    // endpoint -> link: the node joined (first time or again); running
    // attempts it lists are kept (renewed), adopted from the queue after a
    // coordinator restart, or superseded
    caf::replies_to<join_atom, register_worker,
                    worker_agent_actor>::with<coordinator_reply>,
    // admin: the subtree, and the node as the node list shows it (JSON)
    caf::replies_to<describe_atom>::with<tree_node>,
    caf::replies_to<nodes_atom>::with<std::string>,
    // timers: lease checks, batching
    caf::reacts_to<link_timers::tick_atom>,
    caf::reacts_to<link_timers::flush_atom>>;

struct node_link_config {
  std::string node_id;
  std::string coordinator_id;
  register_worker registration;
  worker_agent_actor agent;
  std::shared_ptr<job_system_handles> handles;
  /// The partition epochs leases are stamped with; null = none.
  std::shared_ptr<const partition_epochs> epochs;
  std::chrono::milliseconds lease_ttl{2000};
  /// Per job type; others use lease_ttl.
  std::map<std::string, std::chrono::milliseconds> lease_ttl_by_type;
  std::chrono::milliseconds heartbeat_interval{500};
  /// How long it waits for the queue to adopt an attempt a node reports
  /// before it gives up and stops the attempt: 30 s, or longer than the
  /// queue may keep the adoption waiting for its partition.
  std::chrono::milliseconds adoption_wait{30000};
  std::function<int64_t()> clock_ms;
};

node_link_local spawn_node_link(caf::actor_system& sys, node_link_config cfg);

} // namespace drover
