#pragma once

// Exponential backoff with jitter: the one formula every retry loop in
// Drover uses (job retries, supervisor restarts, webhook deliveries,
// PostgreSQL reconnects, the queue's and the webhook dispatcher's store
// retries). Pure arithmetic; the caller brings the random draw, so tests can
// pin it and actors can draw from their own seeded generators.
//
// The formula, for the n-th consecutive failure (n = 0 for the first):
//
//   base(n) = min(max, initial * multiplier^n)
//   window  = [base * (1 - jitter), base]
//
// and the delay is drawn uniformly from the window. When the window would
// start below `floor`, it keeps its width (jitter * base) and moves up to
// start at `floor` (its top still capped at `max`), so a floor never turns
// the first retries into one fixed delay for every client. Hence:
//
//   - every delay is within [floor, max] (and within [0, max] without one);
//   - both ends of the window grow monotonically with n and stop at max;
//   - no overflow for any n: the exponent is capped, and the result is
//     computed in double and clamped before it becomes an integer.

#include <chrono>
#include <cstdint>
#include <utility>

namespace drover {

struct backoff_schedule {
  /// base(0); clamped into [0, max].
  std::chrono::milliseconds initial{100};
  /// Largest delay ever returned; negative counts as 0.
  std::chrono::milliseconds max{5000};
  /// Growth per failure; below 1 (or not finite) counts as 1.
  double multiplier = 2.0;
  /// Fraction of base(n) that is randomised, in [0, 1] (clamped; NaN = 0).
  /// 0.5 is "equal jitter"; 1 is "full jitter".
  double jitter = 0.5;
  /// Lowest delay ever returned (clamped into [0, max]).
  std::chrono::milliseconds floor{0};

  /// The window delay(n, u) draws from, in whole milliseconds:
  /// first <= second, both within [floor, max].
  std::pair<std::chrono::milliseconds, std::chrono::milliseconds>
  window(uint32_t failures) const;

  /// The delay after `failures` consecutive failures (0 = the first).
  /// `uniform01` in [0, 1] (clamped) is how far down from the top of the
  /// window the delay lies: 0 = no jitter taken off, 1 = all of it.
  std::chrono::milliseconds delay(uint32_t failures, double uniform01) const;
};

/// A uniform draw in [0, 1) from a per-thread generator seeded from
/// std::random_device: for retry loops that keep no generator of their own.
/// Thread-safe (each thread has its own state).
double jitter_draw();

/// The state of one retry loop: consecutive failures so far. Not
/// thread-safe; an actor keeps one in its state.
class backoff_counter {
public:
  explicit backoff_counter(backoff_schedule schedule) : schedule_(schedule) {}

  /// The delay before the next try; counts one more failure.
  std::chrono::milliseconds next() {
    return next(jitter_draw());
  }

  std::chrono::milliseconds next(double uniform01) {
    auto d = schedule_.delay(failures_, uniform01);
    if (failures_ < UINT32_MAX)
      ++failures_;
    return d;
  }

  /// A success: the next failure starts again from `initial`.
  void reset() {
    failures_ = 0;
  }

  uint32_t failures() const {
    return failures_;
  }

  const backoff_schedule& schedule() const {
    return schedule_;
  }

private:
  backoff_schedule schedule_;
  uint32_t failures_ = 0;
};

} // namespace drover
