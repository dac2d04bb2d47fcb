#pragma once

// The worker node's agent (docs/cluster.md): connects this node to its
// coordinator, receives lease batches and runs them on the node's local
// workers (actors/worker.hpp, one per slot), and sends back, batched, what
// the attempts report. To its workers the agent is their home
// (worker_home_actor: they say they are idle and take tokens there) and
// the owner of the attempts it runs on them (attempt_owner_actor: their
// reports come here); see actors/attempt_protocol.hpp.
//
// - Joining: hello (protocol range) -> challenge -> join with the HMAC
//   proof, its slots per resource class, its job types and the attempts
//   it is running. A refusal (wrong secret, incompatible protocol) is
//   final: `on_fatal` is called with the coordinator's reason.
// - Connection loss: running attempts keep running; the agent reconnects
//   with jittered backoff and lists them in its join. Whether they survive
//   is the coordinator's call (their leases); superseded ones are stopped:
//   cooperative cancel, then abandoned after `supersede_grace` (exec kills
//   the process group).
// - Outbox: progress is coalesced (newest per attempt), checkpoints and
//   outcomes are kept in order; one report is in flight at a time, and an
//   outcome stays in the outbox until the coordinator says it is settled.
// - Heartbeat: one per `heartbeat_interval` (the coordinator's), listing
//   every running attempt; at most one in flight.
// - Tokens (task_context::take_tokens): a local worker's take goes to the
//   coordinator's limiter through the link, coalesced per rate-limit key
//   (runtime/token_relay.hpp); without a connection the take waits for
//   one (it asks again), within the handler's own deadline.
// - Drain ((stop_atom), on SIGTERM): no new leases; running attempts
//   finish and their outcomes are settled, then `on_drained`; after
//   `drain_timeout` the rest are cancelled and left to lapse.
// - Figures ((stats_atom) -> worker_figures, runtime/worker_figures.hpp):
//   slots, busy workers and attempts per class, the connection, the
//   outbox and the counters, for the node's metrics endpoint.
// - Going home (`home_probe`, --share-partitions): an agent that failed
//   over to another coordinator than its first tries the first every
//   `home_probe`; once it answers, the agent takes no new leases where it
//   is (it says it drains) and offers each attempt still reporting there
//   to the node's agent joined to that coordinator (a move: the
//   coordinator, which owns their partitions, points the attempt's job
//   supervisor at that agent's slot; actors/queue_partitions.cpp); once
//   nothing reports through it and its outcomes are settled, it joins its
//   first coordinator again. A move nobody takes within lend_deadline is
//   taken back (it reports where it did). Attempts handed over while it
//   is away make it probe at once; from home it offers those nobody
//   claimed to its first coordinator (handover_board::offers).
// - Hand-over (CoordinatorReply.handedOver, --share-partitions): an
//   attempt whose partition its coordinator handed to another keeps
//   running; the agent posts it on the node's handover board and holds its
//   reports; the node's other agents offer it to their coordinators
//   (Heartbeat.offered) and the one whose coordinator adopts it claims it:
//   its reports go there from then on, the worker stays on this agent's
//   slot (listed in Heartbeat.lent until it is free). Nobody claims it
//   within two lease TTLs, four heartbeats and a second: it is stopped (the new
//   owner runs the job again after its adoption grace). An attempt re-reported
//   after a failover to a coordinator that waited for its partition in vain
//   (another survivor took it, or nobody has yet;
//   CoordinatorReply.ownedElsewhere) is offered the same way, for three
//   heartbeats and a second. A failed-over agent whose first coordinator
//   is back goes home past lent attempts another agent claimed.

#include "actors/attempt_protocol.hpp"
#include "actors/handover_board.hpp"
#include "runtime/backoff.hpp"
#include "runtime/cluster_protocol.hpp"
#include "runtime/config.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/tree.hpp"
#include "runtime/worker_figures.hpp"

#include <caf/fwd.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace drover {

namespace agent_timers {
/// The agent's own timers (sent to itself).
using connect_atom = caf::atom_constant<caf::atom("wa_connect")>;
using beat_atom = caf::atom_constant<caf::atom("wa_beat")>;
using force_atom = caf::atom_constant<caf::atom("wa_force")>;
using deadline_atom = caf::atom_constant<caf::atom("wa_drained")>;
using home_atom = caf::atom_constant<caf::atom("wa_home")>;
} // namespace agent_timers

using worker_agent_local = worker_agent_actor::extend<
    // local workers -> agent: their home (ready; take, tokens of a running
    // job's rate limit, runtime/token_relay.hpp) and their attempts' owner
    // (progress, checkpoint, done); worker_home_actor and
    // attempt_owner_actor are subsets of this interface
    caf::reacts_to<ready_atom, std::string, std::string, local_worker_actor>,
    caf::reacts_to<progress_atom, progress_update>,
    caf::reacts_to<checkpoint_atom, std::string, uint32_t, std::string>,
    caf::reacts_to<done_atom, completion>,
    caf::replies_to<take_atom, std::string, worker_actor,
                    uint32_t>::with<uint32_t, int64_t>,
    // the node: drain, and its figures for the metrics endpoint
    caf::reacts_to<stop_atom>, caf::replies_to<describe_atom>::with<tree_node>,
    caf::replies_to<stats_atom>::with<worker_figures>,
    // timers
    caf::reacts_to<agent_timers::connect_atom>,
    caf::reacts_to<agent_timers::beat_atom>,
    caf::reacts_to<agent_timers::force_atom, std::string, uint32_t>,
    caf::reacts_to<agent_timers::deadline_atom>,
    caf::reacts_to<agent_timers::home_atom, uint64_t>,
    // another agent of the node took over an attempt this one lent (its
    // coordinator handed the partition over), and the lender's deadline
    // for it (actors/handover_board.hpp)
    caf::reacts_to<lent_atom, std::string, uint32_t, attempt_owner_actor,
                   worker_home_actor>,
    caf::reacts_to<lent_atom, std::string, uint32_t>>;

struct worker_agent_config {
  std::string node_id;
  /// The coordinators' cluster ports (the active one and its standbys),
  /// not empty: each connection attempt tries the next one after a
  /// failure, and a lost connection is tried again where it was first.
  std::vector<coordinator_address> coordinators;
  /// Empty = join without a proof (a development coordinator).
  std::string join_secret;
  /// Connect through CAF's OpenSSL module (mutual TLS; the actor system
  /// must have it loaded and configured).
  bool tls = false;
  std::map<std::string, uint32_t> slots;
  std::vector<std::string> job_types;
  /// Leases per class buffered beyond the slots.
  uint32_t prefetch = 0;
  /// Resource pools its attempts draw from (runtime/resources.hpp).
  std::map<std::string, uint32_t> resources;
  /// Elastic mode (node_config::elastic_slots, elastic_idle).
  std::map<std::string, uint32_t> elastic_slots;
  std::chrono::milliseconds elastic_idle{30000};
  uint32_t protocol_min = cluster_protocol_min;
  uint32_t protocol_max = cluster_protocol_max;
  std::chrono::milliseconds drain_timeout{30000};
  std::chrono::milliseconds supersede_grace{5000};
  /// 0 = stay on the coordinator it joined. Else, joined to any but the
  /// first of `coordinators`, try the first this often and go back to it
  /// (see "Going home" above).
  std::chrono::milliseconds home_probe{0};
  std::function<int64_t()> clock_ms;
  /// Counters that outlive a restarted agent (the node owns them); null =
  /// the agent's own.
  std::shared_ptr<worker_counters> counters;
  /// The newest partition epoch each lease was stamped with, shared by the
  /// node's agents; null = the agent's own.
  std::shared_ptr<partition_epochs> epochs;
  /// Attempts handed over by one agent's coordinator, offered by the
  /// others (actors/handover_board.hpp), shared by the node's agents; null
  /// = the agent's own.
  std::shared_ptr<handover_board> handovers;
  /// The coordinator refused this node for good (wrong secret, protocol).
  std::function<void(const std::string&)> on_fatal;
  /// The drain is over.
  std::function<void()> on_drained;
};

worker_agent_local spawn_worker_agent(caf::actor_system& sys,
                                      worker_agent_config cfg);

} // namespace drover
