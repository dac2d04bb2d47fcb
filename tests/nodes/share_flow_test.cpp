// Rate limits and concurrency keys across coordinators that share a
// database (--share-partitions, runtime/flow_control.hpp and
// runtime/partition.hpp): a rate declared on every coordinator holds for
// all of them together (each fills its buckets at its share of the
// partitions), and a concurrency key's jobs all live in the key's
// partition, so the one coordinator owning it runs at most the limit at
// once; a job type's limit (--concurrency-limit) holds for all of them
// through permits in PostgreSQL (runtime/pg_permits.cpp). Three coordinators
// with local slots, jobs submitted through the C++ client (routed to each
// partition's owner); the checks read the audit log.

#include "drover/client.hpp"

#include "runtime/errors.hpp"
#include "runtime/model.hpp"
#include "runtime/partition.hpp"
#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <climits>
#include <csignal>
#include <iostream>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace drover;
using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

namespace {

/// (at_ms, kind) of the started and ended events of `ids`, by time.
std::vector<std::pair<int64_t, int>>
starts_and_ends(const std::string& url, const std::vector<std::string>& ids) {
  std::string in;
  for (const auto& id : ids)
    in += (in.empty() ? "'" : ",'") + id + "'";
  auto conn = must(drover::pg::connection::open(url));
  auto res
      = run(conn, "SELECT at_ms, kind FROM drover.events WHERE job_id IN (" + in
                      + ") AND kind IN (" + std::to_string(started_kind) + ","
                      + std::to_string(completed_kind)
                      + ") ORDER BY at_ms, kind DESC");
  std::vector<std::pair<int64_t, int>> out;
  for (int i = 0; i < res.rows(); ++i)
    out.emplace_back(std::stoll(std::string{res.value(i, 0)}),
                     std::stoi(std::string{res.value(i, 1)}));
  return out;
}

/// The most attempts of `ids` running at once, by the log: an attempt runs
/// from its `started` event to the next event of its job that ends it or
/// gives it up (retry_scheduled, completed, failed, cancelled,
/// lease_expired, worker_lost). One that never ended counts to the end.
int most_attempts_at_once(const std::string& url,
                          const std::vector<std::string>& ids) {
  std::string in;
  for (const auto& id : ids)
    in += (in.empty() ? "'" : ",'") + id + "'";
  auto conn = must(drover::pg::connection::open(url));
  auto res = run(conn, "SELECT job_id, at_ms, kind FROM drover.events WHERE "
                       "job_id IN ("
                           + in
                           + ") AND kind IN (3, 6, 7, 8, 11, "
                             "13, 14) ORDER BY job_id, seq");
  std::vector<std::pair<int64_t, int>> edges; // (at, +1 start / -1 end)
  std::string job;
  bool open = false;
  for (int i = 0; i < res.rows(); ++i) {
    std::string id{res.value(i, 0)};
    if (id != job) {
      job = id;
      open = false;
    }
    auto at = std::stoll(std::string{res.value(i, 1)});
    auto kind = std::stoi(std::string{res.value(i, 2)});
    if (kind == started_kind) {
      if (open) // a start without an end before it: it runs on, counted
        edges.emplace_back(INT64_MAX, -1);
      edges.emplace_back(at, 1);
      open = true;
    } else if (open) {
      edges.emplace_back(at, -1);
      open = false;
    }
  }
  // Ends before starts at the same ms.
  std::sort(edges.begin(), edges.end());
  int running = 0;
  int most = 0;
  for (auto& [at, d] : edges) {
    running += d;
    most = std::max(most, running);
  }
  return most;
}

/// A run's id from a seed it prints: idempotency keys apart from other
/// runs' on a shared database.
std::string seeded_run_id() {
  auto seed = std::random_device{}();
  std::cout << "share_flow_test: seed " << seed << "\n";
  std::mt19937 rng{seed};
  return std::to_string(rng());
}

/// Submits `n` jobs of type sleep running `ms` (rate-limited by `rate_key`
/// unless empty), keyed `prefix`-i so that they spread over the partitions,
/// through `cl` in one batch: their ids.
std::vector<std::string> submit_spread(drover::client& cl, int n,
                                       const std::string& prefix, int64_t ms,
                                       const std::string& rate_key = "") {
  std::vector<submit_request> batch;
  for (int i = 0; i < n; ++i) {
    submit_request r;
    r.type = "sleep";
    r.input = "{\"ms\":" + std::to_string(ms) + "}";
    r.rate_limit_key = rate_key;
    r.idempotency_key = prefix + "-" + std::to_string(i);
    batch.push_back(r);
  }
  auto subs = cl.submit(batch);
  INFO((subs ? "" : describe(subs.error())));
  REQUIRE(subs);
  std::vector<std::string> ids;
  for (auto& sub : *subs) {
    REQUIRE_FALSE(sub.job.job_id.empty());
    ids.push_back(sub.job.job_id);
  }
  return ids;
}

} // namespace

TEST_CASE("sharing coordinators keep a rate limit and a concurrency limit "
          "together",
          "[pg][cluster][process][share][flow]") {
  auto run_id = seeded_run_id();
  cluster c;
  sharing s{c};
  s.start_three({"--rate-limit", "api:rate=5,burst=1"});
  auto cl = s.client_of({"c1", "c2", "c3"});
  INFO(s.logs_of({"c1", "c2", "c3"}));

  // 30 jobs of one rate limit, spread over every coordinator's partitions.
  // At 5/s with a burst of one per coordinator, their starts span at least
  // (30 - 3) / 5 = 5.4 s; three coordinators each keeping the whole rate
  // would start them in about 2 s.
  auto rated = submit_spread(*cl, 30, run_id + "-rate", 0, "api");
  c.check_all_done_once(rated, 60s);
  std::vector<int64_t> starts;
  for (auto& [at, kind] : starts_and_ends(c.url(), rated))
    if (kind == started_kind)
      starts.push_back(at);
  REQUIRE(starts.size() == rated.size());
  auto span = starts.back() - starts.front();
  std::cout << "share_flow_test: 30 starts at 5/s over three coordinators took "
            << span << " ms\n";
  CHECK(span >= 5000);
  // Any 1 s window: at most the rate plus a token per coordinator.
  size_t most = 0;
  for (size_t i = 0, j = 0; i < starts.size(); ++i) {
    while (starts[i] - starts[j] >= 1000)
      ++j;
    most = std::max(most, i - j + 1);
  }
  CHECK(most <= 5 + 3);

  // 12 jobs of one concurrency key (limit 1), keyed apart so that their
  // idempotency keys alone would spread them over all three: never two
  // running at once.
  std::vector<std::string> keyed;
  for (int i = 0; i < 12; ++i) {
    submit_request r;
    r.type = "sleep";
    r.input = "{\"ms\":" + std::to_string(150 * time_scale()) + "}";
    r.concurrency_key = "user:" + run_id;
    r.idempotency_key = run_id + "-one-at-a-time-" + std::to_string(i);
    auto sub = cl->submit(r);
    INFO((sub ? "" : describe(sub.error())));
    REQUIRE(sub);
    keyed.push_back(sub->job.job_id);
  }
  std::set<int32_t> partitions;
  for (const auto& id : keyed)
    partitions.insert(partition_of_id(id));
  CHECK(partitions.size() == 1);
  c.check_all_done_once(keyed, 60s);
  CHECK(most_attempts_at_once(c.url(), keyed) == 1);
}

TEST_CASE("sharing coordinators keep a job type's concurrency limit together",
          "[pg][cluster][process][share][flow]") {
  auto run_id = seeded_run_id();
  cluster c;
  sharing s{c};
  // Each has local slots enough to run 4 at once; the type's limit is 2
  // for all three together (before: 2 each, 6 at once).
  s.start_three({"--concurrency-limit", "sleep=2"});
  auto cl = s.client_of({"c1", "c2", "c3"});
  INFO(s.logs_of({"c1", "c2", "c3"}));

  auto limited
      = submit_spread(*cl, 24, run_id + "-type-limit", 200 * time_scale());
  std::set<int32_t> partitions;
  for (const auto& id : limited)
    partitions.insert(partition_of_id(id));
  CHECK(partitions.size() >= 8); // spread over every coordinator's share
  c.check_all_done_once(limited, 90s);
  auto most = most_attempts_at_once(c.url(), limited);
  std::cout << "share_flow_test: at most " << most
            << " of 24 jobs of a type limited to 2 ran at once on three "
               "coordinators\n";
  CHECK(most == 2);
}

TEST_CASE("a job type's limit across sharing coordinators holds through a "
          "kill -9 of one running its jobs",
          "[pg][cluster][process][share][flow]") {
  cluster c;
  sharing s{c};
  s.start_three({"--concurrency-limit", "sleep=2"});
  INFO(s.logs_of({"c1", "c2", "c3"}));
  // Each coordinator's own partitions get 5 jobs of 600 ms.
  std::vector<std::string> jobs;
  std::vector<std::string> of_c1;
  for (int i = 0; i < 5; ++i)
    for (const auto* name : {"c1", "c2", "c3"}) {
      auto id = s.submit(name, 600);
      jobs.push_back(id);
      if (std::string{name} == "c1")
        of_c1.push_back(id);
    }
  // c1 is killed while it holds a permit: one of its attempts runs.
  REQUIRE(poll_until(
      [&] {
        for (const auto& id : of_c1)
          if (c.events(id, progressed_kind) > 0)
            return true;
        return false;
      },
      60s));
  s.nodes["c1"]->signal(SIGKILL);
  // Its running attempt holds its permit until the survivor that takes its
  // partition settles it; its grants not started lapse with its leases;
  // every job completes once and never more than 2 ran at once.
  c.check_all_done_once(jobs, 120s);
  auto most = most_attempts_at_once(c.url(), jobs);
  std::cout << "share_flow_test: at most " << most
            << " attempts of a type limited to 2 at once across a kill -9\n";
  CHECK(most <= 2);
  CHECK(most == 2); // and the limit was used, not serialised to one
}

TEST_CASE("a job granted a permit that waits at a rate limit meanwhile "
          "still runs: the type's other jobs are not stuck behind it",
          "[pg][cluster][process][share][flow]") {
  // A rate limit: a job woken with a permit often finds the rate limit
  // closed, waits there keeping its permit (in its entry), and comes back
  // behind jobs refused one; it takes its slot again without asking
  // (before, nobody asked for it again and the type stopped on every
  // coordinator with limit 1; with limit 2 its permit was lost to the
  // others until the line drained down to it). The permits it keeps must
  // never let more than the limit run.
  auto limit = GENERATE(1, 2);
  auto run_id = seeded_run_id();
  cluster c;
  sharing s{c};
  s.start_three({"--concurrency-limit", "sleep=" + std::to_string(limit),
                 "--rate-limit", "api:rate=4,burst=1"});
  auto cl = s.client_of({"c1", "c2", "c3"});
  INFO("limit " << limit << "\n" << s.logs_of({"c1", "c2", "c3"}));
  auto jobs
      = submit_spread(*cl, 16, run_id + "-gated", 50 * time_scale(), "api");
  c.check_all_done_once(jobs, 90s);
  CHECK(most_attempts_at_once(c.url(), jobs) <= limit);
}

TEST_CASE("a sharing coordinator asks for no more permits of a limited "
          "type than it has workers for its jobs",
          "[pg][cluster][process][share][flow]") {
  cluster c;
  sharing s{c};
  // The type's limit is 2 for both together. c1 has four local slots; c2
  // runs its jobs on one worker node with one slot.
  s.start("c1", true, {"--concurrency-limit", "sleep=2"});
  s.start("c2", false, {"--concurrency-limit", "sleep=2"});
  INFO(s.logs_of({"c1", "c2", "w2"}));
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2"}); }, 20s));
  auto quoted = [](const std::vector<std::string>& ids) {
    std::string in;
    for (const auto& id : ids)
      in += (in.empty() ? "'" : ",'") + id + "'";
    return in;
  };
  auto held_by = [&](const std::vector<std::string>& ids) {
    return scalar(c.url(), "SELECT count(*) FROM drover.concurrency_permits "
                           "WHERE job_id IN ("
                               + quoted(ids) + ")");
  };
  auto finished = [&](const std::vector<std::string>& ids) {
    return scalar(c.url(), "SELECT count(*) FROM drover.jobs WHERE job_id IN ("
                               + quoted(ids)
                               + ") AND final_status IS NOT NULL");
  };
  // c2's jobs come first, and wait for its worker node: when its one slot
  // comes, every one of them is tried on it and waits behind the type's
  // key. Before, c2 took both permits at once (one to run, one to wait for
  // its busy slot); and while its slot was busy it kept asking, as the
  // waiter the others leave a permit for: c1's jobs waited for c2's to
  // run one by one.
  std::vector<std::string> of_c2;
  for (int i = 0; i < 4; ++i)
    of_c2.push_back(s.submit("c2", 3000));
  s.start_worker("w2", {"c2"}, "cpu=1");
  REQUIRE(s.nodes.at("w2")->wait_for_line("joined the coordinator", 20s));
  REQUIRE(poll_until([&] { return held_by(of_c2) > 0; }, 20s));
  std::vector<std::string> of_c1;
  for (int i = 0; i < 3; ++i)
    of_c1.push_back(s.submit("c1", 100));
  int64_t most_held = 0;
  REQUIRE(poll_until(
      [&] {
        most_held = std::max(most_held, held_by(of_c2));
        return finished(of_c1) == 3;
      },
      60s));
  // c1's three ran (one at a time: the other permit is c2's) while c2's
  // first was still running.
  CHECK(finished(of_c2) == 0);
  CHECK(most_held == 1);
  for (const auto& id : of_c1)
    CHECK(c.events(id, started_kind) == 1);
}
