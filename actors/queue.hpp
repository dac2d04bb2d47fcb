#pragma once

// The queue: a node's job queue and dispatcher (a "queue shard").
//
// It validates submissions, has the store record them, keeps ready jobs in
// priority order with aging, holds scheduled jobs and retries in a timer
// structure, and hands ready jobs to idle workers by spawning one job
// supervisor per running job (actors/job_supervisor.hpp).
//
// A queued job is a record, not an actor: the queue keeps a small entry per
// job (id, priority key); the job's full record lives in the store and is
// read when the job starts.
//
// Priorities and aging: a job of priority p (high = 0, normal = 1, low = 2)
// that became ready at time t is ordered by the key t + p * aging_interval,
// oldest key first. A high job therefore beats a normal one that became
// ready less than one aging interval earlier, but a low job that has waited
// 2 * aging_interval is served before any high job that arrived after it
// had waited that long: a low job's wait is bounded by 2 * aging_interval
// plus the work that was already ahead of it.
//
// Scheduled jobs (run_at, delay) and retries wait in an ordered set keyed by
// their due time; a single timer armed for the earliest one moves due jobs
// to the ready queues. Nothing polls.
//
// Protocol (clients):
//   (submit_atom, submit_request)      -> job_record
//       Validates (errc::invalid_request / too_large, nothing created),
//       has the store commit the `submitted` event, then queues the job.
//       An idempotent duplicate returns the existing job and queues nothing.
//   (submit_atom, std::vector<submit_request>) -> std::vector<job_record>
//       A batch: every valid item goes to the store in one request, which
//       commits them in one transaction. One answer per item, in order: the
//       job's record, or a record with an empty job_id whose `error` says
//       why the item was refused (code = the errc name: invalid_request,
//       too_large, conflict). An error for the whole request (unavailable)
//       means no item was created.
//   (cancel_atom, job_id[, reason])    -> ok_atom
//       Queued, scheduled or retrying jobs end `cancelled` at once; running
//       ones get a cooperative cancel, a grace period, then a forced stop.
//   (redrive_atom, job_id)             -> ok_atom      DLQ: run it again
//   (redrive_atom, all_atom)           -> uint32_t     DLQ: all of them
//   (purge_atom, job_id)               -> ok_atom      DLQ: drop it
//   (purge_atom, all_atom)             -> uint32_t
//   (stats_atom)                       -> queue_stats
//   (describe_atom)                    -> tree_node    running jobs
//   (nodes_atom)                       -> string       JSON array of the
//       ready jobs no connected worker can run, per resource class and
//       job type (and resources a job draws from pools):
//       [{"resource_class", "job_type", "jobs"[, "resources"]}]
//   (nodes_atom, job_spec)            -> string
//       why a queued job of that spec does not run: no connected worker
//       for its class, type and pools, else what holds it back (its
//       concurrency key's slots, its breaker, its rate limit's waiting
//       line); "" = no reason but the queue ahead of it
//   (flow_atom)                        -> string       JSON object: the
//       rate limiters and breakers and the jobs waiting behind each
//       (runtime/flow_control.hpp, flow_control::to_json)
//   (flow_atom, kind, key, spec)       -> string       creates or changes
//       a rate limit ("rate_limit", spec "rate=R[,burst=B][,tenants=..]")
//       or breaker ("breaker", spec as --circuit-breaker's after NAME:) at
//       run time: errc::invalid_request as the configuration would refuse
//       it, errc::conflict past 1,000 keys of its kind; recorded in the control
//       log (state "configured", outliving restarts and takeovers) before it
//       applies; answered with the (flow_atom) object
// Protocol (runtime; the handles are actors/attempt_protocol.hpp's):
//   (ready_atom, resource_class, worker_id, local_worker)  a local worker
//       is idle (worker_home_actor: the queue is its home)
//   (ready_atom, resource_class, worker_id, worker)   a job supervisor
//       gives back the worker it reserved but never leased
//   (ready_atom, resource_class, worker_id, worker, job_types, pools)
//       a remote slot is idle; it runs only these types, and its node has
//       these resource pools ("name=amount,...", runtime/resources.hpp)
//   (ready_atom, ..., pools, true)     -> bool
//       the same, answered with whether the queue handed the slot a job
//       at once (jobs were waiting for it: elastic slots grow on that)
//   (let_go_atom, worker)              a remote slot let go of its attempt
//       but is not offered again (inactive, a closed buffer, draining):
//       the pool amounts it held come back
//   (let_go_atom, job_id, attempt, worker)
//       the worker node running the attempt on `worker` lets its reports
//       go to another agent of its machine (an agent going home): an offer
//       of it from there moves it (adopt)
//   (withdraw_atom, worker)            -> bool   forget that idle worker
//       (it stays known); true if it was idle, false if a job was
//       already handed to it (or it is unknown)
//   (adopt_atom, job_id, attempt, worker_id, slot, deadline_ms,
//    wait_for_owner) -> job_supervisor_actor
//       a worker node still runs an attempt recorded before this
//       coordinator restarted (or took its partition): take it over
//       (actors/node_link.hpp). Not after `deadline_ms` (the monotonic
//       clock: the steady clock's ms, or queue_options::flow_clock_ms;
//       0 = none): the asker has stopped waiting by then,
//       and an attempt adopted behind its back would leave the job
//       processing with nobody to end it (refused, errc::unavailable).
//       An attempt of a partition this coordinator does not own is kept
//       waiting for it (adopt_wait) if `wait_for_owner` — refused
//       errc::not_owner if the wait ends without it (the link has the node
//       offer it to its other coordinators) — else refused at once
//       (errc::stale_attempt: an attempt handed over by another
//       coordinator, offered to every coordinator of its node in each
//       heartbeat). One not waiting to be adopted here: stale_attempt.
//   (take_atom, job_id, worker, wanted) -> (granted, retry_ms)
//       (worker_home_actor; a node link asks in its slot's name)
//       the running attempt of job_id on `worker` takes up to `wanted`
//       tokens of its rate limit (flow_control::take_tokens: at most one
//       block); retry_ms says when to ask again if fewer were granted.
//       errc::stale_attempt if the job does not run on `worker`,
//       errc::invalid_request if it names no rate limit.
//   (adopt_atom, generation)           internal: the adoption timer (an
//                                      adoption grace or wait ended)
//   (partitions_atom, get_atom)        -> (string, int32_t) the partitions
//       it owns now, as "0,5,17" (ascending; "" = none), and how many
//       the database has: a sharing gateway's partition map
//   from job supervisors: see job_supervisor.hpp

#include "actors/attempt_protocol.hpp"
#include "actors/progress_publisher.hpp"
#include "actors/store.hpp"
#include "runtime/admission.hpp"
#include "runtime/atoms.hpp"
#include "runtime/concurrency.hpp"
#include "runtime/flow_control.hpp"
#include "runtime/job_api.hpp"
#include "runtime/submit.hpp"
#include "runtime/task.hpp"
#include "runtime/tree.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>

namespace drover {

using queue_actor = caf::typed_actor<
    caf::replies_to<submit_atom, submit_request>::with<job_record>,
    caf::replies_to<submit_atom,
                    std::vector<submit_request>>::with<std::vector<job_record>>,
    caf::replies_to<cancel_atom, std::string>::with<ok_atom>,
    caf::replies_to<cancel_atom, std::string, std::string>::with<ok_atom>,
    caf::replies_to<redrive_atom, std::string>::with<ok_atom>,
    caf::replies_to<redrive_atom, all_atom>::with<uint32_t>,
    caf::replies_to<purge_atom, std::string>::with<ok_atom>,
    caf::replies_to<purge_atom, all_atom>::with<uint32_t>,
    caf::replies_to<stats_atom>::with<queue_stats>,
    caf::replies_to<describe_atom>::with<tree_node>,
    caf::replies_to<nodes_atom>::with<std::string>,
    caf::replies_to<nodes_atom, job_spec>::with<std::string>,
    caf::replies_to<flow_atom>::with<std::string>,
    caf::replies_to<flow_atom, std::string, std::string,
                    std::string>::with<std::string>,
    caf::reacts_to<ready_atom, std::string, std::string, local_worker_actor>,
    caf::reacts_to<ready_atom, std::string, std::string, worker_actor>,
    caf::reacts_to<ready_atom, std::string, std::string, worker_actor,
                   std::vector<std::string>, std::string>,
    caf::replies_to<ready_atom, std::string, std::string, worker_actor,
                    std::vector<std::string>, std::string, bool>::with<bool>,
    caf::replies_to<withdraw_atom, worker_actor>::with<bool>,
    caf::reacts_to<let_go_atom, worker_actor>,
    caf::reacts_to<let_go_atom, std::string, uint32_t, worker_actor>,
    caf::replies_to<take_atom, std::string, worker_actor,
                    uint32_t>::with<uint32_t, int64_t>,
    caf::replies_to<adopt_atom, std::string, uint32_t, std::string,
                    worker_actor, int64_t, bool>::with<job_supervisor_actor>,
    caf::reacts_to<adopt_atom, uint64_t>,
    caf::replies_to<partitions_atom, std::vector<int32_t>>::with<ok_atom>,
    caf::replies_to<partitions_atom, get_atom>::with<std::string, int32_t>>;

struct queue_options {
  /// See the aging rule above.
  std::chrono::milliseconds aging_interval{10000};
  submit_limits limits;
  /// How often a running job's progress is written to the store (the
  /// publisher sees every coalesced update regardless).
  std::chrono::milliseconds progress_persist_interval{1000};
  /// Unix time in ms. Tests derive it from the actor clock.
  std::function<int64_t()> clock_ms;
  /// Seeds job ids and retry jitter; 0 = random.
  uint64_t seed = 0;
  /// After a restart, how long an attempt that ran on a worker node waits
  /// for its node to report it before it is settled as lost; 0 = at once
  /// (no remote workers).
  std::chrono::milliseconds adopt_grace{0};
  /// Coordinators sharing the partitions: how long an attempt that ran on
  /// a local slot of the partition's last owner waits before it is
  /// settled as lost, time for that owner (alive: it handed the partition
  /// over, or was deposed) to stop it; 0 = at once (a restart: the
  /// process that ran it is gone).
  std::chrono::milliseconds handover_grace{0};
  /// Coordinators sharing the partitions: how long a worker node's report
  /// of a running attempt (adopt_atom) in a partition this coordinator
  /// does not own waits for it: the partition's owner may have died, its
  /// worker nodes come here first, and this coordinator may be the one to
  /// take the partition over (then the attempt is adopted once the
  /// partition is recovered, and runs on). 0 = refused at once.
  std::chrono::milliseconds adopt_wait{0};
  /// The partitions this coordinator owns (ascending) of
  /// `partition_count` (runtime/partition.hpp): new jobs go into them. The
  /// default is a store without partitions (memory): everything in 0.
  std::vector<int32_t> partitions{0};
  int32_t partition_count = 1;
  /// Coordinators that share the partitions (runtime/pg_share.hpp): what
  /// the coordinator holds at the moment the queue starts, instead of
  /// `partitions` (a queue started again after a crash). Later changes
  /// come as partitions_atom.
  std::function<std::vector<int32_t>()> owned_now;
  /// Live jobs per recovery page (within [1, max_recovery_page]): dispatch
  /// starts after the first page, and the queue reads the next one while
  /// it runs.
  uint32_t recovery_page = 5000;
  /// Self-fencing: false while this coordinator cannot be sure it still
  /// owns its partitions (pg::lease_keeper::freshness). Dispatch then
  /// waits, checking again every 100 ms. Empty = always true.
  std::function<bool()> may_dispatch;
  /// What submissions are refused (runtime/admission.hpp); none by default.
  admission_limits admission;
  /// Attempts of a job type running at once (runtime/concurrency.hpp);
  /// none by default.
  concurrency_limits concurrency;
  /// Coordinators sharing the partitions: a type's limit holds across all
  /// of them (permits from the store, actors/queue_permits.cpp) instead of
  /// per queue. Needs a store with partition leases.
  bool cluster_type_limits = false;
  /// Rate limiters and circuit breakers (runtime/flow_control.hpp); none
  /// by default.
  flow_limits flow;
  /// Coordinators sharing the partitions: how often the control log is
  /// read for run-time settings (PUT /api/admin/rate-limits/{key}, ...)
  /// made at another coordinator, which then apply here too. 0 = never
  /// (one coordinator: every setting is made at it).
  std::chrono::milliseconds settings_poll{0};
  /// Their clock, ms, monotonic (a step of the wall clock must not stop
  /// dispatch or cut a cooldown short). Empty = std::chrono::steady_clock;
  /// tests derive it from the actor clock.
  std::function<int64_t()> flow_clock_ms;
  /// Fair-share weights of tenants (default 1): within a resource class,
  /// job type and priority, ready jobs are taken in proportion to them
  /// (actors/detail/ready_queue.hpp).
  std::map<std::string, double> tenant_weights;
  /// The resource pools of this node's own workers (--resources,
  /// runtime/resources.hpp); worker nodes declare theirs with each offer.
  std::map<std::string, uint32_t> local_resources;
};

struct queue_deps {
  store_actor store;
  progress_actor publisher;
  std::shared_ptr<const handler_registry> handlers;
};

queue_actor spawn_queue(caf::actor_system& sys, queue_deps deps,
                        queue_options options);

/// Unix milliseconds from the system clock.
int64_t system_clock_ms();

} // namespace drover
