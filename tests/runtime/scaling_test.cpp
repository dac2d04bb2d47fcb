// Scaling signals (runtime/scaling.hpp): decaying rates, the mean run time,
// and the recommended slots.

#include "runtime/scaling.hpp"

#include <catch2/catch.hpp>

#include <cmath>

using namespace drover;

TEST_CASE("a decaying rate reads a steady rate and fades after it stops",
          "[scaling]") {
  decaying_rate r;
  CHECK(r.per_second(0) == 0);
  // 10 per second for 10 minutes.
  int64_t t = 0;
  for (; t < 600000; t += 100)
    r.add(t);
  CHECK(r.per_second(t) == Approx(10).epsilon(0.02));
  // One time constant later, about 37 % of it.
  CHECK(r.per_second(t + 60000) == Approx(10 * std::exp(-1.0)).epsilon(0.02));
  // A burst of 600 at once reads as 600/60 per second.
  decaying_rate burst;
  burst.add(1000, 600);
  CHECK(burst.per_second(1000) == Approx(10));
  // Time going backwards counts at the last time.
  burst.add(0);
  CHECK(burst.per_second(1000) == Approx(10 + 1.0 / 60));
}

TEST_CASE("the mean run time weights recent attempts", "[scaling]") {
  run_time_mean m;
  CHECK(m.ms() == 0);
  m.observe(1000);
  CHECK(m.ms() == 1000);
  m.observe(2000);
  CHECK(m.ms() == Approx(1200));
  m.observe(-5); // a clock step: counted as 0
  CHECK(m.ms() == Approx(960));
}

TEST_CASE("recommended slots keep up with arrivals and drain the backlog",
          "[scaling]") {
  // 4 jobs/s of 2 s each: 8 busy slots, 10 with a quarter to spare.
  CHECK(recommended_slots(4, 2000, 0, 8) == 10);
  // And 120 waiting: 120 * 2 s / 60 s = 4 more.
  CHECK(recommended_slots(4, 2000, 120, 8) == 14);
  // Nothing arrives, nothing waits, nothing runs: none.
  CHECK(recommended_slots(0, 2000, 0, 0) == 0);
  // A trickle still gets one while something waits or runs.
  CHECK(recommended_slots(0.001, 10, 1, 0) == 1);
  // Run time unknown: start everything.
  CHECK(recommended_slots(3, -1, 5, 2) == 7);
  // Jobs that take no time: one slot while any wait or run.
  CHECK(recommended_slots(3, 0, 5, 2) == 1);
  CHECK(recommended_slots(1e12, 1e9, 0, 0) == 1'000'000);
}
