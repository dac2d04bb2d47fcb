// Progress publisher tests. Everything runs under CAF's deterministic test
// coordinator: no threads, no sleeps; time moves only when the test
// advances the actor clock. Subscribers are small recorder actors that
// note what they receive and when (on the actor clock).

#include "actors/progress_publisher.hpp"

#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <random>

using namespace drover;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

using time_point = caf::actor_clock::time_point;

caf::actor_system_config& testing_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  register_types(cfg);
  return cfg;
}

/// One message a subscriber received.
struct received {
  bool is_final = false;
  progress_update update; // when !is_final
  job_record record;      // when is_final
  time_point at;
};

/// What one subscriber received, in arrival order.
struct recording {
  std::vector<received> events;

  std::vector<progress_update> updates(const std::string& job_id = {}) const {
    std::vector<progress_update> result;
    for (const auto& e : events)
      if (!e.is_final && (job_id.empty() || e.update.job_id == job_id))
        result.push_back(e.update);
    return result;
  }

  std::vector<job_record> finals() const {
    std::vector<job_record> result;
    for (const auto& e : events)
      if (e.is_final)
        result.push_back(e.record);
    return result;
  }
};

caf::behavior recorder(caf::event_based_actor* self,
                       std::shared_ptr<recording> out) {
  return {
      [self, out](progress_atom, progress_update& u) {
        received r;
        r.update = std::move(u);
        r.at = self->clock().now();
        out->events.push_back(std::move(r));
      },
      [self, out](final_atom, job_record& rec) {
        received r;
        r.is_final = true;
        r.record = std::move(rec);
        r.at = self->clock().now();
        out->events.push_back(std::move(r));
      },
  };
}

progress_update update(std::string job_id, double percent, int64_t at_ms,
                       uint32_t attempt = 1, std::vector<stage> stages = {}) {
  progress_update u;
  u.job_id = std::move(job_id);
  u.percent = percent;
  u.at_ms = at_ms;
  u.attempt = attempt;
  u.stages = std::move(stages);
  return u;
}

job_record final_record(std::string job_id, uint32_t attempt = 1,
                        job_status status = job_status::completed) {
  job_record r;
  r.job_id = std::move(job_id);
  r.attempt = attempt;
  r.status = status;
  r.progress = 100;
  return r;
}

progress_options options(milliseconds interval = 100ms,
                         milliseconds retention = 60s,
                         size_t max_finals = 10000) {
  progress_options o;
  o.coalesce_interval = interval;
  o.final_retention = retention;
  o.max_retained_finals = max_finals;
  return o;
}

struct subscriber {
  caf::actor handle;
  std::shared_ptr<recording> log;
};

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  progress_actor pub;
  std::vector<caf::actor> recorders;
  time_point start;

  explicit fixture(progress_options opts = options())
      : sys(testing_config(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys, true) {
    pub = spawn_progress_publisher(sys, opts);
    run();
    start = now();
  }

  ~fixture() {
    // Leave no actor behind: the system's destructor waits for all of them.
    self->send_exit(pub, caf::exit_reason::kill);
    for (auto& r : recorders)
      self->send_exit(r, caf::exit_reason::kill);
    run();
  }

  void run() {
    sched.run();
  }

  void advance(caf::timespan d) {
    sched.advance_time(d);
    run();
  }

  time_point now() {
    return sys.clock().now();
  }

  /// Time since the fixture started, on the actor clock.
  milliseconds elapsed(time_point t) const {
    return std::chrono::duration_cast<milliseconds>(t - start);
  }

  subscriber make_subscriber() {
    auto log = std::make_shared<recording>();
    auto h = sys.spawn(recorder, log);
    recorders.push_back(h);
    return {h, log};
  }

  void subscribe(const std::string& job_id, const subscriber& s) {
    self->send(pub, subscribe_atom::value, job_id, s.handle);
    run();
    bool ok = false;
    self->receive([&](ok_atom) { ok = true; }, caf::after(0s) >> [] {});
    REQUIRE(ok);
  }

  subscriber subscribed(const std::string& job_id) {
    auto s = make_subscriber();
    subscribe(job_id, s);
    return s;
  }

  void unsubscribe(const std::string& job_id, const subscriber& s) {
    self->send(pub, unsubscribe_atom::value, job_id, s.handle);
    run();
  }

  void publish(progress_update u) {
    self->send(pub, publish_atom::value, std::move(u));
    run();
  }

  void finish(job_record r) {
    self->send(pub, final_atom::value, std::move(r));
    run();
  }

  void changed(const std::string& job_id) {
    self->send(pub, changed_atom::value, job_id);
    run();
  }
};

stage make_stage(std::string name, double percent, stage_state state) {
  stage s;
  s.name = std::move(name);
  s.percent = percent;
  s.state = state;
  return s;
}

} // namespace

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

// -- subscriptions ------------------------------------------------------------

TEST_CASE("subscribers and jobs are isolated", "[progress][subscribe]") {
  fixture fx;
  auto both = fx.make_subscriber();
  fx.subscribe("job-a", both);
  fx.subscribe("job-b", both);
  auto only_b = fx.subscribed("job-b");
  auto only_a = fx.subscribed("job-a");
  fx.publish(update("job-a", 10, 1000));
  fx.publish(update("job-b", 20, 1000));
  fx.publish(update("job-c", 30, 1000)); // nobody listens
  // Coalescing is per job: job-b's first update was not held back by
  // job-a's.
  CHECK(both.log->updates("job-a").size() == 1);
  CHECK(both.log->updates("job-b").size() == 1);
  CHECK(both.log->events.size() == 2);
  REQUIRE(only_a.log->events.size() == 1);
  CHECK(only_a.log->events[0].update.job_id == "job-a");
  REQUIRE(only_b.log->events.size() == 1);
  CHECK(only_b.log->events[0].update.job_id == "job-b");
  fx.finish(final_record("job-a"));
  CHECK(both.log->finals().size() == 1);
  CHECK(only_a.log->finals().size() == 1);
  CHECK(only_b.log->finals().empty());
  // job-b goes on for the subscribers it has.
  fx.advance(1s);
  fx.publish(update("job-b", 40, 2000));
  CHECK(both.log->updates("job-b").size() == 2);
  CHECK(only_b.log->updates("job-b").size() == 2);
}

TEST_CASE("a new subscriber gets the latest update at once, once",
          "[progress][subscribe]") {
  fixture fx;
  auto early = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000)); // out at once
  fx.advance(10ms);
  fx.publish(update("job-1", 20, 1010)); // pending until t = 100 ms
  auto late = fx.subscribed("job-1");
  REQUIRE(late.log->updates().size() == 1);
  CHECK(late.log->updates()[0].percent == 20);
  CHECK(late.log->events[0].at == fx.now());
  fx.advance(90ms); // the flush reaches the early subscriber only
  CHECK(early.log->updates().size() == 2);
  CHECK(late.log->updates().size() == 1);
  // Subscribing again changes nothing.
  fx.subscribe("job-1", late);
  CHECK(late.log->updates().size() == 1);
  fx.advance(1s);
  fx.publish(update("job-1", 30, 2000));
  CHECK(late.log->updates().size() == 2);
  // A job without progress yet: nothing until there is some.
  auto waiting = fx.subscribed("job-2");
  CHECK(waiting.log->events.empty());
  fx.publish(update("job-2", 5, 1000));
  CHECK(waiting.log->updates().size() == 1);
}

TEST_CASE("unsubscribe ends the subscription", "[progress][subscribe]") {
  fixture fx;
  auto leaving = fx.subscribed("job-1");
  auto staying = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000));
  fx.unsubscribe("job-1", leaving);
  fx.advance(1s);
  fx.publish(update("job-1", 20, 2000));
  fx.finish(final_record("job-1"));
  CHECK(leaving.log->events.size() == 1);
  CHECK(staying.log->events.size() == 3);
  // Unsubscribing what was never subscribed is harmless.
  fx.unsubscribe("job-9", leaving);
  fx.unsubscribe("job-1", leaving);
}

TEST_CASE("a subscriber that dies is dropped, the others are still served",
          "[progress][subscribe]") {
  fixture fx;
  auto dying = fx.make_subscriber();
  fx.subscribe("job-1", dying);
  fx.subscribe("job-2", dying);
  auto alive = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000));
  fx.self->send_exit(dying.handle, caf::exit_reason::kill);
  fx.run();
  fx.advance(1s);
  fx.publish(update("job-1", 20, 2000));
  fx.publish(update("job-2", 20, 2000));
  fx.finish(final_record("job-1"));
  fx.finish(final_record("job-2"));
  CHECK(dying.log->events.size() == 1);
  CHECK(alive.log->updates().size() == 2);
  CHECK(alive.log->finals().size() == 1);
  // Still answering.
  auto later = fx.subscribed("job-3");
  CHECK(later.log->events.empty());
}

TEST_CASE("a subscription without a subscriber is refused",
          "[progress][subscribe]") {
  fixture fx;
  fx.self->send(fx.pub, subscribe_atom::value, std::string{"job-1"},
                caf::actor{});
  fx.run();
  bool refused = false;
  fx.self->receive([&](ok_atom) {}, [&](caf::error&) { refused = true; },
                   caf::after(0s) >> [] {});
  CHECK(refused);
}

TEST_CASE("a stray error message does not kill the publisher", "[progress]") {
  fixture fx;
  fx.self->monitor(fx.pub);
  caf::anon_send(caf::actor_cast<caf::actor>(fx.pub),
                 caf::make_error(caf::sec::runtime_error));
  fx.run();
  auto sub = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000));
  CHECK(sub.log->events.size() == 1);
  bool down = false;
  fx.self->receive([&](caf::down_msg&) { down = true; },
                   caf::after(0s) >> [] {});
  CHECK(!down);
}

// -- finals -------------------------------------------------------------------

TEST_CASE("a final flushes pending progress first and arrives exactly once",
          "[progress][final]") {
  fixture fx;
  auto a = fx.subscribed("job-1");
  auto b = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000)); // at once
  fx.advance(10ms);
  fx.publish(update("job-1", 20, 1010)); // pending
  fx.finish(final_record("job-1"));      // before the interval ends
  for (auto* s : {&a, &b}) {
    const auto& ev = s->log->events;
    REQUIRE(ev.size() == 3);
    CHECK(!ev[0].is_final);
    CHECK(!ev[1].is_final);
    CHECK(ev[1].update.percent == 20);
    CHECK(ev[1].at == fx.now()); // flushed now, not at the interval's end
    CHECK(ev[2].is_final);
    CHECK(ev[2].record.job_id == "job-1");
    CHECK(ev[2].record.status == job_status::completed);
  }
  // The subscription has ended: neither the stale flush timer, a duplicate
  // final nor late reports of the ended attempt reach anyone.
  fx.advance(1s);
  fx.finish(final_record("job-1"));
  fx.publish(update("job-1", 30, 2000));
  fx.advance(1s);
  CHECK(a.log->events.size() == 3);
  CHECK(b.log->events.size() == 3);
}

TEST_CASE("a final without any progress still reaches the subscribers",
          "[progress][final]") {
  fixture fx;
  auto sub = fx.subscribed("job-1");
  fx.finish(final_record("job-1", 0, job_status::cancelled));
  REQUIRE(sub.log->events.size() == 1);
  CHECK(sub.log->finals()[0].status == job_status::cancelled);
}

TEST_CASE("a late subscriber gets a recent final at once, not after "
          "retention",
          "[progress][final]") {
  fixture fx{options(100ms, 5s)};
  fx.publish(update("job-1", 50, 1000));
  fx.finish(final_record("job-1"));
  fx.advance(4s);
  auto late = fx.subscribed("job-1");
  REQUIRE(late.log->events.size() == 1);
  CHECK(late.log->events[0].is_final);
  CHECK(late.log->events[0].at == fx.now());
  // The final ended that subscription too.
  fx.publish(update("job-1", 60, 2000));
  fx.advance(1s);
  CHECK(late.log->events.size() == 1);
  // Retention is over: the job is forgotten.
  auto too_late = fx.subscribed("job-1");
  fx.advance(1s);
  CHECK(too_late.log->events.empty());
}

TEST_CASE("a new attempt after a final (redrive) replaces the final",
          "[progress][final]") {
  fixture fx;
  fx.finish(final_record("job-1", 2, job_status::failed));
  fx.publish(update("job-1", 5, 1000, 3));
  auto sub = fx.subscribed("job-1");
  REQUIRE(sub.log->events.size() == 1);
  CHECK(!sub.log->events[0].is_final);
  CHECK(sub.log->events[0].update.attempt == 3);
}

TEST_CASE("a redrive announced before the next attempt discards the final",
          "[progress][final]") {
  fixture fx;
  fx.finish(final_record("job-1", 2, job_status::failed));
  auto before = fx.subscribed("job-1");
  REQUIRE(before.log->events.size() == 1);
  CHECK(before.log->events[0].is_final);
  // The queue redrove the job: it is queued again, no attempt has run yet.
  fx.changed("job-1");
  auto after = fx.subscribed("job-1");
  fx.advance(1s);
  CHECK(after.log->events.empty()); // not told the job has finished
  fx.publish(update("job-1", 5, 1000, 3));
  fx.advance(1s);
  REQUIRE(after.log->events.size() == 1);
  CHECK(after.log->events[0].update.attempt == 3);
}

TEST_CASE("retained finals are bounded, oldest dropped first",
          "[progress][final]") {
  fixture fx{options(100ms, 60s, 3)};
  for (int i = 0; i < 5; ++i) {
    fx.publish(update("job-" + std::to_string(i), 50, 1000));
    fx.finish(final_record("job-" + std::to_string(i)));
    fx.advance(1ms);
  }
  for (int i = 0; i < 5; ++i) {
    auto s = fx.subscribed("job-" + std::to_string(i));
    INFO("job-" << i);
    CHECK(s.log->finals().size() == (i < 2 ? 0u : 1u));
    CHECK(s.log->updates().empty()); // finished jobs' progress is released
  }
}

TEST_CASE("finished jobs release their state", "[progress][final]") {
  fixture fx{options(100ms, 10s)};
  auto watcher = fx.make_subscriber();
  for (int i = 0; i < 2000; ++i) {
    auto id = "job-" + std::to_string(i);
    fx.subscribe(id, watcher);
    fx.publish(update(id, 10, 1000));
    fx.publish(update(id, 20, 1010)); // pending when the final comes
    fx.finish(final_record(id));
  }
  CHECK(watcher.log->updates().size() == 4000);
  CHECK(watcher.log->finals().size() == 2000);
  // Long after: no stale timer fires, nothing is remembered.
  fx.advance(11s);
  CHECK(watcher.log->events.size() == 6000);
  auto late = fx.make_subscriber();
  for (int i = 0; i < 2000; i += 97)
    fx.subscribe("job-" + std::to_string(i), late);
  fx.advance(1s);
  CHECK(late.log->events.empty());
}

TEST_CASE("a finals watcher gets every job's final, subscribed or not",
          "[progress][final][watch]") {
  fixture fx;
  auto watcher = fx.make_subscriber();
  fx.self->send(fx.pub, watch_finals_atom::value, watcher.handle);
  fx.run();
  bool ok = false;
  fx.self->receive([&](ok_atom) { ok = true; }, caf::after(0s) >> [] {});
  REQUIRE(ok);
  auto sub = fx.subscribed("job-1");
  fx.publish(update("job-1", 10, 1000));
  fx.finish(final_record("job-1"));
  fx.finish(final_record("job-2", 1, job_status::failed));
  // Progress is not for watchers; finals of all jobs are.
  CHECK(watcher.log->updates().empty());
  auto finals = watcher.log->finals();
  REQUIRE(finals.size() == 2);
  CHECK(finals[0].job_id == "job-1");
  CHECK(finals[1].job_id == "job-2");
  CHECK(finals[1].status == job_status::failed);
  CHECK(sub.log->finals().size() == 1);
  // A watcher that also subscribed keeps watching after its subscription
  // ended (its monitor stays), and watching twice changes nothing.
  fx.subscribe("job-3", watcher);
  fx.self->send(fx.pub, watch_finals_atom::value, watcher.handle);
  fx.run();
  fx.self->receive([](ok_atom) {}, caf::after(0s) >> [] {});
  fx.finish(final_record("job-3"));
  fx.finish(final_record("job-4"));
  finals = watcher.log->finals();
  REQUIRE(finals.size() == 5); // job-3 twice: as subscriber and as watcher
  CHECK(finals[4].job_id == "job-4");
  // A watcher that dies is dropped.
  fx.self->send_exit(watcher.handle, caf::exit_reason::kill);
  fx.run();
  fx.finish(final_record("job-5"));
  CHECK(watcher.log->finals().size() == 5);
  // A null watcher is refused.
  fx.self->send(fx.pub, watch_finals_atom::value, caf::actor{});
  fx.run();
  bool refused = false;
  fx.self->receive([&](ok_atom) {}, [&](caf::error&) { refused = true; },
                   caf::after(0s) >> [] {});
  CHECK(refused);
}
