#pragma once

// The job state machine. A job's state is exactly what replaying its events
// through `apply` produces; every store validates appends with it, so an
// illegal transition, a gap in the sequence or an event from a superseded
// attempt (fencing) is refused before it is written.
//
//   submitted        -> queued (or scheduled when run_at is in the future)
//   scheduled/queued -> scheduled (run_at moved)
//   scheduled, retrying -> queued      (due)
//   queued           -> processing     (started, attempt = previous + 1)
//   processing       -> processing     (progressed, checkpointed,
//                                       lease_expired, worker_lost: same
//                                       attempt only)
//   processing       -> retrying       (retry_scheduled)
//   processing       -> completed      (completed)
//   processing       -> failed         (failed)
//   failed           -> failed         (dead_lettered: enters the DLQ;
//                                       purged: leaves it)
//   failed in DLQ    -> queued         (redriven: retry budget reset)
//   any non-terminal -> same           (cancel_requested)
//   any non-terminal -> cancelled      (cancelled)
//   any              -> same           (webhook_attempted: a webhook
//                                       delivery attempt; see below)
//   any              -> same           (report_rejected: a superseded
//                                       attempt's late report, refused)
//
// Lost attempts: lease_expired and worker_lost count the attempt in
// `lost_count` once; the retry_scheduled that follows for that attempt
// does not count against max_attempts (runtime/retry.hpp caps lost ones).
//
// completed and cancelled never change; failed changes only through the
// dead-letter queue (dead_lettered, redriven, purged).
//
// Webhooks: a terminal event (completed, failed, cancelled) of a job with a
// callback URL sets `webhook_pending_sequence` to its own sequence (the
// webhook owed); a webhook_attempted event with a final outcome for that
// terminal event clears it, and so does a redrive. webhook_attempted
// changes nothing else, whatever the status: the status stays, and so
// does whether the job is terminal.

#include "runtime/model.hpp"

#include <caf/error.hpp>

#include <vector>

namespace drover {

/// Applies `ev` to `rec`. `ev.sequence` must be `rec.sequence + 1` (1 for
/// `submitted` on an empty record). On error `rec` is unchanged and the
/// error (`errc::invalid_value`) says which rule the event broke.
caf::error apply(job_record& rec, const job_event& ev);

/// Replays a job's events from scratch.
caf::expected<job_record> replay(const std::vector<job_event>& events);

} // namespace drover
