// The job lifecycle on one node, deterministically, from submit to the
// end: a job runs and completes, priorities and aging, queue stats, delayed
// and scheduled jobs, retries with backoff, the dead-letter queue and
// per-attempt timeouts. CAF's test coordinator runs every actor on the
// test thread, the actor clock only moves when the test advances it, and
// handler bodies run when the test says so (a manual executor instead of a
// thread per attempt; tests/actors/lifecycle_fixture.hpp).

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
