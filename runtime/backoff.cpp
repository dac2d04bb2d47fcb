#include "runtime/backoff.hpp"

#include <algorithm>
#include <cmath>
#include <random>

namespace drover {

namespace {

using std::chrono::milliseconds;

/// The window in double milliseconds, before rounding.
struct raw_window {
  double lo;
  double hi;
  int64_t floor_ms;
  int64_t max_ms;
};

raw_window compute(const backoff_schedule& s, uint32_t failures) {
  int64_t max_ms = std::max<int64_t>(s.max.count(), 0);
  int64_t floor_ms = std::clamp<int64_t>(s.floor.count(), 0, max_ms);
  auto max_d = static_cast<double>(max_ms);
  auto initial
      = static_cast<double>(std::clamp<int64_t>(s.initial.count(), 0, max_ms));
  auto multiplier
      = std::isfinite(s.multiplier) && s.multiplier > 1.0 ? s.multiplier : 1.0;
  auto jitter = std::isnan(s.jitter) ? 0.0 : std::clamp(s.jitter, 0.0, 1.0);
  double base = initial;
  if (initial > 0.0 && multiplier > 1.0) {
    // The whole count: a multiplier close to 1 (1.00003) needs ~10^5
    // failures to grow ten times, so no cap on the exponent may pin the
    // window below max (one at 2^16 did). pow may return inf, which min()
    // turns into max.
    auto n = static_cast<double>(failures);
    base = std::min(max_d, initial * std::pow(multiplier, n));
  }
  auto width = base * jitter;
  auto floor_d = static_cast<double>(floor_ms);
  double lo = base - width;
  double hi = base;
  if (lo < floor_d) {
    // Keep the width, move the window up to start at the floor.
    lo = floor_d;
    hi = std::min(max_d, floor_d + width);
  }
  return {lo, hi, floor_ms, max_ms};
}

/// Rounds toward zero, clamped into [lo_ms, hi_ms] (never converts a
/// double outside int64's range).
int64_t to_ms(double x, int64_t lo_ms, int64_t hi_ms) {
  if (!(x > static_cast<double>(lo_ms)))
    return lo_ms;
  if (x >= static_cast<double>(hi_ms))
    return hi_ms;
  return std::clamp<int64_t>(static_cast<int64_t>(x), lo_ms, hi_ms);
}

} // namespace

std::pair<milliseconds, milliseconds>
backoff_schedule::window(uint32_t failures) const {
  auto w = compute(*this, failures);
  auto hi = to_ms(w.hi, w.floor_ms, w.max_ms);
  auto lo = to_ms(std::ceil(w.lo), w.floor_ms, hi);
  return {milliseconds{lo}, milliseconds{hi}};
}

milliseconds backoff_schedule::delay(uint32_t failures,
                                     double uniform01) const {
  auto w = compute(*this, failures);
  auto u = std::isnan(uniform01) ? 0.0 : std::clamp(uniform01, 0.0, 1.0);
  auto hi = to_ms(w.hi, w.floor_ms, w.max_ms);
  auto lo = to_ms(std::ceil(w.lo), w.floor_ms, hi);
  return milliseconds{to_ms(w.hi - u * (w.hi - w.lo), lo, hi)};
}

double jitter_draw() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_real_distribution<double> dist{0.0, 1.0};
  auto u = dist(rng);
  return u >= 1.0 ? 0.0 : u;
}

} // namespace drover
