#pragma once

// The job supervisor's state and the functions its behaviour
// (actors/job_supervisor.cpp: loading, starting or adopting the attempt,
// relaying its reports) is made of, with actors/job_supervisor_outcome.cpp
// (deciding and recording what follows the attempt). Internal: the
// contract is actors/job_supervisor.hpp.

#include "actors/job_supervisor.hpp"

#include "runtime/backoff.hpp"
#include "runtime/log.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <optional>
#include <random>
#include <string>
#include <vector>

namespace drover::js_detail {

using timeout_atom = caf::atom_constant<caf::atom("js_timeout")>;
using grace_atom = caf::atom_constant<caf::atom("js_grace")>;
using persist_atom = caf::atom_constant<caf::atom("js_persist")>;
using outcome_atom = caf::atom_constant<caf::atom("js_outcome")>;

/// The job supervisor's own interface: its public one plus its timers.
/// Only its own files see it; everyone else holds a job_supervisor_actor
/// (the queue a queued_job_actor).
using js_impl_actor
    = queued_job_actor::extend<caf::reacts_to<timeout_atom, uint32_t>,
                               caf::reacts_to<grace_atom, uint32_t>,
                               caf::reacts_to<persist_atom>,
                               caf::reacts_to<outcome_atom>>;

// Store requests carry no timeout. The store answers every request: its
// own I/O has a deadline (pg_store_config::io_timeout) that turns a hung
// database into an error reply. What could leave a request unanswered is
// the store dying with it, and the supervisor monitors the store for that.
// A timeout per request cost one entry in CAF's clock each (the clock
// thread took 10 % of the process's CPU in a D2 drain; docs/benchmarks.md),
// and CAF 0.17 keeps an answered request's entry until its deadline.
constexpr auto store_timeout = caf::infinite;

/// Writing an attempt's outcome again while the store is unavailable.
const backoff_schedule outcome_backoff{
    std::chrono::milliseconds{100}, std::chrono::milliseconds{5000}, 2.0, 0.5};

enum class phase {
  loading,  ///< reading the record
  starting, ///< `started` being appended
  running,  ///< the worker runs the attempt
  stopping, ///< cancel or timeout signalled; waiting for the end or grace
  finishing ///< outcome being written; everything else is ignored
};

struct js_state {
  job_supervisor_config cfg;
  job_record rec;
  const registered_handler* handler = nullptr;
  uint32_t attempt = 0;
  phase current = phase::loading;
  bool cancel_requested = false;
  /// Its `cancel_requested` event is written (or being written, by the
  /// queue or by this supervisor): not written again.
  bool cancel_recorded = false;
  /// The queue said it recorded it (and may yet say it failed to).
  bool cancel_recorded_by_queue = false;
  /// Who asked and why (from the API); "" = not said.
  std::string cancel_reason;
  bool timed_out = false;
  /// Latest progress not yet persisted, and when progress was last written.
  bool has_pending_progress = false;
  progress_update pending_progress;
  bool persist_armed = false;
  int64_t last_persist_ms = 0;
  /// The outcome being written (phase::finishing) and its status, kept to
  /// write it again while the store is unavailable; the delay before the
  /// next try.
  std::vector<job_event> outcome;
  job_status outcome_status = job_status::queued;
  backoff_counter outcome_retry{outcome_backoff};
  std::minstd_rand rng;
  /// An adopted attempt's outcome that came while the record was still
  /// loading: the node link forwards an outcome as soon as the queue has
  /// given it this supervisor, which may be before the record is read.
  /// Applied once the attempt is adopted.
  std::optional<completion> early_outcome;

  static inline const char* name = "drover.job_supervisor";
};

using self_ptr = js_impl_actor::stateful_pointer<js_state>;

inline int64_t now_ms(self_ptr self) {
  return self->state.cfg.clock_ms();
}

// -- the behaviour (actors/job_supervisor.cpp) -----------------------------

job_event make_event(self_ptr self, event_kind kind);
void log_failure(self_ptr self, const std::string& what, const caf::error& err,
                 log::level lv = log::level::error);

// -- the outcome (actors/job_supervisor_outcome.cpp) -----------------------

/// Tells the queue the job's attempt is over (with its status and error
/// code), drops the monitors and quits.
void finish(self_ptr self, job_status status);
/// Writes st.outcome; on success tells everyone (see conclude).
void write_outcome(self_ptr self);
/// Appends the terminal or retry events, then tells everyone.
void conclude(self_ptr self, std::vector<job_event> events, job_status status);
/// A cancel_requested or cancelled event whose reason is the requester's
/// (when given) after `what` happened ("cancelled while running: user
/// pressed stop").
job_event cancel_event(self_ptr self, event_kind kind, const char* what);
/// The attempt failed with `error` (or was lost: `lost`, see
/// decide_retry): retry or fail for good.
void fail_attempt(self_ptr self, error_info error,
                  std::vector<job_event> events = {}, bool lost = false);
/// The attempt's outcome (from its worker, or forced after the grace).
void on_done(self_ptr self, completion& c);

} // namespace drover::js_detail
