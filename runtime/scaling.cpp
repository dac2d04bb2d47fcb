#include "runtime/scaling.hpp"

#include <algorithm>
#include <cmath>

namespace drover {

namespace {

double decay(double value, int64_t from_ms, int64_t to_ms) {
  if (to_ms <= from_ms)
    return value;
  return value
         * std::exp(-static_cast<double>(to_ms - from_ms)
                    / decaying_rate::tau_ms);
}

} // namespace

void decaying_rate::add(int64_t now_ms, double n) {
  now_ms = std::max(now_ms, at_ms_);
  value_ = decay(value_, at_ms_, now_ms) + n * 1000.0 / tau_ms;
  at_ms_ = now_ms;
}

double decaying_rate::per_second(int64_t now_ms) const {
  return decay(value_, at_ms_, now_ms);
}

void run_time_mean::observe(int64_t ms) {
  auto x = static_cast<double>(std::max<int64_t>(0, ms));
  mean_ = seen_ ? 0.8 * mean_ + 0.2 * x : x;
  seen_ = true;
}

uint64_t recommended_slots(double arrivals_per_second, double mean_run_ms,
                           uint64_t ready, uint64_t running) {
  constexpr double cap = 1'000'000;
  if (mean_run_ms < 0)
    return static_cast<uint64_t>(std::min(
        cap, static_cast<double>(ready) + static_cast<double>(running)));
  double seconds = mean_run_ms / 1000.0;
  double slots = 1.25 * std::max(0.0, arrivals_per_second) * seconds
                 + static_cast<double>(ready) * seconds / 60.0;
  auto n = std::min(cap, std::ceil(slots));
  if (n < 1 && ready + running > 0)
    n = 1;
  return static_cast<uint64_t>(n);
}

} // namespace drover
