#pragma once

// Message tags shared by Drover's actors. CAF 0.17 atoms: at most 10 chars.

#include <caf/atom.hpp>

namespace drover {

/// Ask an actor to describe itself (supervisors answer with a tree_node).
using describe_atom = caf::atom_constant<caf::atom("describe")>;

/// Ask for an orderly stop (a gate: refuse new work, finish what runs).
using stop_atom = caf::atom_constant<caf::atom("stop")>;

/// Liveness probe; the answer is `ok_atom`.
using ping_atom = caf::atom_constant<caf::atom("ping")>;

using ok_atom = caf::atom_constant<caf::atom("ok")>;

// -- jobs -------------------------------------------------------------------

using submit_atom = caf::atom_constant<caf::atom("submit")>;
using append_atom = caf::atom_constant<caf::atom("append")>;
using get_atom = caf::atom_constant<caf::atom("get_job")>;
using events_atom = caf::atom_constant<caf::atom("events")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using cancel_atom = caf::atom_constant<caf::atom("cancel")>;
using redrive_atom = caf::atom_constant<caf::atom("redrive")>;
using purge_atom = caf::atom_constant<caf::atom("purge")>;
using stats_atom = caf::atom_constant<caf::atom("stats")>;
/// Rate limiters and circuit breakers: their state (queue) and their
/// control log (store).
using flow_atom = caf::atom_constant<caf::atom("flow")>;
using control_atom = caf::atom_constant<caf::atom("control")>;
/// Store: the control-log entries a coordinator sharing the partitions
/// follows (run-time settings, breaker openings), after a sequence.
using follow_atom = caf::atom_constant<caf::atom("follow")>;
/// Store: every key's last run-time setting in the control log.
using configured_atom = caf::atom_constant<caf::atom("configured")>;
/// Store: permits of a job type's concurrency limit across coordinators.
using permit_atom = caf::atom_constant<caf::atom("permit")>;
using all_atom = caf::atom_constant<caf::atom("all")>;
/// Store: a partition's non-terminal jobs, for a queue rebuilding its
/// state.
using recover_atom = caf::atom_constant<caf::atom("recover")>;
/// Store: terminal jobs that still owe a webhook, for a webhook
/// dispatcher resuming its deliveries.
using webhooks_atom = caf::atom_constant<caf::atom("webhooks")>;
/// The partitions of the job space an actor handles (partition leases,
/// runtime/pg_lease.hpp): the store's write fence, the queue's jobs.
using partitions_atom = caf::atom_constant<caf::atom("partitions")>;

// -- progress ---------------------------------------------------------------

/// Job supervisor -> publisher: a progress report of a running attempt.
using publish_atom = caf::atom_constant<caf::atom("publish")>;
/// Publisher -> subscriber: a (coalesced) progress update.
using progress_atom = caf::atom_constant<caf::atom("progress")>;
/// Job supervisor -> publisher, publisher -> subscriber: terminal state.
using final_atom = caf::atom_constant<caf::atom("final")>;
/// Job supervisor -> publisher -> subscribers that asked for it: the job's
/// audit log has a new transition (started, retry scheduled, cancel
/// requested).
using changed_atom = caf::atom_constant<caf::atom("changed")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using unsubscribe_atom = caf::atom_constant<caf::atom("unsubscr")>;
/// Publisher: send every job's final record to this actor (the webhook
/// dispatcher), not one job's.
using watch_finals_atom = caf::atom_constant<caf::atom("watchfinal")>;

// -- workers ----------------------------------------------------------------

/// Worker -> queue: ready for one attempt of the given resource class.
using ready_atom = caf::atom_constant<caf::atom("ready")>;
/// Job supervisor -> worker: run this lease.
using run_atom = caf::atom_constant<caf::atom("run")>;
/// Worker -> job supervisor: the attempt ended.
using done_atom = caf::atom_constant<caf::atom("done")>;
/// Worker -> job supervisor: a checkpoint to persist.
using checkpoint_atom = caf::atom_constant<caf::atom("checkpt")>;

} // namespace drover

namespace drover {

/// Job supervisor -> queue: the job waits for a retry (carries the record).
using retry_atom = caf::atom_constant<caf::atom("retry")>;
/// Job supervisor -> queue: the job supervisor is done with its job.
using finished_atom = caf::atom_constant<caf::atom("finished")>;
/// Job supervisor -> worker: stop waiting for this attempt (forced stop).
using abandon_atom = caf::atom_constant<caf::atom("abandon")>;
/// Job supervisor -> worker: the job's partition went to another
/// coordinator; a worker node's slot keeps the attempt running for the new
/// owner to adopt (a local worker stops it, as abandon_atom).
using handover_atom = caf::atom_constant<caf::atom("handover")>;
/// Worker node: an agent took over an attempt another agent lent (its
/// coordinator handed the partition over); the lender's timer for it.
using lent_atom = caf::atom_constant<caf::atom("lent")>;

// -- cluster (actors/cluster_protocol.hpp) ----------------------------------

/// Joining node -> coordinator: protocol versions, asks for a challenge.
using hello_atom = caf::atom_constant<caf::atom("hello")>;
/// Joining node -> coordinator: the proof, capacity, running attempts.
using join_atom = caf::atom_constant<caf::atom("join")>;
/// Worker node -> its link: liveness, renews the leases it lists.
using heartbeat_atom = caf::atom_constant<caf::atom("heartbeat")>;
/// Worker node -> its link: progress, checkpoints and completions.
using report_atom = caf::atom_constant<caf::atom("report")>;
/// Link -> worker node: a batch of leases.
using lease_atom = caf::atom_constant<caf::atom("lease")>;
/// Link -> job supervisor: the attempt's lease lapsed.
using expired_atom = caf::atom_constant<caf::atom("expired")>;
/// Link -> queue: take over an attempt a worker still runs (restart).
using adopt_atom = caf::atom_constant<caf::atom("adopt")>;
/// Link -> queue: forget an idle slot (a buffer credit withdrawn); the
/// reply says whether it was still idle (else a job is on its way to it).
using withdraw_atom = caf::atom_constant<caf::atom("withdraw")>;
/// Node link -> queue: a slot let go of its attempt without offering
/// itself again (its pool amounts come back).
using let_go_atom = caf::atom_constant<caf::atom("let_go")>;
/// Running attempt -> its worker -> (its node's link ->) queue: tokens of
/// the job's rate limit, mid-attempt (task_context::take_tokens).
using take_atom = caf::atom_constant<caf::atom("take")>;
/// Admin: the connected nodes.
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;

} // namespace drover
