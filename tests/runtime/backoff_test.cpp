// The one backoff formula (runtime/backoff.hpp) and the retry loops built
// on it: bounds, monotonic caps, no overflow, the floor's shifted window,
// and the job retry policy's documented range (docs/jobs.md). Randomised
// cases print their seed.

#include "runtime/backoff.hpp"
#include "runtime/retry.hpp"
#include "runtime/supervisor.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <set>

using namespace drover;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

/// base(n) computed the slow way, in long double, for comparison.
long double slow_base(long double initial, long double multiplier, uint32_t n,
                      long double max) {
  long double b = initial;
  for (uint32_t i = 0; i < n && b < max; ++i)
    b *= multiplier;
  return std::min(b, max);
}

/// $DROVER_TEST_SEED (to replay a run) or a random one.
uint32_t test_seed() {
  if (const char* env = std::getenv("DROVER_TEST_SEED"); env && *env)
    return static_cast<uint32_t>(std::strtoul(env, nullptr, 10));
  return std::random_device{}();
}

} // namespace

TEST_CASE("backoff delays stay in [base * (1 - jitter), base] and grow to the "
          "cap",
          "[backoff]") {
  auto seed = test_seed();
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  std::uniform_real_distribution<double> u{0.0, 1.0};
  std::uniform_int_distribution<int64_t> ms{0, 100000};
  for (int round = 0; round < 200; ++round) {
    backoff_schedule s;
    s.initial = milliseconds{ms(rng) / 10};
    s.max = s.initial + milliseconds{ms(rng)};
    s.multiplier = 1.0 + 3.0 * u(rng);
    s.jitter = u(rng);
    INFO("initial " << s.initial.count() << " max " << s.max.count()
                    << " multiplier " << s.multiplier << " jitter "
                    << s.jitter);
    milliseconds previous_lo{0};
    milliseconds previous_hi{0};
    for (uint32_t n = 0; n < 64; ++n) {
      auto [lo, hi] = s.window(n);
      auto base = slow_base(s.initial.count(), s.multiplier, n, s.max.count());
      // The window is [base * (1 - jitter), base], rounded inwards.
      CHECK(hi.count() <= static_cast<int64_t>(std::floor(base)) + 1);
      CHECK(hi.count() >= static_cast<int64_t>(std::floor(base)) - 1);
      CHECK(lo.count() >= static_cast<int64_t>(base * (1 - s.jitter)) - 1);
      CHECK(lo <= hi);
      CHECK(hi <= s.max);
      // Both ends grow monotonically.
      CHECK(lo >= previous_lo);
      CHECK(hi >= previous_hi);
      previous_lo = lo;
      previous_hi = hi;
      for (int i = 0; i < 20; ++i) {
        auto d = s.delay(n, u(rng));
        CHECK(d >= lo);
        CHECK(d <= hi);
      }
      // u = 0 takes no jitter off; u = 1 all of it.
      CHECK(s.delay(n, 0.0) == hi);
      CHECK(s.delay(n, 1.0) == lo);
    }
    // Far out, the window is pinned at the cap (a multiplier of 1.0001
    // needs ~10^5 failures to grow 10^4 times: the largest count it may
    // see) -- unless the first delay is 0, which no multiplier grows (drawn
    // about once in 50 runs: ms/10 is 0 for 10 of 100,001 values, 200
    // rounds a run).
    if (s.initial.count() > 0)
      CHECK(s.window(std::numeric_limits<uint32_t>::max()).second == s.max);
    else
      CHECK(s.window(std::numeric_limits<uint32_t>::max()).second
            == milliseconds{0});
  }
}

TEST_CASE("a floor moves the window up, keeping its width", "[backoff]") {
  backoff_schedule s{1000ms, 60000ms, 2.0, 0.2, 1000ms};
  // n = 0: base 1000, [800, 1000] would undercut the floor -> [1000, 1200].
  CHECK(s.window(0) == std::pair{1000ms, 1200ms});
  // n = 1: base 2000, [1600, 2000] is above the floor: unchanged.
  CHECK(s.window(1) == std::pair{1600ms, 2000ms});
  CHECK(s.window(20).second == 60000ms);
  // The first retries are spread, not all exactly the floor.
  auto seed = test_seed();
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  std::uniform_real_distribution<double> u{0.0, 1.0};
  std::set<int64_t> first;
  for (int i = 0; i < 100; ++i) {
    auto d = s.delay(0, u(rng));
    CHECK(d >= 1000ms);
    CHECK(d <= 1200ms);
    first.insert(d.count());
  }
  CHECK(first.size() > 10);
  // A floor above max is clamped to max.
  backoff_schedule odd{10ms, 50ms, 2.0, 0.5, 80ms};
  CHECK(odd.window(0) == std::pair{50ms, 50ms});
}

TEST_CASE("backoff never overflows, whatever the inputs", "[backoff]") {
  constexpr auto huge = std::numeric_limits<int64_t>::max();
  backoff_schedule s{milliseconds{huge / 2}, milliseconds{huge}, 1e300, 1.0};
  for (uint32_t n : {0u, 1u, 2u, 63u, 64u, 1000u, UINT32_MAX}) {
    auto d = s.delay(n, 0.5);
    CHECK(d.count() >= 0);
    CHECK(d.count() <= huge);
    CHECK(s.delay(n, 0.0).count() <= huge);
  }
  CHECK(s.delay(UINT32_MAX, 0.0) == milliseconds{huge});
  // Degenerate schedules still answer within [0, max].
  backoff_schedule nan_s{10ms, 1000ms, std::nan(""), std::nan("")};
  CHECK(nan_s.delay(5, 0.5) == 10ms); // multiplier 1, no jitter
  backoff_schedule negative{-5ms, -10ms, 0.5, -1.0};
  CHECK(negative.delay(3, 0.5) == 0ms);
  backoff_schedule zero{0ms, 1000ms, 2.0, 0.5};
  CHECK(zero.delay(UINT32_MAX, 0.3) == 0ms);
  backoff_schedule tiny_growth{1ms, 1000ms, 1.0000001, 0.0};
  CHECK(tiny_growth.delay(UINT32_MAX, 0.0) <= 1000ms);
  CHECK(s.delay(3, std::nan("")) == s.window(3).second);
}

TEST_CASE("a backoff counter counts failures until reset", "[backoff]") {
  backoff_counter c{backoff_schedule{100ms, 5000ms, 2.0, 0.5}};
  CHECK(c.next(0.0) == 100ms);
  CHECK(c.next(0.0) == 200ms);
  CHECK(c.next(1.0) == 200ms); // [200, 400]
  CHECK(c.failures() == 3);
  for (int i = 0; i < 100; ++i) {
    auto d = c.next();
    CHECK(d >= 50ms);
    CHECK(d <= 5000ms);
  }
  CHECK(c.next(0.0) == 5000ms);
  c.reset();
  CHECK(c.failures() == 0);
  CHECK(c.next(0.0) == 100ms);
  for (int i = 0; i < 1000; ++i) {
    auto u = jitter_draw();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
  }
}

TEST_CASE("job retries keep the documented range [initial, max] and are "
          "jittered from the first",
          "[backoff][retry]") {
  backoff_policy p;
  p.initial_delay_ms = 1000;
  p.max_delay_ms = 300000;
  p.multiplier = 2.0;
  p.jitter = 0.2;
  auto seed = test_seed();
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  std::uniform_real_distribution<double> u{0.0, 1.0};
  std::set<int64_t> first;
  for (uint32_t n = 0; n < 40; ++n)
    for (int i = 0; i < 50; ++i) {
      auto d = retry_delay_ms(p, n, u(rng));
      CHECK(d >= p.initial_delay_ms);
      CHECK(d <= p.max_delay_ms);
      if (n == 0)
        first.insert(d);
    }
  CHECK(first.size() > 5);
  CHECK(retry_delay_ms(p, 3, 0.0) == 8000);
  CHECK(retry_delay_ms(p, 3, 1.0) == 6400);
  CHECK(retry_delay_ms(p, 100000, 0.0) == 300000);
  // A max below initial means "initial".
  p.max_delay_ms = 10;
  CHECK(retry_delay_ms(p, 5, 0.5) == 1000);
}
