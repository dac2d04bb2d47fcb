#include "runtime/job_state.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

using namespace drover;

namespace {

struct history {
  std::vector<job_event> events;
  job_record rec;

  caf::error add(event_kind kind, uint32_t attempt = 0,
                 void (*fill)(job_event&) = nullptr) {
    job_event ev;
    ev.job_id = "j1";
    ev.kind = kind;
    ev.attempt = attempt;
    ev.sequence = rec.sequence + 1;
    ev.at_ms = 1000 + static_cast<int64_t>(rec.sequence) * 10;
    if (kind == event_kind::submitted)
      ev.spec.type = "noop";
    if (fill)
      fill(ev);
    auto err = apply(rec, ev);
    if (!err)
      events.push_back(ev);
    return err;
  }

  void ok(event_kind kind, uint32_t attempt = 0,
          void (*fill)(job_event&) = nullptr) {
    auto err = add(kind, attempt, fill);
    INFO(describe(err));
    REQUIRE_FALSE(err);
  }

  void refused(event_kind kind, uint32_t attempt, const std::string& why) {
    auto before = rec;
    auto err = add(kind, attempt);
    REQUIRE(err);
    CHECK(is(err, errc::invalid_value));
    CHECK(describe(err).find(why) != std::string::npos);
    CHECK(rec == before); // a refused event changes nothing
  }
};

} // namespace

TEST_CASE("a job's happy path through the state machine", "[job_state]") {
  history h;
  h.ok(event_kind::submitted);
  CHECK(h.rec.status == job_status::queued);
  h.ok(event_kind::started, 1);
  CHECK(h.rec.status == job_status::processing);
  CHECK(h.rec.attempt == 1);
  h.ok(event_kind::progressed, 1, [](job_event& ev) {
    ev.progress.percent = 40;
    ev.progress.stages
        = {{"a", 100, stage_state::done}, {"b", 0, stage_state::running}};
  });
  CHECK(h.rec.progress == 40);
  CHECK(h.rec.stages.size() == 2);
  h.ok(event_kind::checkpointed, 1,
       [](job_event& ev) { ev.checkpoint = "cp-1"; });
  CHECK(h.rec.checkpoint == "cp-1");
  h.ok(event_kind::completed, 1,
       [](job_event& ev) { ev.result = R"({"ok":true})"; });
  CHECK(h.rec.status == job_status::completed);
  CHECK(h.rec.progress == 100);
  CHECK(h.rec.stages[1].state == stage_state::done);
  CHECK(h.rec.completed_at_ms > 0);
  // Replaying the history reproduces the state.
  auto replayed = replay(h.events);
  REQUIRE(replayed);
  CHECK(*replayed == h.rec);
}

TEST_CASE("retries, the dead-letter queue and redrive", "[job_state]") {
  history h;
  h.ok(event_kind::submitted);
  h.ok(event_kind::started, 1);
  h.ok(event_kind::retry_scheduled, 1,
       [](job_event& ev) { ev.next_attempt_at_ms = 5000; });
  CHECK(h.rec.status == job_status::retrying);
  CHECK(h.rec.retry_count == 1);
  h.refused(event_kind::started, 2, "needs a queued job");
  h.ok(event_kind::queued);
  h.refused(event_kind::started, 1, "must start attempt 2");
  h.ok(event_kind::started, 2);
  h.ok(event_kind::failed, 2);
  CHECK(h.rec.status == job_status::failed);
  h.refused(event_kind::redriven, 2, "needs a job in the DLQ");
  h.ok(event_kind::dead_lettered, 2);
  CHECK(h.rec.dead_lettered);
  h.refused(event_kind::dead_lettered, 2, "outside the DLQ");
  h.ok(event_kind::redriven, 2);
  CHECK(h.rec.status == job_status::queued);
  CHECK(h.rec.retry_count == 0);
  CHECK_FALSE(h.rec.dead_lettered);
  h.ok(event_kind::started, 3); // attempts keep counting: fencing tokens
  h.ok(event_kind::failed, 3);
  h.ok(event_kind::dead_lettered, 3);
  h.ok(event_kind::purged, 3);
  CHECK_FALSE(h.rec.dead_lettered);
  CHECK(h.rec.status == job_status::failed);
  h.refused(event_kind::redriven, 3, "needs a job in the DLQ");
  auto replayed = replay(h.events);
  REQUIRE(replayed);
  CHECK(*replayed == h.rec);
}

TEST_CASE("fencing: nothing from a superseded attempt is accepted",
          "[job_state]") {
  history h;
  h.ok(event_kind::submitted);
  h.ok(event_kind::started, 1);
  h.ok(event_kind::retry_scheduled, 1);
  h.ok(event_kind::queued);
  h.ok(event_kind::started, 2);
  h.refused(event_kind::progressed, 1, "superseded attempt");
  h.refused(event_kind::checkpointed, 1, "superseded attempt");
  h.refused(event_kind::completed, 1, "needs the processing attempt");
  h.refused(event_kind::failed, 1, "needs the processing attempt");
  h.ok(event_kind::completed, 2);
}

TEST_CASE("terminal states never change", "[job_state]") {
  for (auto terminal : {event_kind::completed, event_kind::cancelled}) {
    history h;
    h.ok(event_kind::submitted);
    h.ok(event_kind::started, 1);
    h.ok(terminal, 1);
    for (auto k :
         {event_kind::started, event_kind::progressed, event_kind::completed,
          event_kind::failed, event_kind::cancelled,
          event_kind::cancel_requested, event_kind::retry_scheduled,
          event_kind::queued, event_kind::redriven})
      CHECK(h.add(k, 1));
    CHECK(h.rec.status
          == (terminal == event_kind::completed ? job_status::completed
                                                : job_status::cancelled));
  }
}

TEST_CASE("progress may not go backwards in the log", "[job_state]") {
  history h;
  h.ok(event_kind::submitted);
  h.ok(event_kind::started, 1);
  h.ok(event_kind::progressed, 1,
       [](job_event& ev) { ev.progress.percent = 50; });
  auto before = h.rec;
  CHECK(h.add(event_kind::progressed, 1,
              [](job_event& ev) { ev.progress.percent = 20; }));
  CHECK(h.rec == before);
}

TEST_CASE("sequence gaps, unknown jobs and double submits are refused",
          "[job_state]") {
  job_record rec;
  job_event ev;
  ev.job_id = "j1";
  ev.kind = event_kind::started;
  ev.sequence = 1;
  CHECK(is(apply(rec, ev), errc::invalid_value)); // before submitted
  ev.kind = event_kind::submitted;
  ev.sequence = 2;
  CHECK(apply(rec, ev)); // gap
  ev.sequence = 1;
  REQUIRE_FALSE(apply(rec, ev));
  ev.sequence = 2;
  CHECK(apply(rec, ev)); // second submit
  ev.kind = event_kind::started;
  ev.attempt = 1;
  ev.sequence = 3;
  CHECK(apply(rec, ev)); // gap
  ev.sequence = 2;
  ev.job_id = "other";
  CHECK(apply(rec, ev)); // another job's event
}

TEST_CASE("scheduled jobs and cancellation", "[job_state]") {
  history h;
  h.ok(event_kind::submitted, 0,
       [](job_event& ev) { ev.spec.run_at_ms = 999999; });
  CHECK(h.rec.status == job_status::scheduled);
  h.refused(event_kind::started, 1, "needs a queued job");
  h.ok(event_kind::cancel_requested);
  CHECK(h.rec.cancel_requested);
  h.ok(event_kind::cancelled, 0,
       [](job_event& ev) { ev.reason = "user asked"; });
  CHECK(h.rec.status == job_status::cancelled);
  CHECK(h.rec.error.message == "user asked");
  auto replayed = replay(h.events);
  REQUIRE(replayed);
  CHECK(*replayed == h.rec);
}

namespace {

void with_callback(job_event& ev) {
  ev.spec.callback_url = "https://example.com/hook";
}

/// A webhook attempt for the terminal event `seq`; `fill` sets the outcome.
job_event webhook_event(const job_record& rec, uint64_t terminal_seq,
                        webhook_outcome outcome) {
  job_event ev;
  ev.job_id = rec.job_id;
  ev.sequence = rec.sequence + 1;
  ev.attempt = rec.attempt;
  ev.at_ms = 5000;
  ev.kind = event_kind::webhook_attempted;
  ev.webhook.url = rec.spec.callback_url;
  ev.webhook.webhook_id = rec.job_id + "." + std::to_string(terminal_seq);
  ev.webhook.terminal_sequence = terminal_seq;
  ev.webhook.attempt_number = 1;
  ev.webhook.outcome = outcome;
  if (outcome == webhook_outcome::retrying)
    ev.webhook.next_attempt_at_ms = 6000;
  return ev;
}

} // namespace

TEST_CASE("webhook attempts are recorded after the end without changing it",
          "[job_state][webhook]") {
  history h;
  h.ok(event_kind::submitted, 0, with_callback);
  h.ok(event_kind::started, 1);
  h.ok(event_kind::completed, 1,
       [](job_event& ev) { ev.result = R"({"ok":true})"; });
  auto terminal_seq = h.rec.sequence;
  CHECK(h.rec.webhook_pending_sequence == terminal_seq);
  auto at_end = h.rec;
  // Two failed attempts: bookkeeping only.
  for (int i = 0; i < 2; ++i) {
    auto ev = webhook_event(h.rec, terminal_seq, webhook_outcome::retrying);
    REQUIRE_FALSE(apply(h.rec, ev));
    h.events.push_back(ev);
  }
  CHECK(h.rec.status == job_status::completed);
  CHECK(h.rec.webhook_pending_sequence == terminal_seq);
  // A final outcome for another (nonexistent) terminal event is refused;
  // one for an earlier, non-terminal event settles nothing.
  auto future
      = webhook_event(h.rec, h.rec.sequence + 1, webhook_outcome::delivered);
  CHECK(is(apply(h.rec, future), errc::invalid_value));
  auto other = webhook_event(h.rec, 1, webhook_outcome::delivered);
  REQUIRE_FALSE(apply(h.rec, other));
  h.events.push_back(other);
  CHECK(h.rec.webhook_pending_sequence == terminal_seq);
  auto delivered
      = webhook_event(h.rec, terminal_seq, webhook_outcome::delivered);
  REQUIRE_FALSE(apply(h.rec, delivered));
  h.events.push_back(delivered);
  CHECK(h.rec.webhook_pending_sequence == 0);
  // Nothing else moved: the record is the one at the end, but for the
  // sequence and the settled webhook.
  auto expected = at_end;
  expected.sequence = h.rec.sequence;
  expected.webhook_pending_sequence = 0;
  CHECK(h.rec == expected);
  // Still terminal: transitions stay refused.
  h.refused(event_kind::cancelled, 1, "for a finished job");
  auto replayed = replay(h.events);
  REQUIRE(replayed);
  CHECK(*replayed == h.rec);
}

TEST_CASE("a redrive clears the webhook owed, the next end owes a new one",
          "[job_state][webhook]") {
  history h;
  h.ok(event_kind::submitted, 0, with_callback);
  h.ok(event_kind::started, 1);
  h.ok(event_kind::failed, 1, [](job_event& ev) {
    ev.error = {"boom", "broke", false};
  });
  auto first_end = h.rec.sequence;
  h.ok(event_kind::dead_lettered, 1);
  CHECK(h.rec.webhook_pending_sequence == first_end); // DLQ keeps it owed
  h.ok(event_kind::redriven);
  CHECK(h.rec.webhook_pending_sequence == 0);
  // The old delivery may still be running: its attempts are legal even
  // while the job is queued again, and change nothing.
  auto late = webhook_event(h.rec, first_end, webhook_outcome::failed);
  REQUIRE_FALSE(apply(h.rec, late));
  h.events.push_back(late);
  CHECK(h.rec.status == job_status::queued);
  h.ok(event_kind::started, 2);
  h.ok(event_kind::completed, 2);
  CHECK(h.rec.webhook_pending_sequence == h.rec.sequence);
  // Without a callback URL nothing is owed.
  history quiet;
  quiet.ok(event_kind::submitted);
  quiet.ok(event_kind::cancelled);
  CHECK(quiet.rec.webhook_pending_sequence == 0);
  auto replayed = replay(h.events);
  REQUIRE(replayed);
  CHECK(*replayed == h.rec);
}
