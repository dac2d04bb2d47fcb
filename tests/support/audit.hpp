#pragma once

// The audit of fault tests: every stored job and its events straight from
// PostgreSQL, checked against ../shared/RELIABILITY.md's invariants (1, 4,
// 5, 6 and 10 as far as one job's log shows them), and the seed that
// replays a randomised run.

#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/pg.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace drover::testing::audit_log {

/// $DROVER_TEST_SEED if set, else random; the caller prints it.
inline uint64_t test_seed() {
  if (const char* s = std::getenv("DROVER_TEST_SEED"); s != nullptr && *s)
    return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) | rd();
}

struct stored_job {
  job_record rec;
  std::vector<job_event> events;
};

/// Every job and its events, straight from the tables.
inline std::map<std::string, stored_job> load_all(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  std::map<std::string, stored_job> out;
  auto jobs
      = must(conn.exec("SELECT job_id, record FROM drover.jobs", {}, true));
  for (int row = 0; row < jobs.rows(); ++row) {
    auto bytes = jobs.value(row, 1);
    auto rec = must(from_bytes<job_record>(bytes.data(), bytes.size()));
    REQUIRE(rec.job_id == jobs.value(row, 0));
    out[rec.job_id].rec = std::move(rec);
  }
  auto events = must(conn.exec(
      "SELECT job_id, seq, payload FROM drover.events ORDER BY job_id, seq", {},
      true));
  for (int row = 0; row < events.rows(); ++row) {
    auto id = std::string{events.value(row, 0)};
    auto seq = static_cast<uint64_t>(pg::binary_int(events.value(row, 1)));
    auto bytes = events.value(row, 2);
    auto ev = must(from_bytes<job_event>(bytes.data(), bytes.size()));
    INFO("event " << seq << " of " << id);
    REQUIRE(ev.job_id == id);
    REQUIRE(ev.sequence == seq);
    // Events without a projection row would be a torn write.
    REQUIRE(out.count(id) == 1);
    out[id].events.push_back(std::move(ev));
  }
  return out;
}

/// Jobs whose projection says `processing`, with their current attempt.
inline std::map<std::string, uint32_t> processing_jobs(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  auto res = must(conn.exec(
      "SELECT job_id, record FROM drover.jobs WHERE status = 2", {}, true));
  std::map<std::string, uint32_t> out;
  for (int row = 0; row < res.rows(); ++row) {
    auto bytes = res.value(row, 1);
    auto rec = must(from_bytes<job_record>(bytes.data(), bytes.size()));
    out.emplace(rec.job_id, rec.attempt);
  }
  return out;
}

inline std::string dump(const stored_job& job) {
  std::string out = to_json(job.rec) + "\n";
  for (const auto& ev : job.events)
    out += "  " + to_json(ev) + "\n";
  return out;
}

inline size_t count_kind(const std::vector<job_event>& events,
                         event_kind kind) {
  return static_cast<size_t>(
      std::count_if(events.begin(), events.end(),
                    [kind](const job_event& ev) { return ev.kind == kind; }));
}

struct audit_totals {
  size_t jobs = 0;
  size_t completed = 0;
  size_t interrupted = 0;
  size_t attempts = 0;
};

/// Checks every stored job against RELIABILITY.md's invariants (1, 4, 5, 6
/// and 10 as far as one job's log shows them); `acked` must all be there
/// and, since every test job can succeed, completed exactly once.
inline audit_totals audit(const std::map<std::string, stored_job>& jobs,
                          const std::set<std::string>& acked) {
  audit_totals totals;
  for (const auto& id : acked) {
    INFO("acknowledged job " << id);
    CHECK(jobs.count(id) == 1); // 1. no lost acknowledgement
  }
  for (const auto& [id, job] : jobs) {
    INFO("job " << dump(job));
    const auto& evs = job.events;
    ++totals.jobs;
    REQUIRE_FALSE(evs.empty());
    CHECK(evs.front().kind == event_kind::submitted);
    // 5. gapless 1..n, and replaying the log gives the projection.
    for (size_t i = 0; i < evs.size(); ++i)
      CHECK(evs[i].sequence == i + 1);
    auto replayed = replay(evs);
    if (!replayed)
      FAIL_CHECK("replay refused the history: " << describe(replayed.error()));
    else
      CHECK(*replayed == job.rec);
    // 10. nothing left running; every test job can and must complete.
    CHECK(job.rec.status == job_status::completed);
    auto terminal = count_kind(evs, event_kind::completed)
                    + count_kind(evs, event_kind::failed)
                    + count_kind(evs, event_kind::cancelled);
    CHECK(terminal == 1);
    CHECK(count_kind(evs, event_kind::completed) == 1);
    if (job.rec.status == job_status::completed) {
      ++totals.completed;
      // Nothing changes a finished job: after `completed` only records of
      // refused reports (a superseded attempt's late outcome) and webhook
      // deliveries may follow.
      auto last = std::find_if(evs.rbegin(), evs.rend(), [](const auto& ev) {
        return ev.kind != event_kind::report_rejected
               && ev.kind != event_kind::webhook_attempted;
      });
      REQUIRE(last != evs.rend());
      CHECK(last->kind == event_kind::completed);
    }
    // 6. attempts never exceed the maximum; each attempt starts once, in
    // order. 4. (fencing, as the log shows it) everything an attempt
    // reports carries the number of the attempt that is current.
    uint32_t current = 0;
    for (size_t i = 0; i < evs.size(); ++i) {
      const auto& ev = evs[i];
      switch (ev.kind) {
        case event_kind::started:
          CHECK(ev.attempt == current + 1);
          current = ev.attempt;
          ++totals.attempts;
          break;
        case event_kind::progressed:
        case event_kind::checkpointed:
        case event_kind::completed:
        case event_kind::retry_scheduled:
          CHECK(ev.attempt == current);
          break;
        case event_kind::worker_lost:
          // An attempt interrupted by the node's death is settled on
          // restart (node_restarted); one whose supervisor could not write
          // its start or outcome while PostgreSQL was away is settled by
          // the queue's reconcile (attempt_lost, supervisor_lost); one
          // whose lease was still on its way to a worker node when its
          // coordinator died is given up after the adoption grace, no
          // worker having reported it (worker_lost; seen in CI): always
          // worker_lost, then a retry that names why.
          ++totals.interrupted;
          CHECK(ev.attempt == current);
          REQUIRE(i + 1 < evs.size());
          CHECK(evs[i + 1].kind == event_kind::retry_scheduled);
          CHECK(evs[i + 1].attempt == current);
          CHECK((evs[i + 1].error.code == "node_restarted"
                 || evs[i + 1].error.code == "attempt_lost"
                 || evs[i + 1].error.code == "supervisor_lost"
                 || evs[i + 1].error.code == "worker_lost"));
          break;
        default:
          break;
      }
    }
    CHECK(job.rec.attempt == current);
    CHECK(current >= 1);
    // Lost attempts (the node died under them) are not the handler's
    // failures: they count in lost_count, not against max_attempts.
    auto lost = count_kind(evs, event_kind::worker_lost)
                + count_kind(evs, event_kind::lease_expired);
    CHECK(job.rec.lost_count == lost);
    CHECK(current <= job.rec.spec.max_attempts + lost);
    CHECK(job.rec.retry_count
          == count_kind(evs, event_kind::retry_scheduled) - lost);
  }
  return totals;
}

} // namespace drover::testing::audit_log
