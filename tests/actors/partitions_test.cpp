// A queue whose partitions come and go (actors/queue_partitions.cpp,
// --share-partitions): handing a partition over takes its waiting jobs,
// timers and running attempts out of the queue without a write; taking it
// recovers them from the store. CAF's deterministic test coordinator. The
// recovery-retry case and its proxy store came from the review of the
// change (helper-24), which reproduced the bug with them.

#include "support/partition_fixture.hpp"

using namespace drover;
using namespace drover::testing::partitions;

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

namespace {

/// A second queue over the fixture's store, as a coordinator sharing the
/// partitions sees it: it owns none of the two, and reads the control log
/// every second; over `store` if given.
queue_actor spawn_sharing_queue(fixture& f, uint64_t seed,
                                flow_limits flow = {}, store_actor store = {}) {
  queue_options qo;
  qo.clock_ms = [c = f.clock] { return *c; };
  qo.flow_clock_ms = qo.clock_ms;
  qo.seed = seed;
  qo.partitions = {};
  qo.partition_count = 2;
  qo.settings_poll = std::chrono::seconds{1};
  qo.flow = std::move(flow);
  auto q = spawn_queue(
      f.sys,
      {store ? store : f.store, spawn_progress_publisher(f.sys), f.handlers},
      qo);
  f.sched.run();
  return q;
}

/// Asks `to` through the fixture's scoped actor: its answer as text, or as
/// a number (-1: none); ok answers neither.
template <class To, class... Ts>
std::pair<std::string, int64_t> ask_any(fixture& f, const To& to, Ts... xs) {
  std::string out;
  int64_t last = -1;
  f.self->send(to, xs...);
  f.sched.run();
  f.self->receive([&](std::string& v) { out = std::move(v); }, [&](ok_atom) {},
                  [&](int64_t v) { last = v; },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer"); });
  return {out, last};
}

/// Writes a control-log entry to the fixture's store as another coordinator
/// would; while `late`, `ps`'s proxy leaves it out of follow reads (its
/// sequence taken, its transaction not committed yet).
void write_entry(fixture& f, proxy_state& ps, const std::string& kind,
                 const std::string& key, const std::string& state,
                 const std::string& detail, bool late = false) {
  auto seq
      = ask_any(f, f.store, control_atom::value, get_atom::value).second + 1;
  if (late)
    ps.uncommitted.insert(std::to_string(seq));
  ask_any(f, f.store, control_atom::value, *f.clock, kind, key, state, detail);
}

} // namespace

TEST_CASE("a rate limit set at run time at one queue applies at another "
          "sharing the store within its settings poll",
          "[queue][partition][flow]") {
  fixture f;
  auto other = spawn_sharing_queue(f, 13);
  auto view_of = [&](const queue_actor& q) {
    std::string out;
    f.self->send(q, flow_atom::value);
    f.sched.run();
    f.self->receive([&](std::string& v) { out = std::move(v); },
                    [](caf::error& err) { FAIL(describe(err)); },
                    caf::after(std::chrono::seconds{1}) >>
                        [] { FAIL("no answer to flow"); });
    return out;
  };
  auto set = [&](const std::string& spec,
                 const std::string& kind = "rate_limit") {
    f.self->send(f.queue, flow_atom::value, kind, std::string{"mail"}, spec);
    f.sched.run();
    f.self->receive([](std::string&) {},
                    [](caf::error& err) { FAIL(describe(err)); },
                    caf::after(std::chrono::seconds{1}) >>
                        [] { FAIL("no answer to the setting"); });
  };
  auto poll = [&] {
    *f.clock += 1000;
    f.sched.advance_time(std::chrono::seconds{1});
    f.sched.run();
  };
  set("rate=7,burst=3");
  CHECK(view_of(other).find("\"key\":\"mail\"") == std::string::npos);
  poll();
  CHECK(view_of(other).find("\"key\":\"mail\",\"rate_per_second\":7,")
        != std::string::npos);
  set("rate=9,burst=3");
  poll();
  CHECK(view_of(other).find("\"key\":\"mail\",\"rate_per_second\":9,")
        != std::string::npos);
  // The queue that made the setting keeps it; nothing else changed.
  CHECK(view_of(f.queue).find("\"key\":\"mail\",\"rate_per_second\":9,")
        != std::string::npos);
  // A breaker too.
  set("failures=3,cooldown=10", "breaker");
  poll();
  CHECK(view_of(other).find("\"failures_to_open\":3,") != std::string::npos);
  f.self->send_exit(other, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a breaker opened at another coordinator sharing the store opens "
          "here within the settings poll, once",
          "[queue][partition][flow]") {
  fixture f;
  flow_limits flow;
  for (const auto* key : {"mail", "sms", "push"})
    flow.breakers[key] = {2, 30000, 1, {}, {}};
  // Its own writes of an opening go through a store that refuses some.
  auto ps = std::make_shared<proxy_state>();
  auto proxy = f.sys.spawn(proxy_impl, f.store, ps, 0);
  auto q = spawn_sharing_queue(f, 14, flow, proxy);
  auto ask = [&](auto... xs) {
    std::string out;
    f.self->send(xs...);
    f.sched.run();
    f.self->receive(
        [&](std::string& v) { out = std::move(v); }, [&](ok_atom) {},
        [](caf::error& err) { FAIL(describe(err)); },
        caf::after(std::chrono::seconds{1}) >> [] { FAIL("no answer"); });
    return out;
  };
  auto state = [&](const std::string& key = "mail") {
    auto view = ask(q, flow_atom::value);
    auto entry = "\"key\":\"" + key + "\",\"state\":\"";
    auto at = view.find(entry);
    REQUIRE(at != std::string::npos);
    at += entry.size();
    return view.substr(at, view.find('"', at) - at);
  };
  auto openings = [&] {
    auto log = ask(f.store, control_atom::value, uint32_t{100});
    size_t n = 0;
    for (auto at = log.find("\"state\":\"open\""); at != std::string::npos;
         at = log.find("\"state\":\"open\"", at + 1))
      ++n;
    return n;
  };
  auto poll = [&] {
    *f.clock += 1000;
    f.sched.advance_time(std::chrono::seconds{1});
    f.sched.run();
  };
  poll();
  CHECK(state() == "closed");
  // Another coordinator's breaker opens (its entry in the shared log).
  auto opened_at = *f.clock - 500;
  ask(f.store, control_atom::value, opened_at, std::string{"breaker"},
      std::string{"mail"}, std::string{"open"},
      std::string{"2 failure(s) in a row, the last smtp_down"});
  CHECK(state() == "closed");
  ps->fail_openings = 1;
  poll();
  CHECK(state() == "open");
  // Recorded here with the time it opened there — the write refused once,
  // so at the next poll: the one entry more is not followed again, and the
  // log gets no echo.
  CHECK(openings() == 1);
  poll();
  CHECK(openings() == 2);
  poll();
  poll();
  CHECK(openings() == 2);
  CHECK(ask(f.store, control_atom::value, uint32_t{1})
            .find("opened at another coordinator: 2 failure(s) in a row")
        != std::string::npos);
  auto opening = [&](const std::string& key) {
    ask(f.store, control_atom::value, *f.clock, std::string{"breaker"}, key,
        std::string{"open"}, std::string{"down"});
  };
  // A refused write of an opening is not written again once its cooldown
  // is over: nobody would follow it.
  opening("sms");
  ps->fail_openings = 1000;
  poll();
  CHECK(state("sms") == "open");
  CHECK(openings() == 3);
  *f.clock += 30000;
  f.sched.advance_time(std::chrono::seconds{30});
  f.sched.run();
  ps->fail_openings = 0;
  poll();
  CHECK(openings() == 3);
  // More openings than one read answers: the next page is read at once.
  auto reads = ps->follow_reads;
  for (uint32_t i = 0; i < max_follow_read; ++i)
    opening("not-declared-here");
  opening("push");
  poll();
  CHECK(state("push") == "open");
  CHECK(ps->follow_reads == reads + 2);
  f.self->send_exit(q, caf::exit_reason::user_shutdown);
  f.self->send_exit(proxy, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("settings and openings committed after a later entry was read are "
          "followed at the next poll, though the log's last sequence did not "
          "move, and an older setting read late undoes no newer one",
          "[queue][partition][flow]") {
  fixture f;
  flow_limits flow;
  flow.breakers["mail"] = {2, 30000, 1, {}, {}};
  auto ps = std::make_shared<proxy_state>();
  auto proxy = f.sys.spawn(proxy_impl, f.store, ps, 0);
  auto q = spawn_sharing_queue(f, 15, flow, proxy);
  auto view = [&] { return ask_any(f, q, flow_atom::value).first; };
  auto poll = [&] {
    *f.clock += 1000;
    f.sched.advance_time(std::chrono::seconds{1});
    f.sched.run();
  };
  auto breaker = [&] {
    auto v = view();
    auto at = v.find("\"key\":\"mail\",\"state\":\"");
    REQUIRE(at != std::string::npos);
    return v.substr(at + 22, v.find('"', at + 22) - at - 22);
  };
  poll();
  write_entry(f, *ps, "breaker", "mail", "open", "down", true);
  write_entry(f, *ps, "rate_limit", "sms", "configured", "rate=5,burst=1",
              true);
  write_entry(f, *ps, "rate_limit", "push", "configured", "rate=5,burst=1",
              true);
  write_entry(f, *ps, "rate_limit", "push", "configured", "rate=6,burst=1");
  poll();
  CHECK(view().find("\"key\":\"push\",\"rate_per_second\":6,")
        != std::string::npos);
  CHECK(view().find("\"key\":\"sms\"") == std::string::npos);
  CHECK(breaker() == "closed");
  // Committed now; the log's last sequence is where it was.
  ps->uncommitted.clear();
  poll();
  CHECK(breaker() == "open");
  CHECK(view().find("\"key\":\"sms\",\"rate_per_second\":5,")
        != std::string::npos);
  CHECK(view().find("\"key\":\"push\",\"rate_per_second\":6,")
        != std::string::npos);
  // Read while the log moves (its copy of the opening moved it) and for
  // five polls after; then not until it moves again.
  for (int i = 0; i < 6; ++i)
    poll();
  auto reads = ps->follow_reads;
  poll();
  poll();
  CHECK(ps->follow_reads == reads);
  write_entry(f, *ps, "rate_limit", "sms", "configured", "rate=8,burst=1");
  poll();
  CHECK(ps->follow_reads == reads + 1);
  CHECK(view().find("\"key\":\"sms\",\"rate_per_second\":8,")
        != std::string::npos);
  f.self->send_exit(q, caf::exit_reason::user_shutdown);
  f.self->send_exit(proxy, caf::exit_reason::user_shutdown);
  f.sched.run();
}

TEST_CASE("a setting committed 150 sequences after a later entry was read is "
          "followed, one committed later than the follow window by the "
          "whole-log read",
          "[queue][partition][flow]") {
  fixture f;
  auto ps = std::make_shared<proxy_state>();
  auto proxy = f.sys.spawn(proxy_impl, f.store, ps, 0);
  auto q = spawn_sharing_queue(f, 16, {}, proxy);
  auto poll = [&] {
    *f.clock += 1000;
    f.sched.advance_time(std::chrono::seconds{1});
    f.sched.run();
  };
  auto rate = [&](const std::string& key) {
    f.self->send(q, flow_atom::value);
    f.sched.run();
    std::string view;
    f.self->receive([&](std::string& v) { view = std::move(v); },
                    [](caf::error& err) { FAIL(describe(err)); });
    return view.find("\"key\":\"" + key + "\",\"rate_per_second\":");
  };
  poll();
  auto full = ps->full_reads;
  // Sequences taken meanwhile by other coordinators' state changes (not
  // followed): the late setting's is 150 before the last one read.
  write_entry(f, *ps, "rate_limit", "mail", "configured", "rate=5,burst=1",
              true);
  for (int i = 0; i < 150; ++i)
    write_entry(f, *ps, "breaker", "other-" + std::to_string(i), "closed", "");
  poll();
  CHECK(rate("mail") == std::string::npos);
  ps->uncommitted.clear();
  poll();
  CHECK(rate("mail") != std::string::npos);
  // Committed later than five polls: the next whole-log read has it.
  write_entry(f, *ps, "rate_limit", "sms", "configured", "rate=5,burst=1",
              true);
  for (int i = 0; i < 7; ++i)
    poll();
  ps->uncommitted.clear();
  poll();
  CHECK(rate("sms") == std::string::npos);
  CHECK(ps->full_reads == full);
  for (int i = 0; i < 300 && rate("sms") == std::string::npos; ++i)
    poll();
  CHECK(ps->full_reads == full + 1);
  CHECK(rate("sms") != std::string::npos);
  f.self->send_exit(q, caf::exit_reason::user_shutdown);
  f.self->send_exit(proxy, caf::exit_reason::user_shutdown);
  f.sched.run();
}
