#pragma once

// Scaling signals (issue 15 item 6, docs/api.md "Metrics"): per resource
// class and job type, how fast jobs arrive and complete, how long attempts
// take, and the slots that would keep up. The queue keeps them
// (actors/queue_admin.cpp, figures_by_type); the admin API, droverctl
// queues and /metrics show them.
//
// Rates decay exponentially with a time constant of one minute: a burst of
// N jobs reads as N/60 per second at once, then fades; a steady rate r
// reads as r after a few minutes.
//
// Recommended slots for a class and type, with T its mean attempt run
// time (seconds, exponentially weighted over recent attempts):
//   ceil(1.25 * arrivals_per_second * T + ready * T / 60)
// that is, enough to keep up with arrivals with a quarter to spare, plus
// enough to drain what is waiting within a minute; at least 1 while jobs
// wait or run (0 when nothing arrives, waits or runs). Before any attempt
// has ended T is unknown and the
// recommendation is ready + running (start everything). Capped at
// 1,000,000.

#include <cstdint>

namespace drover {

/// Events per second, decaying with a one-minute time constant.
class decaying_rate {
public:
  /// `n` events at `now_ms` (Unix ms; a time before the last is taken as
  /// the last).
  void add(int64_t now_ms, double n = 1);

  /// The rate at `now_ms`.
  double per_second(int64_t now_ms) const;

  static constexpr double tau_ms = 60000;

private:
  double value_ = 0; // per second, as of at_ms_
  int64_t at_ms_ = 0;
};

/// Exponentially weighted mean of attempt run times (ms; 0 = none yet).
class run_time_mean {
public:
  void observe(int64_t ms);
  double ms() const {
    return mean_;
  }
  /// Whether an attempt ended yet.
  bool measured() const {
    return seen_;
  }

private:
  double mean_ = 0;
  bool seen_ = false;
};

/// See above; `mean_run_ms` < 0: no attempt ended yet.
uint64_t recommended_slots(double arrivals_per_second, double mean_run_ms,
                           uint64_t ready, uint64_t running);

} // namespace drover
