#pragma once

// The job supervisor: one actor per running job, spawned by the queue. It
// owns the attempt — starting it, its timeout, its cancellation, fencing of
// everything the attempt reports — and decides what follows it: completed,
// a retry after backoff, or failed into the dead-letter queue.
//
// Life of one job supervisor:
//   1. reads the job's record from the store; anything but `queued` (e.g.
//      cancelled meanwhile) ends it without starting anything;
//   2. appends `started` (attempt n+1) and sends the lease to its worker,
//      which it monitors;
//   3. relays the attempt's progress to the publisher, persists progress at
//      a bounded rate and every checkpoint at once;
//   4. on the attempt's end (or its timeout, a cancel, the worker's death)
//      appends the outcome's events, tells the queue, publishes the final
//      record on a terminal state, and exits.
// Timeouts and cancellation are cooperative first (the handler's
// `cancelled()` turns true, exec sends SIGTERM), forced after the handler's
// cancel grace: the worker is told to abandon the attempt, whose late
// reports are then fenced off.
//
// Protocol (actors/attempt_protocol.hpp: job_supervisor_actor):
//   (cancel_atom, reason, recorded)        from the queue: cancel the job
//                                          (reason: who asked and why, or "";
//                                          recorded: the queue wrote the
//                                          `cancel_requested` event, or it is
//                                          writing it and tells the
//                                          supervisor again, not recorded, if
//                                          that fails)
//   (partitions_atom)                      from the queue: the job's
//                                          partition went to another
//                                          coordinator; stop without a write
//   (adopt_atom, attempt, worker_id, slot) -> bool
//                                          from the queue: the running
//                                          attempt's reports come through
//                                          another slot of its machine (the
//                                          old one is told `handover`);
//                                          false if it runs no more
//   (progress_atom, progress_update)       from the worker
//   (checkpoint_atom, job_id, attempt, bytes) from the worker
//   (done_atom, completion)                from the worker
//   (expired_atom, job_id, attempt)        from a remote worker's link: the
//                                          attempt's lease lapsed (lost,
//                                          not counted; runs again)
// To the queue (supervisor_queue_actor): (retry_atom, job_record),
// (finished_atom, job_id, status, error code of the attempt or ""), and
// (ready_atom, class, worker_id, worker) for a worker it reserved but never
// leased.
// To the worker (worker_actor): (run_atom, lease, self),
// (cancel_atom, job_id, attempt), (abandon_atom, job_id, attempt).

#include "actors/attempt_protocol.hpp"
#include "actors/progress_publisher.hpp"
#include "actors/store.hpp"
#include "runtime/task.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace drover {

/// The queue as its job supervisors see it (a subset of the queue's own
/// interface, actors/detail/queue_state.hpp): a worker given back, a retry,
/// the end of the supervisor's job.
using supervisor_queue_actor = caf::typed_actor<
    caf::reacts_to<ready_atom, std::string, std::string, worker_actor>,
    caf::reacts_to<retry_atom, job_record>,
    caf::reacts_to<finished_atom, std::string, job_status, std::string>>;

struct job_supervisor_config {
  std::string job_id;
  /// The worker that will run the attempt (idle, reserved by the queue).
  worker_actor worker;
  std::string worker_id;
  supervisor_queue_actor queue;
  store_actor store;
  progress_actor publisher;
  std::shared_ptr<const handler_registry> handlers;
  std::chrono::milliseconds progress_persist_interval{1000};
  std::function<int64_t()> clock_ms;
  /// Seed of the retry jitter.
  uint64_t seed = 1;
  /// Non-zero: adopt this running attempt (a remote worker still runs it
  /// after the coordinator restarted) instead of starting a new one.
  uint32_t adopt_attempt = 0;
};

/// The queue's handle on a job supervisor: job_supervisor_actor and what
/// only the queue asks — that another slot of the attempt's machine takes
/// its reports (see the protocol above).
using queued_job_actor = job_supervisor_actor::extend<caf::replies_to<
    adopt_atom, uint32_t, std::string, worker_actor>::with<bool>>;

queued_job_actor spawn_job_supervisor(caf::actor_system& sys,
                                      job_supervisor_config config);

} // namespace drover
