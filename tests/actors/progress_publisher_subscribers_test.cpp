// Progress publisher tests of the subscriptions and finals: who gets what,
// unsubscribing, dead subscribers, and a job's final (retained for late
// subscribers, replaced on a redrive, bounded). Everything runs under
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
