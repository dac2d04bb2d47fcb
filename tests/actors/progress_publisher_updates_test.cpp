// Progress publisher tests of the updates: the ETA estimate, coalescing of
// a chatty handler's updates, attempts and stages. Everything runs under
// CAF's deterministic test coordinator: no threads, no sleeps; time moves
// only when the test advances the actor clock. Subscribers are small
// recorder actors that note what they receive and when (on the actor
// clock; the fixture is tests/support/progress_fixture.hpp).

#include "support/progress_fixture.hpp"

#include "actors/progress_publisher.hpp"

#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>

using namespace drover;
using namespace drover::testing::progress_fixture;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

// -- estimate_eta_ms ----------------------------------------------------------

TEST_CASE("estimate_eta_ms: linear progress", "[progress][eta]") {
  CHECK(estimate_eta_ms(0, 0, 25, 10000) == 30000);
  CHECK(estimate_eta_ms(0, 1000, 50, 11000) == 10000);
  CHECK(estimate_eta_ms(20, 5000, 60, 9000) == 4000);
  CHECK(estimate_eta_ms(0, 0, 99.5, 199000) == 1000);
}

TEST_CASE("estimate_eta_ms: edge cases", "[progress][eta]") {
  // No movement yet: unknown.
  CHECK(estimate_eta_ms(10, 0, 10, 5000) == -1);
  CHECK(estimate_eta_ms(0, 0, 0, 0) == -1);
  // Done: nothing remains, whatever the history.
  CHECK(estimate_eta_ms(0, 0, 100, 1000) == 0);
  CHECK(estimate_eta_ms(100, 0, 100, 0) == 0);
  CHECK(estimate_eta_ms(50, 1000, 100, 500) == 0);
  // Backwards percent, backwards or zero time: unknown.
  CHECK(estimate_eta_ms(50, 0, 40, 1000) == -1);
  CHECK(estimate_eta_ms(0, 5000, 25, 1000) == -1);
  CHECK(estimate_eta_ms(0, 5000, 25, 5000) == -1);
  // Garbage and overflow: unknown, never UB.
  CHECK(estimate_eta_ms(std::nan(""), 0, 10, 1000) == -1);
  CHECK(estimate_eta_ms(0, 0, std::numeric_limits<double>::infinity(), 1)
        == -1);
  CHECK(estimate_eta_ms(0, std::numeric_limits<int64_t>::min(), 1e-300,
                        std::numeric_limits<int64_t>::max())
        == -1);
}

// -- coalescing ---------------------------------------------------------------

TEST_CASE("a chatty handler is coalesced: the first at once, the latest at "
          "the interval's end",
          "[progress][coalescing]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  // 1000 updates within one 100 ms interval (90 µs apart).
  for (int i = 0; i < 1000; ++i) {
    fx.publish(update("job-1", i * 0.05, 1000 + i));
    fx.advance(90us);
    if (i == 0) {
      REQUIRE(sub.log->events.size() == 1);
      CHECK(fx.elapsed(sub.log->events[0].at) == 0ms);
    }
  }
  CHECK(sub.log->events.size() == 1);
  fx.advance(10ms); // 100 ms after the first went out
  auto got = sub.log->updates();
  REQUIRE(got.size() == 2);
  CHECK(got[0].percent == 0);
  CHECK(got[1].percent == Approx(999 * 0.05));
  CHECK(got[1].at_ms == 1999);
  CHECK(fx.elapsed(sub.log->events[1].at) == 100ms);
  // Quiet from now on: nothing else arrives.
  fx.advance(1s);
  CHECK(sub.log->events.size() == 2);
  // After the quiet period the next update goes out at once again.
  fx.publish(update("job-1", 60, 5000));
  REQUIRE(sub.log->events.size() == 3);
  CHECK(sub.log->events[2].at == fx.now());
}

TEST_CASE("no update is delayed by more than one interval, and updates are "
          "spaced by at least one",
          "[progress][coalescing]") {
  fixture fx{options(100ms)};
  auto sub = fx.subscribed("job-1");
  auto seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng{seed};
  std::uniform_int_distribution<int> gap_ms{0, 250};
  struct sent {
    double percent;
    time_point at;
  };
  std::vector<sent> published;
  double percent = 0;
  for (int i = 0; i < 300; ++i) {
    fx.publish(update("job-1", percent, 1000 + i));
    published.push_back({percent, fx.now()});
    percent += 0.25;
    // In 1 ms steps: a timer due within a bigger step would only be seen
    // (and its delivery time recorded) at the end of that step.
    for (auto gap = gap_ms(rng); gap > 0; --gap)
      fx.advance(1ms);
  }
  for (int i = 0; i < 200; ++i)
    fx.advance(1ms);
  const auto& events = sub.log->events;
  REQUIRE(!events.empty());
  // The latest always arrives eventually.
  CHECK(events.back().update.percent == published.back().percent);
  for (size_t i = 1; i < events.size(); ++i)
    CHECK(events[i].at - events[i - 1].at >= 100ms);
  // Every report is superseded or delivered within one interval.
  for (const auto& p : published) {
    INFO("published " << p.percent << "% at " << fx.elapsed(p.at).count()
                      << " ms");
    auto covered
        = std::any_of(events.begin(), events.end(), [&p](const received& e) {
            return e.update.percent >= p.percent && e.at >= p.at
                   && e.at - p.at <= 100ms;
          });
    CHECK(covered);
  }
}

TEST_CASE("a pending update is flushed exactly at the end of the interval",
          "[progress][coalescing]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000)); // t = 0: at once
  fx.advance(30ms);
  fx.publish(update("job-1", 20, 1030)); // pending
  fx.advance(69ms);
  CHECK(sub.log->events.size() == 1); // t = 99 ms: not a millisecond early
  fx.advance(1ms);
  REQUIRE(sub.log->events.size() == 2);
  CHECK(sub.log->events[1].update.percent == 20);
  // That flush opened a new interval: an update 50 ms in waits 50 ms more.
  fx.advance(50ms);
  fx.publish(update("job-1", 30, 1150));
  CHECK(sub.log->events.size() == 2);
  fx.advance(50ms);
  REQUIRE(sub.log->events.size() == 3);
  CHECK(fx.elapsed(sub.log->events[2].at) == 200ms);
}

// -- ETA, attempts, stages --------------------------------------------------

TEST_CASE("ETA from the observed rate, reset on a new attempt",
          "[progress][eta]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  fx.publish(update("job-1", 0, 1000, 1));
  fx.advance(1s);
  fx.publish(update("job-1", 0, 6000, 1)); // no movement yet
  fx.advance(1s);
  fx.publish(update("job-1", 25, 11000, 1)); // 25% in 10 s
  fx.advance(1s);
  fx.publish(update("job-1", 40, 20000, 2)); // new attempt: new base
  fx.advance(1s);
  fx.publish(update("job-1", 50, 30000, 2)); // 10% in 10 s
  fx.advance(1s);
  auto got = sub.log->updates();
  REQUIRE(got.size() == 5);
  CHECK(got[0].eta_ms == -1);
  CHECK(got[1].eta_ms == -1);
  CHECK(got[2].eta_ms == 30000);
  CHECK(got[3].eta_ms == -1);
  CHECK(got[3].attempt == 2);
  CHECK(got[4].eta_ms == 50000);
}

TEST_CASE("updates from an older attempt than the newest seen are dropped",
          "[progress][fencing]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000, 2));
  fx.advance(1s);
  fx.publish(update("job-1", 90, 2000, 1)); // stale attempt
  fx.advance(1s);
  fx.publish(update("job-1", 20, 3000, 2));
  fx.advance(1s);
  auto got = sub.log->updates();
  REQUIRE(got.size() == 2);
  CHECK(got[0].percent == 10);
  CHECK(got[1].percent == 20);
  // The ETA base was not disturbed by the stale report: 10% in 2 s.
  CHECK(got[1].eta_ms == 16000);
  // A new subscriber's snapshot is the newest attempt's latest.
  auto late = fx.subscribed("job-1");
  REQUIRE(late.log->updates().size() == 1);
  CHECK(late.log->updates()[0].attempt == 2);
  CHECK(late.log->updates()[0].percent == 20);
}

TEST_CASE("the stage list is carried over updates with empty stages",
          "[progress][stages]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  std::vector<stage> first_list{make_stage("fetch", 50, stage_state::running),
                                make_stage("parse", 0, stage_state::pending)};
  fx.publish(update("job-1", 25, 1000, 1, first_list));
  fx.advance(1s);
  fx.publish(update("job-1", 40, 2000)); // stages unchanged
  fx.advance(1s);
  std::vector<stage> second_list{make_stage("fetch", 100, stage_state::done),
                                 make_stage("parse", 20, stage_state::running)};
  fx.publish(update("job-1", 60, 3000, 1, second_list));
  fx.advance(1s);
  fx.publish(update("job-1", 70, 4000, 2)); // a new attempt keeps the list
  fx.advance(1s);
  auto got = sub.log->updates();
  REQUIRE(got.size() == 4);
  CHECK(got[0].stages == first_list);
  CHECK(got[1].stages == first_list);
  CHECK(got[2].stages == second_list);
  CHECK(got[3].stages == second_list);
  // A coalesced update carries the list even if the one that changed it
  // was replaced before going out.
  fx.publish(update("job-1", 80, 5000, 2, first_list));  // at once
  fx.publish(update("job-1", 85, 5100, 2, second_list)); // pending
  fx.publish(update("job-1", 90, 5200, 2));              // replaces it
  fx.advance(100ms);
  got = sub.log->updates();
  REQUIRE(got.size() == 6);
  CHECK(got[5].percent == 90);
  CHECK(got[5].stages == second_list);
}

TEST_CASE("checkpoints are not fanned out to subscribers", "[progress]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  auto u = update("job-1", 10, 1000);
  u.checkpoint = std::string(1024, 'x');
  u.message = "working";
  fx.publish(u);
  auto got = sub.log->updates();
  REQUIRE(got.size() == 1);
  CHECK(got[0].checkpoint.empty());
  CHECK(got[0].message == "working");
}
