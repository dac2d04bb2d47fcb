// A queue's recovery from its store (actors/queue_lifecycle.cpp): the store's
// live jobs are read a page at a time (5,000 a page), queued page by page, and
// a job that enters the queue another way while recovery runs is queued once,
// never again from a later page. CAF's deterministic test coordinator: the
// order of messages is the test's. Also the queue's self-fencing
// (queue_options::may_dispatch).

#include "actors/progress_publisher.hpp"
#include "actors/queue.hpp"
#include "actors/store.hpp"
#include "actors/worker.hpp"
#include "runtime/errors.hpp"
#include "runtime/task.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <deque>
#include <functional>
#include <numeric>

using namespace drover;

namespace {

constexpr int64_t epoch_ms = 1'800'000'000'000;

/// An actor system on the deterministic test coordinator and the test's
/// own blocking actor.
struct deterministic {
  caf::actor_system_config cfg;
  caf::actor_system sys{drover::testing::testing_config(cfg)};
  caf::scheduler::test_coordinator& sched{
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())};
  caf::scoped_actor self{sys, true};
};

/// A registry with one job type, `noop`, that succeeds at once.
std::shared_ptr<handler_registry> noop_handlers() {
  auto handlers = std::make_shared<handler_registry>();
  REQUIRE_FALSE(handlers->register_handler(
      "noop", [](task_context&) { return task_outcome::success(); }));
  return handlers;
}

} // namespace

TEST_CASE("recovery reads the live jobs page by page and queues each once",
          "[recovery]") {
  deterministic d;
  auto& sys = d.sys;
  auto& sched = d.sched;
  auto& self = d.self;
  auto store = spawn_memory_store(sys);
  // 12,001 queued jobs (three pages), plus one finished job in between
  // that recovery must leave alone.
  constexpr int stored = 12001;
  std::vector<job_event> evs;
  for (int i = 0; i <= stored; ++i) {
    char id[16];
    std::snprintf(id, sizeof(id), "a%05d", i);
    job_event ev;
    ev.job_id = id;
    ev.kind = event_kind::submitted;
    ev.at_ms = epoch_ms;
    ev.spec.type = "noop";
    ev.spec.max_attempts = 1;
    evs.push_back(std::move(ev));
  }
  self->send(store, submit_atom::value, evs);
  sched.run();
  self->receive([](std::vector<job_record>&) {},
                [](caf::error& err) { FAIL(describe(err)); });
  job_event cancel;
  cancel.job_id = "a06000";
  cancel.kind = event_kind::cancelled;
  cancel.at_ms = epoch_ms;
  self->send(store, append_atom::value, std::vector<job_event>{cancel});
  sched.run();
  self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); });

  auto handlers = noop_handlers();
  queue_options qo;
  qo.clock_ms = [] { return epoch_ms; };
  qo.flow_clock_ms = qo.clock_ms; // adoption graces
  qo.seed = 11;
  auto queue
      = spawn_queue(sys, {store, spawn_progress_publisher(sys), handlers}, qo);
  // A submit that reaches the queue while it recovers: the store commits it
  // after the first page was read, and its id ("j...-0") sorts after
  // every "a" job, so the last page holds it again.
  submit_request req;
  req.type = "noop";
  self->send(queue, submit_atom::value, req);
  sched.run();
  std::string fresh;
  self->receive([&](job_record& rec) { fresh = rec.job_id; },
                [](caf::error& err) { FAIL(describe(err)); });
  REQUIRE(fresh > "a99999");
  self->send(queue, stats_atom::value);
  sched.run();
  self->receive(
      [&](queue_stats& st) {
        auto depth
            = std::accumulate(st.depth.begin(), st.depth.end(), uint64_t{0});
        // Every live stored job once, the fresh one once, the cancelled
        // one not at all.
        CHECK(depth == stored + 1);
        CHECK(st.running == 0);
      },
      [](caf::error& err) { FAIL(describe(err)); });
}

TEST_CASE("a store refuses a recovery page without a sane limit",
          "[recovery]") {
  deterministic d;
  auto& sys = d.sys;
  auto& sched = d.sched;
  auto& self = d.self;
  auto store = spawn_memory_store(sys);
  for (uint32_t limit : {0u, max_recovery_page + 1}) {
    self->send(store, recover_atom::value, int32_t{0}, std::string{}, limit);
    sched.run();
    self->receive(
        [](std::vector<job_record>&) { FAIL("a page was served"); },
        [](caf::error& err) { CHECK(is(err, errc::invalid_request)); });
  }
  self->send(store, recover_atom::value, int32_t{0}, std::string{},
             max_recovery_page);
  sched.run();
  self->receive([](std::vector<job_record>& page) { CHECK(page.empty()); },
                [](caf::error& err) { FAIL(describe(err)); });
}

TEST_CASE("the memory store serves one partition's live jobs page by page",
          "[recovery][partition]") {
  deterministic d;
  auto& sched = d.sched;
  auto& self = d.self;
  auto store = spawn_memory_store(d.sys);
  // Partitions 1 and 2 interleaved, one job without a partition suffix
  // (partition 0), one with a 5-digit suffix (partition 0 too); one job of
  // partition 1 cancelled.
  std::vector<job_event> evs;
  for (const char* id : {"a1-1", "a2-2", "a3-1", "a4-1", "a5-2", "a6-1",
                         "a7-01", "legacy", "a8-10001"}) {
    job_event ev;
    ev.job_id = id;
    ev.kind = event_kind::submitted;
    ev.at_ms = epoch_ms;
    ev.spec.type = "noop";
    evs.push_back(std::move(ev));
  }
  self->send(store, submit_atom::value, evs);
  sched.run();
  self->receive([](std::vector<job_record>&) {},
                [](caf::error& err) { FAIL(describe(err)); });
  job_event cancel;
  cancel.job_id = "a4-1";
  cancel.kind = event_kind::cancelled;
  cancel.at_ms = epoch_ms;
  self->send(store, append_atom::value, std::vector<job_event>{cancel});
  sched.run();
  self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); });
  auto page = [&](int32_t partition, std::string after, uint32_t limit) {
    std::vector<std::string> ids;
    self->send(store, recover_atom::value, partition, std::move(after), limit);
    sched.run();
    self->receive(
        [&](std::vector<job_record>& recs) {
          for (auto& rec : recs)
            ids.push_back(rec.job_id);
        },
        [](caf::error& err) { FAIL(describe(err)); });
    return ids;
  };
  using ids = std::vector<std::string>;
  CHECK(page(1, "", 10) == ids{"a1-1", "a3-1", "a6-1", "a7-01"});
  CHECK(page(1, "", 2) == ids{"a1-1", "a3-1"});
  CHECK(page(1, "a3-1", 2) == ids{"a6-1", "a7-01"});
  CHECK(page(2, "", 10) == ids{"a2-2", "a5-2"});
  CHECK(page(0, "", 10) == ids{"a8-10001", "legacy"});
  CHECK(page(3, "", 10).empty());
  for (auto [partition, limit] :
       std::vector<std::pair<int32_t, uint32_t>>{{-1, 10},
                                                 {max_partitions, 10},
                                                 {1, 0},
                                                 {1, max_recovery_page + 1}}) {
    self->send(store, recover_atom::value, partition, std::string{}, limit);
    sched.run();
    self->receive(
        [](std::vector<job_record>&) { FAIL("a page was served"); },
        [](caf::error& err) { CHECK(is(err, errc::invalid_request)); });
  }
  // It has no partitions to change: several coordinators need PostgreSQL.
  self->send(store, partitions_atom::value, std::vector<int32_t>{1},
             std::vector<int64_t>{1});
  sched.run();
  self->receive([](ok_atom) { FAIL("the memory store took partitions"); },
                [](caf::error& err) {
                  CHECK(is(err, errc::invalid_request));
                  CHECK(describe(err).find("--store postgres")
                        != std::string::npos);
                });
}

TEST_CASE("self-fencing: a queue that may not dispatch holds its jobs and "
          "dispatches once it may again",
          "[recovery][fence]") {
  deterministic d;
  auto& sys = d.sys;
  auto& sched = d.sched;
  auto& self = d.self;
  auto handlers = noop_handlers();
  auto leases_fresh = std::make_shared<bool>(false);
  queue_options qo;
  qo.clock_ms = [] { return epoch_ms; };
  qo.flow_clock_ms = qo.clock_ms; // adoption graces
  qo.seed = 3;
  qo.may_dispatch = [leases_fresh] { return *leases_fresh; };
  auto store = spawn_memory_store(sys);
  auto publisher = spawn_progress_publisher(sys);
  auto queue = spawn_queue(sys, {store, publisher, handlers}, qo);
  std::deque<std::function<void()>> bodies;
  worker_config wc;
  wc.worker_id = "cpu-0";
  wc.home = queue;
  wc.handlers = handlers;
  wc.clock_ms = [] { return epoch_ms; };
  wc.executor = [&bodies](std::function<void()> body) {
    bodies.push_back(std::move(body));
  };
  auto worker = spawn_worker(sys, wc);
  sched.run();
  submit_request req;
  req.type = "noop";
  self->send(queue, submit_atom::value, req);
  sched.run();
  self->receive([](job_record&) {},
                [](caf::error& err) { FAIL(describe(err)); },
                caf::after(std::chrono::seconds{1}) >>
                    [] { FAIL("no answer to the submit"); });
  auto running = [&] {
    uint64_t n = 0;
    self->send(queue, stats_atom::value);
    sched.run();
    self->receive([&](queue_stats& st) { n = st.running; },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to stats"); });
    return n;
  };
  // Held: an idle worker and a ready job, and nothing starts, also after
  // the re-checks.
  CHECK(running() == 0);
  for (int i = 0; i < 5; ++i) {
    sched.advance_time(std::chrono::milliseconds{100});
    sched.run();
  }
  CHECK(running() == 0);
  CHECK(bodies.empty());
  // Renewed: the next re-check dispatches.
  *leases_fresh = true;
  sched.advance_time(std::chrono::milliseconds{100});
  sched.run();
  CHECK(running() == 1);
  CHECK(bodies.size() == 1);
  // The attempt runs to its end as usual.
  bodies.front()();
  bodies.pop_front();
  sched.run();
  CHECK(running() == 0);
  drover::testing::stop_actors(self, sched,
                               {caf::actor_cast<caf::actor>(queue),
                                caf::actor_cast<caf::actor>(worker),
                                caf::actor_cast<caf::actor>(publisher),
                                caf::actor_cast<caf::actor>(store)});
}
