#pragma once

// A worker: one slot of one resource class. It runs one attempt at a time,
// each on a thread of its own (handlers may block for hours; CAF's
// scheduler threads never run them), and relays what the handler reports.
//
// Protocol (actors/attempt_protocol.hpp: local_worker_actor):
//   on start and whenever it is free again: (ready_atom, class, worker_id,
//   self) to its home (the queue, or its node's agent).
//   (run_atom, lease, owner)                 run one attempt; reports go to
//       `owner` (a job supervisor, or its node's agent):
//       (progress_atom, progress_update),
//       (checkpoint_atom, job_id, attempt, bytes), finally
//       (done_atom, completion). A handler that throws fails the attempt
//       (retryable "handler_exception"); an unknown job type fails it for
//       good ("unknown_type").
//   (cancel_atom, job_id, attempt)           cooperative cancel: the
//       handler's `cancelled()` turns true and its cancel callbacks run.
//   (abandon_atom, job_id, attempt)          forced stop: nothing more from
//       this attempt is relayed; the worker stays busy until the handler's
//       thread actually returns, so the slot count never lies.
//   (handover_atom, job_id, attempt)         the job's partition went to
//       another coordinator: as abandon_atom (a coordinator's own worker
//       does not go with the partition; a worker node's slot does, see
//       actors/handover_board.hpp).
// Tokens (task_context::take_tokens): the handler's thread asks its worker,
// which asks its home with (take_atom, job_id, self, wanted) -> (granted,
// retry_ms) and hands the answer to the context. The handler's thread
// reaches its worker through the worker's private interface (worker.cpp),
// as do its progress, checkpoints and outcome.
// If the worker actor dies mid-attempt, the attempt is cancelled (exec
// programs get SIGTERM, then SIGKILL) and its owner sees the death.

#include "actors/attempt_protocol.hpp"
#include "runtime/task.hpp"

#include <caf/fwd.hpp>

#include <functional>
#include <memory>
#include <string>

namespace drover {

struct worker_config {
  std::string worker_id;
  std::string resource_class = "cpu";
  /// Where it says it is idle and asks for tokens (see above).
  worker_home_actor home;
  std::shared_ptr<const handler_registry> handlers;
  /// Unix ms for progress timestamps.
  std::function<int64_t()> clock_ms;
  /// Runs one attempt's body. Default (empty): a thread of its own, taken
  /// from the process-wide thread_cache (runtime/thread_cache.hpp), which
  /// reuses finished attempts' threads. Deterministic tests pass an
  /// executor they drive by hand.
  std::function<void(std::function<void()>)> executor;
};

local_worker_actor spawn_worker(caf::actor_system& sys, worker_config config);

} // namespace drover
