// A queue whose partitions come and go (actors/queue_partitions.cpp,
// --share-partitions): handing a partition over takes its waiting jobs,
// timers and running attempts out of the queue without a write; taking it
// recovers them from the store. CAF's deterministic test coordinator. The
// recovery-retry case and its proxy store came from the review of the
// change (helper-24), which reproduced the bug with them.

#include "actors/detail/queue_state.hpp"
#include "actors/progress_publisher.hpp"
#include "actors/queue.hpp"
#include "actors/store.hpp"
#include "actors/worker.hpp"
#include "runtime/circuit_breaker.hpp"
#include "runtime/errors.hpp"
#include "runtime/partition.hpp"
#include "runtime/task.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <deque>
#include <functional>
#include <numeric>
#include <tuple>

using namespace drover;

namespace {

/// A stand-in for a worker node's slot: takes what a job supervisor sends
/// a worker and does nothing with it.
worker_actor spawn_idle_slot(caf::actor_system& sys) {
  return sys.spawn([]() -> worker_actor::behavior_type {
    return {[](run_atom, lease&, job_supervisor_actor&) {},
            [](cancel_atom, std::string&, uint32_t) {},
            [](abandon_atom, std::string&, uint32_t) {},
            [](handover_atom, std::string&, uint32_t) {}};
  });
}

constexpr int64_t epoch_ms = 1'800'000'000'000;

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{drover::testing::testing_config(cfg)};
  caf::scheduler::test_coordinator& sched{
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())};
  caf::scoped_actor self{sys, true};
  std::shared_ptr<handler_registry> handlers
      = std::make_shared<handler_registry>();
  store_actor store = spawn_memory_store(sys);
  queue_actor queue;
  /// The queue's clock (Unix ms), moved on with the scheduler's.
  std::shared_ptr<int64_t> clock = std::make_shared<int64_t>(epoch_ms);
  /// A step of the wall clock (ms) that the monotonic clock does not take.
  std::shared_ptr<int64_t> wall_step = std::make_shared<int64_t>(0);

  /// `adopt`: the adoption grace and the wait for a partition not owned
  /// (queue_options::adopt_grace, adopt_wait).
  explicit fixture(std::chrono::milliseconds handover_grace = {},
                   std::chrono::milliseconds adopt = {}) {
    REQUIRE_FALSE(handlers->register_handler(
        "noop", [](task_context&) { return task_outcome::success(); }));
    queue_options qo;
    qo.handover_grace = handover_grace;
    qo.adopt_grace = adopt;
    qo.adopt_wait = adopt;
    qo.clock_ms = [c = clock, w = wall_step] { return *c + *w; };
    qo.flow_clock_ms = [c = clock] { return *c; }; // adoption graces
    qo.seed = 5;
    qo.partitions = {0, 1};
    qo.partition_count = 2;
    queue = spawn_queue(sys, {store, spawn_progress_publisher(sys), handlers},
                        qo);
    sched.run();
  }

  /// A local worker whose attempts wait in `bodies` until the test runs
  /// them.
  local_worker_actor worker(std::deque<std::function<void()>>& bodies) {
    worker_config wc;
    wc.worker_id = "cpu-0";
    wc.home = queue;
    wc.handlers = handlers;
    wc.clock_ms = [c = clock] { return *c; };
    wc.executor = [&bodies](std::function<void()> body) {
      bodies.push_back(std::move(body));
    };
    auto w = spawn_worker(sys, wc);
    sched.run();
    return w;
  }

  ~fixture() {
    // Timers still pending (delayed jobs) keep the queue alive otherwise,
    // and the actor system would wait for it.
    self->send_exit(queue, caf::exit_reason::user_shutdown);
    self->send_exit(store, caf::exit_reason::user_shutdown);
    sched.run();
  }

  caf::expected<job_record> submit(submit_request req) {
    caf::expected<job_record> out{caf::error{}};
    self->send(queue, submit_atom::value, std::move(req));
    sched.run();
    self->receive([&](job_record& rec) { out = std::move(rec); },
                  [&](caf::error& err) { out = std::move(err); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to a submit"); });
    return out;
  }

  void own(std::vector<int32_t> partitions) {
    self->send(queue, partitions_atom::value, std::move(partitions));
    sched.run();
    self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to partitions"); });
  }

  /// The refusal an adoption request got (within a second); `adopted` and
  /// `silent` name the failure when it was adopted or not answered.
  caf::error adoption_refusal(const char* adopted, const char* silent) {
    caf::error refused;
    self->receive([adopted](job_supervisor_actor&) { FAIL(adopted); },
                  [&](caf::error& err) { refused = err; },
                  caf::after(std::chrono::seconds{1}) >>
                      [silent] { FAIL(silent); });
    return refused;
  }

  queue_stats stats() {
    queue_stats out;
    self->send(queue, stats_atom::value);
    sched.run();
    self->receive([&](queue_stats& st) { out = std::move(st); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to stats"); });
    return out;
  }

  uint64_t waiting() {
    auto st = stats();
    return std::accumulate(st.depth.begin(), st.depth.end(), uint64_t{0})
           + st.delayed;
  }

  std::vector<job_event> events(const std::string& job_id) {
    std::vector<job_event> out;
    self->send(store, events_atom::value, job_id);
    sched.run();
    self->receive([&](std::vector<job_event>& evs) { out = std::move(evs); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to events"); });
    return out;
  }
};

// A store that forwards to `real` but fails recover request number
// `*fail_at` (1-based) with `unavailable`, and records what it was asked.
struct proxy_state {
  int recovers = 0;
  std::vector<std::tuple<int32_t, std::string>> asked;
};
using proxy_ptr = std::shared_ptr<proxy_state>;

store_actor::behavior_type proxy_impl(store_actor::pointer self,
                                      store_actor real, proxy_ptr ps,
                                      int fail_at) {
  return {
      [=](submit_atom a, job_event& ev) {
        return self->delegate(real, a, std::move(ev));
      },
      [=](submit_atom a, std::vector<job_event>& evs) {
        return self->delegate(real, a, std::move(evs));
      },
      [=](append_atom a, std::vector<job_event>& evs) {
        return self->delegate(real, a, std::move(evs));
      },
      [=](get_atom a, std::string& id) {
        return self->delegate(real, a, std::move(id));
      },
      [=](events_atom a, std::string& id) {
        return self->delegate(real, a, std::move(id));
      },
      [=](list_atom a, job_query& q) {
        return self->delegate(real, a, std::move(q));
      },
      [=](recover_atom a, int32_t p, std::string& after,
          uint32_t limit) -> caf::result<std::vector<job_record>> {
        ps->asked.emplace_back(p, after);
        if (++ps->recovers == fail_at)
          return make_error(errc::unavailable, "injected recovery failure");
        return self->delegate(real, a, p, std::move(after), limit);
      },
      [=](ping_atom a) { return self->delegate(real, a); },
      [=](partitions_atom a, std::vector<int32_t>& ps2,
          std::vector<int64_t>& es) {
        return self->delegate(real, a, std::move(ps2), std::move(es));
      },
      [=](webhooks_atom a, std::string& after, uint32_t limit) {
        return self->delegate(real, a, std::move(after), limit);
      },
      [=](nodes_atom a) { return self->delegate(real, a); },
      [=](control_atom a, int64_t at, std::string& k, std::string& key,
          std::string& s, std::string& d) {
        return self->delegate(real, a, at, std::move(k), std::move(key),
                              std::move(s), std::move(d));
      },
      [=](control_atom a, uint32_t n) { return self->delegate(real, a, n); },
      [=](control_atom a, std::string& kind) {
        return self->delegate(real, a, std::move(kind));
      },
      [=](permit_atom a, std::string& key, uint32_t limit, uint32_t most_new,
          std::vector<std::string>& ids) {
        return self->delegate(real, a, std::move(key), limit, most_new,
                              std::move(ids));
      },
  };
}

/// The fixture's partitions (0 and 1) but `p`.
std::vector<int32_t> all_but(int32_t p) {
  std::vector<int32_t> rest;
  for (int32_t q : {0, 1})
    if (q != p)
      rest.push_back(q);
  return rest;
}

submit_request noop(int64_t delay_ms = 0) {
  submit_request req;
  req.type = "noop";
  if (delay_ms > 0)
    req.delay_ms = delay_ms;
  return req;
}

/// A job running on the worker node slot `worker_id` (stand-in `sink`)
/// whose partition then goes to "another coordinator": the store says it
/// runs, the queue holds nothing of it.
job_record running_then_handed_away(fixture& f, const std::string& worker_id,
                                    const worker_actor& sink) {
  auto rec = f.submit(noop());
  REQUIRE(rec);
  f.self->send(f.queue, ready_atom::value, std::string{"cpu"}, worker_id, sink);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  f.own(all_but(partition_of_id(rec->job_id)));
  REQUIRE(f.stats().running == 0);
  return *rec;
}

} // namespace

TEST_CASE("a partition handed over leaves the queue and comes back by "
          "recovery when taken again",
          "[queue][partition]") {
  fixture f;
  // Keyless submissions take the owned partitions in turn: three ready and
  // one delayed job in each.
  std::map<int32_t, int> per;
  for (int i = 0; i < 6; ++i) {
    auto rec = f.submit(noop());
    REQUIRE(rec);
    ++per[partition_of_id(rec->job_id)];
  }
  for (int i = 0; i < 2; ++i)
    REQUIRE(f.submit(noop(60'000)));
  CHECK(per[0] == 3);
  CHECK(per[1] == 3);
  CHECK(f.waiting() == 8);
  auto before = f.stats();

  // Partition 1 goes: its four jobs leave, the store keeps them.
  f.own({0});
  CHECK(f.waiting() == 4);
  CHECK(f.stats().delayed == 1);
  // New keyless jobs go to partition 0 only; a keyed one whose partition
  // is 1 is refused, naming the partition.
  for (int i = 0; i < 3; ++i) {
    auto rec = f.submit(noop());
    REQUIRE(rec);
    CHECK(partition_of_id(rec->job_id) == 0);
  }
  std::string key;
  for (int i = 0; key.empty(); ++i)
    if (partition_of_key("", "k" + std::to_string(i), 2) == 1)
      key = "k" + std::to_string(i);
  auto keyed = noop();
  keyed.idempotency_key = key;
  auto refused = f.submit(keyed);
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), errc::not_owner));
  CHECK(describe(refused.error()).find("partition 1") != std::string::npos);

  // Nothing owned: nothing waits, and a submission is unavailable.
  f.own({});
  CHECK(f.waiting() == 0);
  CHECK(f.stats().admission_memory_bytes == 0);
  auto none = f.submit(noop());
  REQUIRE_FALSE(none);
  CHECK(is(none.error(), errc::unavailable));

  // Both back: recovered from the store, each job once.
  f.own({0, 1});
  CHECK(f.waiting() == 11);
  CHECK(f.stats().delayed == 2);
  CHECK(f.stats().admission_memory_bytes
        > before.admission_memory_bytes); // three more jobs than before
}

TEST_CASE("a running attempt of a partition handed over is abandoned "
          "without a write and settled by the recovery that takes it back",
          "[queue][partition]") {
  fixture f;
  std::deque<std::function<void()>> bodies;
  auto worker = f.worker(bodies);
  auto rec = f.submit(noop());
  REQUIRE(rec);
  auto partition = partition_of_id(rec->job_id);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  REQUIRE(bodies.size() == 1);
  auto written = f.events(rec->job_id).size(); // submitted, started

  auto rest = all_but(partition);
  f.own(rest);
  CHECK(f.stats().running == 0);
  // The handler ends after the hand-over: its outcome is not written.
  bodies.front()();
  bodies.pop_front();
  f.sched.run();
  CHECK(f.events(rec->job_id).size() == written);

  // Taken back: the attempt nobody runs is settled as lost (a retry) and
  // the job runs again, to completion, once.
  f.own({0, 1});
  f.sched.advance_time(std::chrono::seconds{120});
  f.sched.run();
  while (!bodies.empty()) {
    bodies.front()();
    bodies.pop_front();
    f.sched.run();
    f.sched.advance_time(std::chrono::seconds{120});
    f.sched.run();
  }
  auto evs = f.events(rec->job_id);
  int lost = 0;
  int completed = 0;
  for (const auto& ev : evs) {
    lost += ev.kind == event_kind::worker_lost ? 1 : 0;
    completed += ev.kind == event_kind::completed ? 1 : 0;
  }
  CHECK(lost == 1);
  CHECK(completed == 1);
}

TEST_CASE("a partition handed over while its recovery waits for a retry "
          "does not make the next partition skip its older jobs",
          "[queue][partition]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{drover::testing::testing_config(cfg)};
  auto& sched
      = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  caf::scoped_actor self{sys, true};
  auto handlers = std::make_shared<handler_registry>();
  REQUIRE_FALSE(handlers->register_handler(
      "noop", [](task_context&) { return task_outcome::success(); }));
  auto store = spawn_memory_store(sys);
  auto publisher = spawn_progress_publisher(sys);
  auto now = std::make_shared<int64_t>(epoch_ms);

  auto own = [&](const queue_actor& q, std::vector<int32_t> ps) {
    self->send(q, partitions_atom::value, std::move(ps));
    sched.run();
    self->receive([](ok_atom) {}, [](caf::error& e) { FAIL(describe(e)); },
                  caf::after(std::chrono::seconds{1}) >> [] { FAIL("none"); });
  };
  auto submit = [&](const queue_actor& q) {
    submit_request req;
    req.type = "noop";
    self->send(q, submit_atom::value, std::move(req));
    sched.run();
    std::string id;
    self->receive([&](job_record& r) { id = r.job_id; },
                  [](caf::error& e) { FAIL(describe(e)); },
                  caf::after(std::chrono::seconds{1}) >> [] { FAIL("none"); });
    return id;
  };

  // A helper queue writes the jobs: three in partition 1 (older ids), then
  // four in partition 0 (newer ids).
  {
    queue_options qo;
    qo.clock_ms = [now] { return *now; };
    qo.flow_clock_ms = qo.clock_ms; // adoption graces
    qo.seed = 7;
    qo.partitions = {1};
    qo.partition_count = 2;
    auto helper = spawn_queue(sys, {store, publisher, handlers}, qo);
    sched.run();
    for (int i = 0; i < 3; ++i) {
      *now = epoch_ms + 1 + i;
      CHECK(partition_of_id(submit(helper)) == 1);
    }
    own(helper, {0});
    for (int i = 0; i < 4; ++i) {
      *now = epoch_ms + 10 + i;
      CHECK(partition_of_id(submit(helper)) == 0);
    }
    self->send_exit(helper, caf::exit_reason::user_shutdown);
    sched.run();
  }

  // The queue under test owns {0, 1}, pages of 2; its second recovery read
  // (partition 0, after the first page) fails once.
  auto ps = std::make_shared<proxy_state>();
  auto proxy = sys.spawn(proxy_impl, store, ps, 2);
  queue_options qo;
  qo.clock_ms = [now] { return *now; };
  qo.flow_clock_ms = qo.clock_ms; // adoption graces
  qo.seed = 9;
  qo.partitions = {0, 1};
  qo.partition_count = 2;
  qo.recovery_page = 2;
  auto queue = spawn_queue(sys, {proxy, publisher, handlers}, qo);
  sched.run();
  REQUIRE(ps->recovers == 2); // page 1 of partition 0, then the failure

  // Partition 0 is handed over while the retry waits.
  own(queue, {1});
  // The retry fires.
  while (sched.trigger_timeouts() > 0)
    sched.run();

  for (auto& [p, after] : ps->asked)
    UNSCOPED_INFO("recover(partition " << p << ", after '" << after << "')");
  // Partition 1 is read from its start, not after partition 0's cursor.
  REQUIRE(ps->asked.size() >= 3);
  CHECK(std::get<0>(ps->asked[2]) == 1);
  CHECK(std::get<1>(ps->asked[2]).empty());
  self->send(queue, stats_atom::value);
  sched.run();
  queue_stats st;
  self->receive([&](queue_stats& s) { st = s; },
                caf::after(std::chrono::seconds{1}) >> [] { FAIL("none"); });
  auto waiting = std::accumulate(st.depth.begin(), st.depth.end(), uint64_t{0})
                 + st.delayed;
  // Partition 1 holds three queued jobs; the queue must wait with three.
  CHECK(waiting == 3);

  self->send_exit(queue, caf::exit_reason::user_shutdown);
  self->send_exit(proxy, caf::exit_reason::user_shutdown);
  self->send_exit(store, caf::exit_reason::user_shutdown);
  sched.run();
}

TEST_CASE("a hand-over is no failure to a circuit breaker",
          "[queue][partition]") {
  circuit_breaker b{breaker_config{}};
  CHECK_FALSE(b.counts("handed_over"));
}

TEST_CASE("an attempt of a local slot handed over is settled only after the "
          "hand-over grace",
          "[queue][partition]") {
  // Its last owner is alive and may still be stopping the handler: the new
  // owner waits before it runs the job again.
  fixture f{std::chrono::seconds{5}};
  std::deque<std::function<void()>> bodies;
  auto worker = f.worker(bodies);
  auto rec = f.submit(noop());
  REQUIRE(rec);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  auto lost = [&] {
    int n = 0;
    for (const auto& ev : f.events(rec->job_id))
      n += ev.kind == event_kind::worker_lost ? 1 : 0;
    return n;
  };
  f.own({});
  f.own({0, 1});
  *f.clock += 4000;
  f.sched.advance_time(std::chrono::seconds{4});
  f.sched.run();
  CHECK(lost() == 0);
  *f.clock += 2000;
  f.sched.advance_time(std::chrono::seconds{2});
  f.sched.run();
  CHECK(lost() == 1);
  bodies.clear();
  f.self->send_exit(worker, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a reconcile of a job whose attempt has a grace leaves it to the "
          "grace",
          "[queue][partition]") {
  // A write about the job failed while its coordinator was cut off from
  // PostgreSQL, so a reconcile is pending; the partition was handed over
  // and came back (recovered, its attempt waiting out the hand-over grace)
  // before the reconcile fired. Settling the attempt then would run the job
  // again while the old attempt may still run (share_fault_test).
  fixture f{std::chrono::seconds{5}};
  std::deque<std::function<void()>> bodies;
  auto worker = f.worker(bodies);
  auto rec = f.submit(noop());
  REQUIRE(rec);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  auto lost = [&] {
    int n = 0;
    for (const auto& ev : f.events(rec->job_id))
      n += ev.kind == event_kind::worker_lost ? 1 : 0;
    return n;
  };
  f.own({});
  f.own({0, 1});
  caf::anon_send(caf::actor_cast<caf::actor>(f.queue),
                 queue_detail::reconcile_atom::value, rec->job_id, int64_t{0},
                 std::string{"store_failed"}, std::string{"a write failed"});
  f.sched.run();
  CHECK(lost() == 0);
  *f.clock += 6000;
  f.sched.advance_time(std::chrono::seconds{6});
  f.sched.run();
  CHECK(lost() == 1); // by the grace, once
  bodies.clear();
  f.self->send_exit(worker, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a worker node's attempt in a partition not owned yet waits to be "
          "adopted until the partition is taken",
          "[queue][partition]") {
  // A sharing coordinator died: its worker nodes report their running
  // attempts to a survivor before the survivor takes the dead one's
  // partitions over. The attempt runs on, adopted, instead of being
  // stopped and run again.
  fixture f{{}, std::chrono::seconds{10}};
  auto sink = spawn_idle_slot(f.sys);
  const std::string worker_id = "w1.c1/cpu-0"; // a worker node's slot
  auto rec = running_then_handed_away(f, worker_id, sink);
  auto rest = all_but(partition_of_id(rec.job_id));

  auto ask_adoption = [&](const std::string& job_id) {
    f.self->send(f.queue, adopt_atom::value, job_id, uint32_t{1}, worker_id,
                 sink, *f.clock + 30000, true);
    f.sched.run();
  };
  // Nothing answers while the partition is not ours...
  ask_adoption(rec.job_id);
  bool answered = false;
  f.self->receive([&](job_supervisor_actor&) { answered = true; },
                  [&](caf::error&) { answered = true; },
                  caf::after(std::chrono::milliseconds{0}) >> [] {});
  CHECK_FALSE(answered);
  // ...and once it is taken and recovered, the attempt is adopted: a job
  // supervisor, no worker_lost, running again on the same slot.
  f.own({0, 1});
  f.sched.run();
  job_supervisor_actor js;
  f.self->receive([&](job_supervisor_actor& a) { js = a; },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("the adoption was not answered"); });
  CHECK(js);
  CHECK(f.stats().running == 1);
  *f.clock += 20000;
  f.sched.advance_time(std::chrono::seconds{20});
  f.sched.run();
  for (const auto& ev : f.events(rec.job_id))
    CHECK(ev.kind != event_kind::worker_lost);

  // A partition that does not become ours within the wait: refused then,
  // not before.
  f.own(rest);
  ask_adoption(rec.job_id);
  *f.clock += 9000;
  f.sched.advance_time(std::chrono::seconds{9});
  f.sched.run();
  answered = false;
  f.self->receive([&](job_supervisor_actor&) { answered = true; },
                  [&](caf::error&) { answered = true; },
                  caf::after(std::chrono::milliseconds{0}) >> [] {});
  CHECK_FALSE(answered);
  *f.clock += 2000;
  f.sched.advance_time(std::chrono::seconds{2});
  f.sched.run();
  auto refused = f.adoption_refusal("adopted outside its partition",
                                    "the adoption was not refused");
  CHECK(is(refused, errc::stale_attempt));
  f.self->send_exit(sink, caf::exit_reason::user_shutdown);
  if (js)
    f.self->send_exit(js, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a wait for adoption runs on the monotonic clock: the wall clock "
          "stepping back does not stretch it",
          "[queue][partition]") {
  fixture f{{}, std::chrono::seconds{10}};
  auto sink = spawn_idle_slot(f.sys);
  const std::string worker_id = "w1.c1/cpu-0";
  auto rec = running_then_handed_away(f, worker_id, sink);
  f.self->send(f.queue, adopt_atom::value, rec.job_id, uint32_t{1}, worker_id,
               sink, int64_t{0}, true);
  f.sched.run();
  // The wall clock steps back an hour (NTP, an operator) while it waits;
  // the wait of 10 s still ends after 10 s, not an hour later.
  *f.wall_step = -3600000;
  *f.clock += 11000;
  f.sched.advance_time(std::chrono::seconds{11});
  f.sched.run();
  auto refused = f.adoption_refusal("adopted outside its partition",
                                    "the wait outlived its 10 s");
  CHECK(is(refused, errc::stale_attempt));
  f.self->send_exit(sink, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("an adoption that can only happen past its asker's deadline is "
          "refused and nothing is adopted",
          "[queue][partition]") {
  // The link asking for the adoption gives up after its timeout and stops
  // the attempt; a queue that adopted it later would leave the job
  // processing with no attempt to end it.
  fixture f{{}, std::chrono::seconds{10}};
  auto sink = spawn_idle_slot(f.sys);
  const std::string worker_id = "w1.c1/cpu-0";
  auto rec = running_then_handed_away(f, worker_id, sink);
  f.self->send(f.queue, adopt_atom::value, rec.job_id, uint32_t{1}, worker_id,
               sink, *f.clock + 5000, true);
  f.sched.run();
  // The partition comes back after the deadline (within the wait). The
  // wall clock stepped back an hour meanwhile: the deadline is on the
  // monotonic clock, which it does not move.
  *f.wall_step = -3600000;
  *f.clock += 6000;
  f.sched.advance_time(std::chrono::seconds{6});
  f.sched.run();
  f.own({0, 1});
  f.sched.run();
  auto refused = f.adoption_refusal("adopted past the deadline",
                                    "the adoption was not answered");
  CHECK(is(refused, errc::unavailable));
  CHECK(f.stats().running == 0);
  f.self->send_exit(sink, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a job whose cancel was requested ends cancelled when its attempt "
          "is lost in a hand-over, and does not run again",
          "[queue][partition]") {
  fixture f;
  std::deque<std::function<void()>> bodies;
  auto worker = f.worker(bodies);
  auto rec = f.submit(noop());
  REQUIRE(rec);
  auto partition = partition_of_id(rec->job_id);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  f.self->send(f.queue, cancel_atom::value, rec->job_id,
               std::string{"user asked"});
  f.sched.run();
  f.self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to the cancel"); });
  auto rest = all_but(partition);
  f.own(rest); // handed over before the handler stopped
  f.own({0, 1});
  f.sched.advance_time(std::chrono::seconds{120});
  f.sched.run();
  while (!bodies.empty()) {
    bodies.front()();
    bodies.pop_front();
    f.sched.run();
  }
  std::vector<event_kind> kinds;
  for (const auto& ev : f.events(rec->job_id))
    kinds.push_back(ev.kind);
  INFO("events: " << kinds.size());
  CHECK(std::count(kinds.begin(), kinds.end(), event_kind::cancel_requested)
        == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), event_kind::cancelled) == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), event_kind::started) == 1);
  CHECK(std::count(kinds.begin(), kinds.end(), event_kind::retry_scheduled)
        == 0);
  CHECK(kinds.back() == event_kind::cancelled);
  CHECK(f.stats().running == 0);
  f.self->send_exit(worker, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("an attempt handed over by another coordinator is adopted without "
          "waiting, only for the machine it runs on",
          "[queue][partition]") {
  // A worker node offers an attempt its other coordinator handed over
  // (wait_for_owner false): refused at once while the partition is not
  // ours; once it is, adopted when asked by any agent of the machine it
  // ran on, never by another machine.
  fixture f{{}, std::chrono::seconds{10}};
  auto sink = spawn_idle_slot(f.sys);
  auto rec = running_then_handed_away(f, "w1.c1/cpu-0", sink);
  auto offer = [&](const std::string& worker_id) {
    f.self->send(f.queue, adopt_atom::value, rec.job_id, uint32_t{1}, worker_id,
                 sink, *f.clock + 30000, false);
    f.sched.run();
  };
  offer("w1.c3/borrowed-8");
  CHECK(is(f.adoption_refusal("adopted outside its partition",
                              "an offer was not refused at once"),
           errc::stale_attempt));
  f.own({0, 1}); // it comes back: recovered, waiting for adoption
  f.sched.run();
  offer("w2.c3/borrowed-8"); // another machine
  CHECK(is(f.adoption_refusal("adopted for another machine",
                              "the other machine was not refused"),
           errc::stale_attempt));
  CHECK(f.stats().running == 0);
  offer("w1.c3/borrowed-8"); // another agent of the same machine
  job_supervisor_actor js;
  f.self->receive([&](job_supervisor_actor& a) { js = a; },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("the offer was not adopted"); });
  CHECK(js);
  CHECK(f.stats().running == 1);
  for (const auto& ev : f.events(rec.job_id))
    CHECK(ev.kind != event_kind::worker_lost);
  f.self->send_exit(sink, caf::exit_reason::user_shutdown);
  if (js)
    f.self->send_exit(js, caf::exit_reason::user_shutdown);
  f.sched.run();
}
