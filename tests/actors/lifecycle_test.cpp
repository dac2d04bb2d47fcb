// The job lifecycle on one node, deterministically: CAF's test coordinator
// runs every actor on the test thread, the actor clock only moves when the
// test advances it, and handler bodies run when the test says so (a manual
// executor instead of a thread per attempt).

#include "actors/lifecycle_fixture.hpp"

using namespace drover::testing::lifecycle;

TEST_CASE("a job is acknowledged, runs on a worker and completes",
          "[lifecycle]") {
  fixture fx;
  auto rec = fx.submit("noop", R"({"n": 1})");
  CHECK(rec.status == job_status::queued);
  CHECK(rec.job_id.size() == 16);       // "j" + 13 digits + "-0"
  REQUIRE(fx.exec->bodies.size() == 1); // dispatched to the only worker
  CHECK(fx.get(rec.job_id).status == job_status::processing);
  REQUIRE(fx.run_body());
  auto done = fx.get(rec.job_id);
  CHECK(done.status == job_status::completed);
  CHECK(done.result == R"({"ok": true})");
  CHECK(done.attempt == 1);
  CHECK(done.worker_id == "cpu-0");
  CHECK(fx.kinds(rec.job_id)
        == std::vector<ek>{ek::submitted, ek::started, ek::completed});
  // The handler sees the input in its stored, canonical form.
  CHECK(fx.j->ran == std::vector<std::string>{R"({"n":1})"});
  auto s = fx.stats();
  CHECK(s.completed == 1);
  CHECK(s.running == 0);
  CHECK(s.idle_workers == 1);
}

TEST_CASE("a type only worker nodes run is accepted and waits, while local "
          "workers run the others",
          "[lifecycle]") {
  fixture fx;
  auto remote = fx.submit("remote_only", "7"); // ahead of the low one
  auto local = fx.submit("noop", "1", 2);
  REQUIRE(fx.exec->bodies.size() == 1); // the noop, not the remote type
  REQUIRE(fx.run_body());
  CHECK(fx.get(local.job_id).status == job_status::completed);
  CHECK(fx.get(remote.job_id).status == job_status::queued);
  CHECK(fx.j->ran == std::vector<std::string>{"1"});
  CHECK(fx.stats().idle_workers == 1); // idle, with a job it cannot run
}

TEST_CASE("priorities order ready jobs and aging bounds a low job's wait",
          "[lifecycle]") {
  fixture fx{{{"cpu", 1}}, 10s};
  auto blocker = fx.submit("noop", "\"busy\"");
  auto low = fx.submit("noop", "\"low\"", 2);
  std::vector<job_record> early_high;
  for (int i = 0; i < 5; ++i)
    early_high.push_back(fx.submit("noop", "\"high-early\"", 0));
  auto normal = fx.submit("noop", "\"normal\"", 1);
  // A flood of high jobs keeps arriving after the low one has aged 2x10s.
  fx.advance(25s);
  for (int i = 0; i < 5; ++i)
    fx.submit("noop", "\"high-late\"", 0);
  while (fx.run_body()) {
  }
  std::vector<std::string> expected{"\"busy\""};
  for (int i = 0; i < 5; ++i)
    expected.push_back("\"high-early\"");
  expected.push_back("\"normal\""); // key t+10s
  expected.push_back("\"low\"");    // key t+20s: before highs from t+25s
  for (int i = 0; i < 5; ++i)
    expected.push_back("\"high-late\"");
  CHECK(fx.j->ran == expected);
  auto s = fx.stats();
  CHECK(s.dispatched[0] == 10);
  CHECK(s.dispatched[1] == 2);
  CHECK(s.dispatched[2] == 1);
}

TEST_CASE("stats report depth and the oldest job's age per priority",
          "[lifecycle]") {
  fixture fx;
  fx.submit("noop", "\"busy\"");
  fx.submit("noop", "\"a\"", 2);
  fx.advance(3s);
  fx.submit("noop", "\"b\"", 2);
  fx.submit("noop", "\"c\"", 0);
  auto s = fx.stats();
  CHECK(s.depth[0] == 1);
  CHECK(s.depth[1] == 0);
  CHECK(s.depth[2] == 2);
  CHECK(s.oldest_age_ms[2] == 3000);
  CHECK(s.oldest_age_ms[0] == 0);
  CHECK(s.running == 1);
}

TEST_CASE("delayed and scheduled jobs wait for their time without polling",
          "[lifecycle]") {
  fixture fx;
  submit_request req;
  req.type = "noop";
  req.delay_ms = 5000;
  auto delayed = fx.submit(req);
  CHECK(delayed.status == job_status::scheduled);
  CHECK(delayed.spec.run_at_ms == fx.now() + 5000);
  submit_request at;
  at.type = "noop";
  at.input = "\"at\"";
  // An RFC 3339 time 2 s from the test clock's now.
  auto when = (fx.now() + 2000) / 1000;
  std::time_t tt = static_cast<std::time_t>(when);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&tt));
  at.run_at = std::string{buf};
  auto scheduled = fx.submit(at);
  CHECK(scheduled.status == job_status::scheduled);
  CHECK(fx.stats().delayed == 2);
  auto delayed_of_type = [&] {
    auto figs = fx.stats().by_type;
    REQUIRE(figs.size() == 1);
    CHECK(figs[0].job_type == "noop");
    return figs[0].delayed;
  };
  CHECK(delayed_of_type() == 2);
  CHECK(fx.exec->bodies.empty());
  fx.advance(milliseconds{when * 1000 - fx.now() - 1});
  CHECK(fx.exec->bodies.empty()); // not a millisecond early
  fx.advance(1ms);
  REQUIRE(fx.run_body());
  CHECK(fx.j->ran == std::vector<std::string>{"\"at\""});
  CHECK(delayed_of_type() == 1); // the type's count follows the timer
  fx.advance(milliseconds{delayed.spec.run_at_ms - fx.now() - 1});
  CHECK(fx.exec->bodies.empty());
  fx.advance(1ms);
  REQUIRE(fx.run_body());
  CHECK(fx.get(delayed.job_id).status == job_status::completed);
  CHECK(delayed_of_type() == 0);
  CHECK(fx.stats().by_type[0].completed == 2);
  CHECK(fx.kinds(delayed.job_id)
        == std::vector<ek>{ek::submitted, ek::queued, ek::started,
                           ek::completed});
}

TEST_CASE("retries back off exponentially, then the job is dead-lettered",
          "[lifecycle]") {
  fixture fx;
  fx.j->flaky_failures_left = 100;
  auto rec = fx.submit("flaky");
  REQUIRE(fx.run_body()); // attempt 1 fails
  auto r1 = fx.get(rec.job_id);
  CHECK(r1.status == job_status::retrying);
  CHECK(r1.retry_count == 1);
  CHECK(r1.error.code == "flaky");
  fx.advance(999ms);
  CHECK(fx.exec->bodies.empty()); // backoff: 1000 ms, not less
  fx.advance(1ms);
  REQUIRE(fx.run_body()); // attempt 2 fails
  fx.advance(1999ms);
  CHECK(fx.exec->bodies.empty()); // backoff: 2000 ms
  fx.advance(1ms);
  REQUIRE(fx.run_body()); // attempt 3 fails: max_attempts reached
  auto failed = fx.get(rec.job_id);
  CHECK(failed.status == job_status::failed);
  CHECK(failed.dead_lettered);
  CHECK(failed.attempt == 3);
  CHECK(failed.error.message.find("attempts exhausted (3)")
        != std::string::npos);
  CHECK(fx.kinds(rec.job_id)
        == std::vector<ek>{ek::submitted, ek::started, ek::retry_scheduled,
                           ek::queued, ek::started, ek::retry_scheduled,
                           ek::queued, ek::started, ek::failed,
                           ek::dead_lettered});
  fx.advance(60s);
  CHECK(fx.exec->bodies.empty()); // never runs again by itself
}

TEST_CASE("the dead-letter queue: list, inspect, redrive, purge",
          "[lifecycle]") {
  fixture fx;
  auto a = fx.submit("fatal", "\"a\"");
  REQUIRE(fx.run_body());
  auto b = fx.submit("fatal", "\"b\"");
  REQUIRE(fx.run_body());
  auto c = fx.submit("fatal", "\"c\"");
  REQUIRE(fx.run_body());
  job_query q;
  q.dead_lettered = true;
  auto dlq = fx.ask<std::vector<job_record>>(fx.handles->store(),
                                             list_atom::value, q);
  REQUIRE(dlq);
  REQUIRE(dlq->size() == 3);
  CHECK((*dlq)[0].error.code == "bad_input");
  CHECK((*dlq)[0].attempt == 1); // permanent: no retries
  // Redrive one: it runs again (and now succeeds).
  fx.j->fail_permanently = false;
  auto r = fx.ask<ok_atom>(fx.handles->queue(), redrive_atom::value, a.job_id);
  REQUIRE(r);
  REQUIRE(fx.run_body());
  auto ra = fx.get(a.job_id);
  CHECK(ra.status == job_status::completed);
  CHECK(ra.attempt == 2);
  // Purge one: it leaves the DLQ, stays failed, can't be redriven.
  REQUIRE(fx.ask<ok_atom>(fx.handles->queue(), purge_atom::value, b.job_id));
  CHECK(fx.get(b.job_id).status == job_status::failed);
  CHECK_FALSE(fx.get(b.job_id).dead_lettered);
  CHECK_FALSE(
      fx.ask<ok_atom>(fx.handles->queue(), redrive_atom::value, b.job_id));
  // Redrive all: only c is left.
  auto n = fx.ask<uint32_t>(fx.handles->queue(), redrive_atom::value,
                            all_atom::value);
  REQUIRE(n);
  CHECK(*n == 1);
  REQUIRE(fx.run_body());
  CHECK(fx.get(c.job_id).status == job_status::completed);
  dlq = fx.ask<std::vector<job_record>>(fx.handles->store(), list_atom::value,
                                        q);
  REQUIRE(dlq);
  CHECK(dlq->empty());
  CHECK(fx.kinds(a.job_id)
        == std::vector<ek>{ek::submitted, ek::started, ek::failed,
                           ek::dead_lettered, ek::redriven, ek::started,
                           ek::completed});
}

TEST_CASE("a per-attempt timeout stops the attempt and the retry policy "
          "applies",
          "[lifecycle]") {
  fixture fx;
  submit_request req;
  req.type = "blocker";
  req.timeout_ms = 1000;
  req.max_attempts = 2;
  auto rec = fx.submit(req);
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.advance(999ms);
  CHECK(fx.get(rec.job_id).status == job_status::processing);
  fx.advance(1ms);        // timeout: cooperative cancel of the attempt
  REQUIRE(fx.run_body()); // the handler sees cancelled() and stops
  auto r = fx.get(rec.job_id);
  CHECK(r.status == job_status::retrying);
  CHECK(r.error.code == "timeout");
  fx.advance(1000ms);
  REQUIRE(fx.exec->bodies.size() == 1); // attempt 2
  fx.advance(1000ms);                   // times out as well
  fx.advance(500ms);                    // ...and ignores it past the grace
  r = fx.get(rec.job_id);
  CHECK(r.status == job_status::failed);
  CHECK(r.error.code == "timeout");
  CHECK(r.dead_lettered);
  // The abandoned attempt still holds its worker until its body returns:
  // the next job waits rather than oversubscribing the slot.
  fx.submit("noop", "\"next\"");
  CHECK(fx.exec->bodies.size() == 1);
  REQUIRE(fx.run_body()); // the abandoned body finishes (success, fenced)
  CHECK(fx.get(rec.job_id).status == job_status::failed);
  REQUIRE(fx.run_body()); // now the next job runs
  CHECK(fx.j->ran.back() == "\"next\"");
}

TEST_CASE("cancelling queued and scheduled jobs", "[lifecycle]") {
  fixture fx;
  fx.submit("noop", "\"busy\"");
  auto queued = fx.submit("noop", "\"never\"");
  submit_request later;
  later.type = "noop";
  later.delay_ms = 60000;
  auto scheduled = fx.submit(later);
  REQUIRE(fx.ask<ok_atom>(fx.handles->publisher(), subscribe_atom::value,
                          queued.job_id, caf::actor{fx.self}));
  REQUIRE_FALSE(fx.cancel(queued.job_id));
  REQUIRE_FALSE(fx.cancel(scheduled.job_id));
  CHECK(fx.get(queued.job_id).status == job_status::cancelled);
  CHECK(fx.get(scheduled.job_id).status == job_status::cancelled);
  auto msgs = fx.inbox();
  REQUIRE(msgs.size() == 1);
  CHECK(msgs[0].match_element<final_atom>(0));
  while (fx.run_body()) {
  }
  fx.advance(61s);
  CHECK(fx.j->ran == std::vector<std::string>{"\"busy\""});
  // A finished job cannot be cancelled.
  auto err = fx.cancel(queued.job_id);
  CHECK(err);
  // A conflict that says the job's status, not the state machine's view.
  CHECK(is(err, errc::conflict));
  CHECK(describe(err).find("is cancelled: only a job that has not finished "
                           "can be cancelled")
        != std::string::npos);
  CHECK(fx.stats().cancelled == 2);
}

TEST_CASE("cancelling a running job: cooperative, then forced after the grace",
          "[lifecycle]") {
  fixture fx;
  auto coop = fx.submit("blocker", "\"coop\"");
  REQUIRE_FALSE(fx.cancel(coop.job_id));
  CHECK(fx.get(coop.job_id).cancel_requested);
  REQUIRE(fx.run_body()); // sees cancelled() at once
  CHECK(fx.get(coop.job_id).status == job_status::cancelled);
  CHECK(fx.kinds(coop.job_id)
        == std::vector<ek>{ek::submitted, ek::started, ek::cancel_requested,
                           ek::cancelled});
  // This one ignores the request: forced after 500 ms.
  auto stubborn = fx.submit("blocker", "\"stubborn\"");
  REQUIRE(fx.exec->bodies.size() == 1);
  REQUIRE_FALSE(fx.cancel(stubborn.job_id));
  fx.advance(499ms);
  CHECK(fx.get(stubborn.job_id).status == job_status::processing);
  fx.advance(1ms);
  CHECK(fx.get(stubborn.job_id).status == job_status::cancelled);
  REQUIRE(fx.run_body()); // the late body returns cancelled: fenced off
  CHECK(fx.get(stubborn.job_id).status == job_status::cancelled);
  auto k = fx.kinds(stubborn.job_id);
  CHECK(std::count(k.begin(), k.end(), ek::completed) == 0);
}

TEST_CASE("a resumed attempt starts from its last checkpoint, stages and "
          "monotonic progress",
          "[lifecycle]") {
  fixture fx;
  auto rec = fx.submit("staged", "\"video\"");
  REQUIRE(fx.ask<ok_atom>(fx.handles->publisher(), subscribe_atom::value,
                          rec.job_id, caf::actor{fx.self}));
  REQUIRE(fx.run_body()); // attempt 1: fetch, render, checkpoint, fail
  CHECK(fx.j->seen_checkpoint["1"].empty());
  REQUIRE(fx.j->progress_errors.size() == 2);
  CHECK(fx.j->progress_errors[0].find("backwards") != std::string::npos);
  CHECK(fx.j->progress_errors[1].find("within [0, 100]") != std::string::npos);
  auto r = fx.get(rec.job_id);
  CHECK(r.status == job_status::retrying);
  CHECK(r.checkpoint == "rendered");
  CHECK(r.checkpoint_attempt == 1);
  fx.advance(1000ms);
  REQUIRE(fx.run_body()); // attempt 2 resumes
  CHECK(fx.j->seen_checkpoint["2"] == "rendered");
  fx.advance(1s); // let the publisher flush
  auto done = fx.get(rec.job_id);
  CHECK(done.status == job_status::completed);
  CHECK(done.result == R"({"resumed_from": "rendered"})");
  REQUIRE(done.stages.size() == 3);
  for (const auto& s : done.stages)
    CHECK(s.state == stage_state::done);
  // What subscribers saw never went backwards within an attempt and ended
  // with exactly one final event.
  auto msgs = fx.inbox();
  REQUIRE_FALSE(msgs.empty());
  double last = -1;
  uint32_t attempt = 0;
  int finals = 0;
  for (auto& m : msgs) {
    if (m.match_element<progress_atom>(0)) {
      const auto& u = m.get_as<progress_update>(1);
      if (u.attempt != attempt) {
        attempt = u.attempt;
        last = -1;
      }
      CHECK(u.percent >= last);
      CHECK(u.percent <= 100);
      last = u.percent;
    } else {
      ++finals;
      CHECK(m.get_as<job_record>(1).status == job_status::completed);
    }
  }
  CHECK(finals == 1);
  CHECK(msgs.back().match_element<final_atom>(0));
  // Progress reached the audit log too (rate-limited), never decreasing
  // within an attempt.
  auto evs = fx.events(rec.job_id);
  auto progressed = std::count_if(evs.begin(), evs.end(), [](auto& ev) {
    return ev.kind == ek::progressed;
  });
  CHECK(progressed >= 2);
  auto checkpoints = std::count_if(evs.begin(), evs.end(), [](auto& ev) {
    return ev.kind == ek::checkpointed;
  });
  CHECK(checkpoints == 1);
}

TEST_CASE("a handler that throws fails the attempt, the retry policy applies",
          "[lifecycle]") {
  fixture fx;
  submit_request req;
  req.type = "thrower";
  req.max_attempts = 2;
  auto rec = fx.submit(req);
  REQUIRE(fx.run_body());
  auto r = fx.get(rec.job_id);
  CHECK(r.status == job_status::retrying);
  CHECK(r.error.code == "handler_exception");
  CHECK(r.error.message.find("handler blew up") != std::string::npos);
  fx.advance(1s);
  REQUIRE(fx.run_body());
  CHECK(fx.get(rec.job_id).status == job_status::failed);
}

TEST_CASE("a worker that crashes mid-attempt is restarted and the job retried",
          "[lifecycle]") {
  fixture fx;
  auto rec = fx.submit("noop", "\"survivor\"");
  REQUIRE(fx.exec->bodies.size() == 1);
  REQUIRE(fx.workers.size() == 1);
  auto first_worker = fx.workers.back().second;
  fx.self->send_exit(first_worker, caf::exit_reason::kill);
  fx.run();
  auto r = fx.get(rec.job_id);
  // Lost, not failed: retried at once, outside the retry budget.
  CHECK(r.lost_count == 1);
  CHECK(r.retry_count == 0);
  CHECK(r.status != job_status::failed);
  fx.advance(10ms);                // the workers supervisor's restart backoff
  REQUIRE(fx.workers.size() == 2); // restarted by the workers supervisor
  CHECK(fx.workers.back().first == "cpu-0");
  CHECK(fx.workers.back().second != first_worker);
  // The dead worker's attempt body may still finish: nothing it says counts.
  REQUIRE(fx.run_body());
  fx.run();
  CHECK(fx.get(rec.job_id).status != job_status::completed);
  REQUIRE(fx.run_body()); // attempt 2 on the new worker
  auto done = fx.get(rec.job_id);
  CHECK(done.status == job_status::completed);
  CHECK(done.attempt == 2);
  auto k = fx.kinds(rec.job_id);
  CHECK(k
        == std::vector<ek>{ek::submitted, ek::started, ek::worker_lost,
                           ek::retry_scheduled, ek::queued, ek::started,
                           ek::completed});
  auto tree = fx.ask<tree_node>(fx.root, describe_atom::value);
  REQUIRE(tree);
  const auto& jobs = tree->children.at(0);
  const auto& workers = jobs.children.at(3);
  CHECK(workers.name == "workers");
  CHECK(workers.children.at(0).restarts == 1);
}

TEST_CASE("a store that dies takes the queue and its job supervisors with it, "
          "then the group runs jobs again",
          "[lifecycle]") {
  fixture fx;
  // Actors alive with an idle job system.
  const auto idle_actors = fx.sys.registry().running();
  auto held = fx.submit("noop", "\"held\"");
  REQUIRE(fx.exec->bodies.size() == 1); // running: a job supervisor waits
  auto old_queue = fx.handles->queue();
  auto old_store = fx.handles->store();
  fx.self->monitor(old_queue);
  fx.self->send_exit(old_store, caf::exit_reason::kill);
  fx.run();
  bool queue_down = false;
  fx.self->receive(
      [&](caf::down_msg& dm) { queue_down = dm.source == old_queue.address(); },
      caf::after(0s) >> [] {});
  CHECK(queue_down);
  fx.advance(10ms); // the jobs supervisor's restart backoff
  REQUIRE(fx.handles->store());
  CHECK(fx.handles->store() != old_store);
  CHECK(fx.handles->queue() != old_queue);
  // The old attempt's body ends; nobody is left to hear it.
  REQUIRE(fx.run_body());
  // The memory store's jobs went with it; the new group takes new ones.
  auto again = fx.submit("noop", "\"after\"");
  REQUIRE(fx.run_body());
  CHECK(fx.get(again.job_id).status == job_status::completed);
  CHECK(is(fx.ask<job_record>(fx.handles->store(), get_atom::value, held.job_id)
               .error(),
           errc::not_found));
  // No job supervisor of the old queue is left waiting for a store reply.
  fx.run();
  CHECK(fx.sys.registry().running() == idle_actors);
}

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
