// Webhook deliveries resumed from the store (gateway/webhook_resume.cpp):
// after a restart, with more owed deliveries than a scan's page, with a
// job's long history read a page at a time. The dispatcher end to end with
// a memory store and a receiver on loopback; waits have deadlines.

#include "support/webhook_dispatcher_fixture.hpp"
#include "support/webhook_receiver.hpp"

#include <set>

using namespace drover;
using namespace drover::testing::webhooks;
using drover::testing::reply;
using drover::testing::webhook_receiver;

TEST_CASE("pending deliveries resume from the store after a restart",
          "[webhook][dispatcher][resume]") {
  dispatcher_fixture fx;
  webhook_receiver receiver{{reply{200}}};
  // The previous incarnation made one attempt and scheduled the next.
  auto rec = fx.finished_job(receiver.url());
  auto earlier
      = fx.attempt_event(rec, 1, webhook_outcome::retrying, system_clock_ms());
  fx.append(earlier);
  // A job that owes nothing stays untouched.
  auto settled = fx.finished_job(receiver.url());
  auto done
      = fx.attempt_event(settled, 1, webhook_outcome::delivered, earlier.at_ms);
  fx.append(done);
  // No final is published: the new dispatcher finds the job in the store.
  fx.start(dispatcher_fixture::fast_options());
  auto got = receiver.wait_for(1, patience);
  REQUIRE(got.size() == 1);
  CHECK(got[0].webhook_id == earlier.webhook.webhook_id);
  auto events = fx.log->wait_for(1, patience);
  REQUIRE(events.size() == 1);
  CHECK(events[0].job_id == rec.job_id);
  CHECK(events[0].webhook.attempt_number == 2); // numbering continues
  CHECK(events[0].webhook.outcome == webhook_outcome::delivered);
  auto history = fx.webhook_events(rec.job_id);
  REQUIRE(history.size() == 2);
  CHECK(history[0].webhook.outcome == webhook_outcome::retrying);
  CHECK(history[1].webhook.outcome == webhook_outcome::delivered);
  CHECK(fx.webhook_events(settled.job_id).size() == 1);
  fx.check_replay(rec.job_id);
}

TEST_CASE("a restart with more pending deliveries than a page resumes them "
          "all",
          "[webhook][dispatcher][resume]") {
  dispatcher_fixture fx;
  webhook_receiver receiver{{reply{200}}};
  constexpr size_t jobs = 450; // more than two pages of 200
  std::set<std::string> ids;
  for (size_t i = 0; i < jobs; ++i)
    ids.insert(fx.finished_job(receiver.url()).job_id);
  fx.start(dispatcher_fixture::fast_options());
  auto events = fx.log->wait_for(jobs, patience);
  REQUIRE(events.size() == jobs);
  std::set<std::string> delivered;
  for (const auto& ev : events) {
    CHECK(ev.webhook.outcome == webhook_outcome::delivered);
    CHECK(ev.webhook.attempt_number == 1);
    delivered.insert(ev.job_id);
  }
  CHECK(delivered == ids);
  CHECK(receiver.requests().size() == jobs);
}

TEST_CASE("a delivery resumed after a restart counts the attempts of a long "
          "history, read a page at a time",
          "[webhook][dispatcher][resume]") {
  // The resumption reads the job's history after its terminal event, 1,000
  // events a read (before: the whole log at once). 1,100 earlier attempts
  // span two reads: one read alone would number the next attempt 1001.
  dispatcher_fixture fx;
  webhook_receiver receiver{{reply{200}}};
  auto rec = fx.finished_job(receiver.url());
  auto now = system_clock_ms();
  for (uint32_t n = 1; n <= 1100; ++n)
    fx.append(fx.attempt_event(rec, n, webhook_outcome::retrying, now));
  fx.start(dispatcher_fixture::fast_options());
  auto got = receiver.wait_for(1, patience);
  REQUIRE(got.size() == 1);
  auto events = fx.log->wait_for(1, patience);
  REQUIRE(events.size() == 1);
  CHECK(events[0].webhook.attempt_number == 1101);
  CHECK(events[0].webhook.outcome == webhook_outcome::delivered);
  CHECK(receiver.requests().size() == 1);
  CHECK(fx.webhook_events(rec.job_id).size() == 1101);
  fx.check_replay(rec.job_id);
}
