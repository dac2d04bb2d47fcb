#pragma once

// The progress publisher: fans progress of running jobs out to subscribers
// (SSE streams, WebSockets, the C++ client, examples), coalescing chatty
// handlers and computing an ETA from the observed rate.
//
// Protocol:
//   (publish_atom, progress_update)      job supervisor -> publisher.
//        One report of a running attempt (`stages` = full stage list when
//        it changed, empty = unchanged). Reports from an attempt older than
//        the newest seen for that job are dropped (fencing). While a final
//        record is retained, reports of its attempt (or older) are dropped
//        too; a newer attempt (redrive) discards the retained final.
//   (final_atom, job_record)             job supervisor -> publisher.
//        The job reached a terminal state. Pending coalesced progress is
//        flushed first, then every subscriber gets the final record and its
//        subscription ends. The final record is remembered for a while so a
//        late subscriber still gets it. Everything else known about the
//        job is released at once.
//   (subscribe_atom, job_id, subscriber) -> ok_atom
//        Subscribes `subscriber` (monitored; dropped when it dies). If the
//        job has progress already, the latest update is sent at once; if it
//        finished recently, the final record is sent at once (and no
//        subscription is kept). Subscribing again is harmless: nobody gets
//        the same update twice. A null subscriber is refused with
//        errc::invalid_value.
//   (subscribe_atom, job_id, subscriber, changed_atom) -> ok_atom
//        The same, and the subscriber also gets (changed_atom, job_id)
//        whenever the job's audit log gains a transition that is not
//        terminal (event streams read the log then, so a job without
//        progress reports still shows `started` at once).
//   (changed_atom, job_id)               job supervisor / queue -> publisher.
//        Forwarded to the job's subscribers that asked for it. A retained
//        final record of the job is discarded (the queue sends this after
//        a redrive: the job runs again), so later subscribers are not told
//        it has finished.
//   (unsubscribe_atom, job_id, subscriber)
//        Ends the subscription; unknown pairs are ignored.
//   (watch_finals_atom, watcher)         -> ok_atom
//        From now on `watcher` (monitored; dropped when it dies) gets every
//        final record the publisher receives, of every job, as
//        (final_atom, job_record) — the webhook dispatcher's feed. Finals
//        received before the call are not replayed (a watcher that must
//        not miss any reads the store after registering). Watching again
//        is harmless. A watcher that also subscribes to a job gets that
//        job's final twice. A null watcher is refused with
//        errc::invalid_value.
//   (get_atom, job_id)                   -> progress_update
//        The latest accepted update of a running job, as a new subscriber's
//        snapshot would have it (`eta_ms` from its `at_ms`, full stages);
//        an update with an empty job_id when the publisher knows no
//        progress of the job. The node API overlays it on a job record, so
//        a plain GET shows what a stream shows.
//
// Subscribers receive:
//   (progress_atom, progress_update)  at most one per job per coalescing
//        interval (the latest wins; no update is delayed by more than one
//        interval), with `eta_ms` filled in (-1 while unknown) and `stages`
//        always the full current list. The snapshot a new subscriber gets
//        at once does not count against that. `checkpoint` is always empty:
//        checkpoints are for the store, not for subscribers.
//   (final_atom, job_record)          exactly once per terminal state.

#include "runtime/atoms.hpp"
#include "runtime/model.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <chrono>
#include <cstddef>
#include <string>

namespace drover {

using progress_actor = caf::typed_actor<
    caf::reacts_to<publish_atom, progress_update>,
    caf::reacts_to<final_atom, job_record>,
    caf::replies_to<subscribe_atom, std::string, caf::actor>::with<ok_atom>,
    caf::replies_to<subscribe_atom, std::string, caf::actor,
                    changed_atom>::with<ok_atom>,
    caf::reacts_to<changed_atom, std::string>,
    caf::reacts_to<unsubscribe_atom, std::string, caf::actor>,
    caf::replies_to<watch_finals_atom, caf::actor>::with<ok_atom>,
    caf::replies_to<get_atom, std::string>::with<progress_update>>;

struct progress_options {
  /// Minimum spacing of updates per job towards subscribers; 0 = none.
  std::chrono::milliseconds coalesce_interval{100};
  /// How long a final record is kept for late subscribers; 0 = not kept.
  std::chrono::milliseconds final_retention{60000};
  /// Upper bound on remembered final records (oldest dropped first); 0 =
  /// none kept.
  size_t max_retained_finals = 10000;
};

progress_actor spawn_progress_publisher(caf::actor_system& sys,
                                        progress_options options = {});

/// ETA from observed progress: given the first and the latest sample of an
/// attempt (percent, Unix ms), the remaining milliseconds (from
/// `latest_at_ms`) at the observed average rate. 0 once `latest_percent`
/// reaches 100; -1 when unknown: no forward movement, time not moving
/// forward, non-finite input, or a result beyond int64.
int64_t estimate_eta_ms(double first_percent, int64_t first_at_ms,
                        double latest_percent, int64_t latest_at_ms);

} // namespace drover
