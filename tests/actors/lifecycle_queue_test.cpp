// The job lifecycle on one node, deterministically, at the queue:
// submissions that fail validation, idempotency keys, resource classes, a
// queue rebuilding itself from the store, and flow control (rate limits,
// breakers, concurrency keys). CAF's test coordinator runs every actor on
// the test thread, the actor clock only moves when the test advances it,
// and handler bodies run when the test says so (a manual executor instead
// of a thread per attempt; tests/actors/lifecycle_fixture.hpp).

#include "actors/lifecycle_fixture.hpp"

using namespace drover::testing::lifecycle;

TEST_CASE("submissions that fail validation create nothing", "[lifecycle]") {
  fixture fx;
  submit_request bad;
  bad.type = "nope";
  auto r = fx.ask<job_record>(fx.handles->queue(), submit_atom::value, bad);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::invalid_request));
  bad.type = "noop";
  bad.max_attempts = 0;
  r = fx.ask<job_record>(fx.handles->queue(), submit_atom::value, bad);
  REQUIRE_FALSE(r);
  bad.max_attempts = 1;
  bad.input = std::string(2 * 1024 * 1024, ' ');
  r = fx.ask<job_record>(fx.handles->queue(), submit_atom::value, bad);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::too_large));
  auto all = fx.ask<std::vector<job_record>>(fx.handles->store(),
                                             list_atom::value, job_query{});
  REQUIRE(all);
  CHECK(all->empty());
  CHECK(fx.exec->bodies.empty());
}

TEST_CASE("idempotency keys: same spec same job, different spec conflict",
          "[lifecycle]") {
  fixture fx;
  submit_request req;
  req.type = "blocker";
  req.tenant = "acme";
  req.idempotency_key = "export-42";
  auto first = fx.submit(req);
  auto again = fx.submit(req);
  CHECK(again.job_id == first.job_id);
  req.input = R"({"other": true})";
  auto conflict
      = fx.ask<job_record>(fx.handles->queue(), submit_atom::value, req);
  REQUIRE_FALSE(conflict);
  CHECK(is(conflict.error(), errc::conflict));
  // Another tenant may use the same key.
  req.tenant = "globex";
  auto other = fx.submit(req);
  CHECK(other.job_id != first.job_id);
  CHECK(fx.exec->bodies.size() == 1); // one worker, the duplicate not queued
  auto all = fx.ask<std::vector<job_record>>(fx.handles->store(),
                                             list_atom::value, job_query{});
  REQUIRE(all);
  CHECK(all->size() == 2);
}

TEST_CASE("resource classes: jobs only run on workers of their class",
          "[lifecycle]") {
  fixture fx{{{"cpu", 1}, {"gpu", 1}}};
  fx.submit("noop", "\"cpu-job-1\"");
  fx.submit("noop", "\"cpu-job-2\"");
  fx.submit("render3d", "\"gpu-job\"");
  CHECK(fx.exec->bodies.size() == 2); // one per class
  while (fx.run_body()) {
  }
  CHECK(fx.j->ran.size() == 3);
  CHECK(std::count(fx.j->ran.begin(), fx.j->ran.end(), "\"gpu-job\"") == 1);
}

TEST_CASE("a queue rebuilds itself from the store's unfinished jobs",
          "[lifecycle][recovery]") {
  // A store that already holds jobs in every unfinished state, as after a
  // node restart; then a fresh queue and worker start on top of it.
  caf::actor_system_config cfg;
  caf::actor_system sys{testing_config(cfg)};
  auto& sched
      = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  caf::scoped_actor self{sys, true};
  auto clock_ms = [&sys] {
    return epoch_ms
           + std::chrono::duration_cast<milliseconds>(
                 sys.clock().now().time_since_epoch())
                 .count();
  };
  auto store = spawn_memory_store(sys);
  auto j = std::make_shared<journal>();
  auto handlers = make_handlers(j);
  auto put = [&](job_event ev) {
    self->send(store, submit_atom::value, ev);
    sched.run();
    self->receive([](job_record&) {},
                  [](caf::error& err) { FAIL(describe(err)); });
  };
  auto add = [&](std::vector<job_event> evs) {
    self->send(store, append_atom::value, evs);
    sched.run();
    self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); });
  };
  auto now = clock_ms();
  auto submitted = [&](const std::string& id, const std::string& type,
                       int64_t run_at = 0) {
    job_event ev;
    ev.job_id = id;
    ev.kind = ek::submitted;
    ev.at_ms = now;
    ev.spec.type = type;
    ev.spec.input = "\"" + id + "\"";
    ev.spec.max_attempts = 3;
    ev.spec.backoff = {1000, 60000, 2.0, 0.0};
    ev.spec.run_at_ms = run_at;
    return ev;
  };
  auto event = [&](const std::string& id, ek kind, uint32_t attempt) {
    job_event ev;
    ev.job_id = id;
    ev.kind = kind;
    ev.attempt = attempt;
    ev.at_ms = now;
    return ev;
  };
  put(submitted("a-queued", "noop"));
  put(submitted("b-scheduled", "noop", now + 5000));
  put(submitted("c-retrying", "flaky"));
  auto retry = event("c-retrying", ek::retry_scheduled, 1);
  retry.next_attempt_at_ms = now + 3000;
  add({event("c-retrying", ek::started, 1), retry});
  put(submitted("d-running", "staged"));
  auto cp = event("d-running", ek::checkpointed, 1);
  cp.checkpoint = "rendered";
  add({event("d-running", ek::started, 1), cp});

  auto publisher = spawn_progress_publisher(sys);
  queue_options qo;
  qo.clock_ms = clock_ms;
  qo.seed = 5;
  auto queue = spawn_queue(sys, {store, publisher, handlers}, qo);
  auto exec = std::make_shared<manual_executor>();
  worker_config wc;
  wc.worker_id = "cpu-0";
  wc.home = queue;
  wc.handlers = handlers;
  wc.clock_ms = clock_ms;
  wc.executor = [exec](std::function<void()> body) {
    exec->bodies.push_back(std::move(body));
  };
  auto worker = spawn_worker(sys, wc);
  sched.run();
  auto run_body = [&] {
    if (exec->bodies.empty())
      return false;
    auto body = std::move(exec->bodies.front());
    exec->bodies.pop_front();
    body();
    sched.run();
    return true;
  };
  auto get = [&](const std::string& id) {
    job_record rec;
    self->send(store, get_atom::value, id);
    sched.run();
    self->receive([&](job_record& r) { rec = std::move(r); },
                  [](caf::error& err) { FAIL(describe(err)); });
    return rec;
  };
  // The interrupted attempt is settled by the retry policy at once.
  auto d = get("d-running");
  CHECK(d.status == job_status::retrying);
  CHECK(d.error.code == "node_restarted");
  // The queued job runs first.
  REQUIRE(run_body());
  CHECK(j->ran.back() == "\"a-queued\"");
  sched.advance_time(1000ms); // d's backoff
  sched.run();
  REQUIRE(run_body());
  CHECK(j->ran.back() == "\"d-running\"");
  CHECK(j->seen_checkpoint["2"] == "rendered"); // resumed, not restarted
  CHECK(get("d-running").status == job_status::completed);
  sched.advance_time(2000ms); // c's retry time (now + 3 s)
  sched.run();
  REQUIRE(run_body());
  CHECK(j->ran.back() == "\"c-retrying\"");
  sched.advance_time(2000ms); // b's run_at (now + 5 s)
  sched.run();
  REQUIRE(run_body());
  CHECK(j->ran.back() == "\"b-scheduled\"");
  for (auto id : {"a-queued", "b-scheduled", "c-retrying", "d-running"})
    CHECK(get(id).status == job_status::completed);
  stop_actors(self, sched,
              {caf::actor_cast<caf::actor>(queue),
               caf::actor_cast<caf::actor>(worker),
               caf::actor_cast<caf::actor>(publisher),
               caf::actor_cast<caf::actor>(store)});
}

// -- flow control: found by an attacker's review ------------------------------

TEST_CASE("flow: a job woken for a token whose class has no free worker does "
          "not hold the gate from another class's job",
          "[lifecycle][flow]") {
  fixture fx{{{"cpu", 1}, {"gpu", 1}}, 10s, [](queue_options& q) {
               q.flow.rates["r"] = {2, 1, {}};
             }};
  for (int i = 0; i < 2; ++i) {
    submit_request g;
    g.type = "render3d"; // class gpu
    g.input = "\"gpu" + std::to_string(i) + "\"";
    g.rate_limit_key = "r";
    REQUIRE(fx.ask<job_record>(fx.handles->queue(), submit_atom::value, g));
  }
  fx.advance(600ms); // the first token: gpu0 runs (its body is held)
  REQUIRE(fx.exec->bodies.size() == 1);
  submit_request c;
  c.type = "noop";
  c.input = "\"cpu\"";
  c.rate_limit_key = "r";
  REQUIRE(fx.ask<job_record>(fx.handles->queue(), submit_atom::value, c));
  // gpu1 waits for the gpu worker; the cpu job takes the next token.
  for (int i = 0; i < 4; ++i)
    fx.advance(500ms);
  CHECK(fx.exec->bodies.size() == 2);
}

TEST_CASE("flow: thousands of jobs parked on a concurrency key move behind "
          "an open breaker without deepening the stack",
          "[lifecycle][flow]") {
  fixture fx{{{"cpu", 2}}, 10s, [](queue_options& q) {
               q.concurrency["fatal"] = {1, false};
               q.flow.breakers["b"] = {1, 600000, 1, {}, {}};
             }};
  fx.advance(1ms);
  const int n = 30000; // the recursion crashed at about 10,000
  for (int i = 0; i < n; ++i) {
    submit_request r;
    r.type = "fatal";
    r.input = "\"" + std::to_string(i) + "\"";
    r.breaker_key = "b";
    r.max_attempts = 1;
    REQUIRE(fx.ask<job_record>(fx.handles->queue(), submit_atom::value, r));
  }
  REQUIRE(fx.run_body()); // fails: the breaker opens
  fx.run_body();          // the next, if one started before it opened
  auto flow = fx.ask<std::string>(fx.handles->queue(), flow_atom::value);
  REQUIRE(flow);
  CHECK(flow->find("\"state\":\"open\"") != std::string::npos);
  auto st = fx.ask<queue_stats>(fx.handles->queue(), stats_atom::value);
  REQUIRE(st);
  CHECK(st->depth[1] >= static_cast<uint64_t>(n - 2)); // all still waiting
}
