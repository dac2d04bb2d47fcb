// The job lifecycle on one node, deterministically, when an attempt does
// not simply complete: cancelling queued, scheduled and running jobs,
// resuming from a checkpoint, a handler that throws, a worker that crashes,
// a store that dies. CAF's test coordinator runs every actor on the test
// thread, the actor clock only moves when the test advances it, and
// handler bodies run when the test says so (a manual executor instead of a
// thread per attempt; tests/actors/lifecycle_fixture.hpp).

#include "actors/lifecycle_fixture.hpp"

using namespace drover::testing::lifecycle;

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
