// The PostgreSQL store behind the unchanged store protocol, jobs: runs,
// duplicates, group commit, batches, the cache, lost connections. In a real job
// system (real threads, real PostgreSQL). Waits are on events with
// deadlines; each test case has a database of its own. Helpers:
// tests/support/pg_store_fixture.hpp.

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"
#include "support/direct_client.hpp"
#include "support/pg_store_fixture.hpp"
#include "support/test_db.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::must;
using drover::testing::real_config;
using drover::testing::test_db;
using namespace drover::testing::pg_store_fixture;

TEST_CASE("jobs run on the PostgreSQL store, events and projection agree",
          "[pg][store]") {
  test_db db;
  pg_node node{db.url()};
  std::vector<std::string> ids;
  for (int i = 0; i < 30; ++i)
    ids.push_back(node.submit(request("sleep", R"({"ms": 0})")).job_id);
  for (int i = 0; i < 5; ++i)
    ids.push_back(node.submit(request("flaky")).job_id);
  for (int i = 0; i < 3; ++i)
    ids.push_back(node.submit(request("fatal")).job_id);
  for (const auto& id : ids) {
    auto rec = node.client.wait(id, 60s);
    INFO(id);
    REQUIRE(rec);
    CHECK(is_terminal(rec->status));
  }
  for (const auto& id : ids) {
    auto stored = node.client.get(id);
    REQUIRE(stored);
    auto events = node.client.events(id);
    REQUIRE(events);
    // Replaying the history reproduces the projection exactly.
    auto replayed = replay(*events);
    REQUIRE(replayed);
    CHECK(*replayed == *stored);
    auto completed = std::count_if(
        events->begin(), events->end(),
        [](const job_event& ev) { return ev.kind == event_kind::completed; });
    if (stored->spec.type == "fatal") {
      CHECK(stored->status == job_status::failed);
      CHECK(stored->dead_lettered);
      CHECK(completed == 0);
    } else {
      CHECK(stored->status == job_status::completed);
      CHECK(completed == 1);
    }
    if (stored->spec.type == "flaky")
      CHECK(stored->attempt == 2);
  }
  auto dlq = node.client.dead_letters();
  REQUIRE(dlq);
  CHECK(dlq->size() == 3);
}

TEST_CASE("concurrent duplicate submissions create one job",
          "[pg][store][idempotency]") {
  test_db db;
  pg_node node{db.url(), {{"cpu", 1}}};
  node.submit(request("sleep", R"({"ms": 0})")); // store connected
  auto req = request("sleep", R"({"ms": 0})");
  req.tenant = "acme";
  req.idempotency_key = "invoice-7";
  req.resources = {{"nowhere", 1}}; // no worker: it stays queued
  constexpr int threads = 8;
  std::vector<std::string> got(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      test::direct_client c{node.sys, node.handles, 30s};
      auto rec = c.submit(req);
      got[static_cast<size_t>(t)] = rec ? rec->job_id : describe(rec.error());
    });
  for (auto& th : pool)
    th.join();
  for (const auto& id : got)
    CHECK(id == got[0]);
  auto conflict = req;
  conflict.input = R"({"ms": 1})";
  auto err = node.client.submit(conflict);
  REQUIRE_FALSE(err);
  CHECK(is(err.error(), errc::conflict));
  auto conn = db.connect();
  auto rows = must(conn.exec(
      "SELECT count(*) FROM drover.jobs WHERE idempotency_key = 'invoice-7'"));
  CHECK(rows.value(0, 0) == "1");
  auto events = must(conn.exec(
      "SELECT count(*) FROM drover.events e JOIN drover.jobs j USING (job_id) "
      "WHERE j.idempotency_key = 'invoice-7'"));
  CHECK(events.value(0, 0) == "1"); // one submitted event, no duplicates
}

TEST_CASE("group commit: concurrent submits share transactions",
          "[pg][store][group-commit]") {
  test_db db;
  pg_node node{db.url(), {{"cpu", 1}}};
  node.submit(request("sleep", R"({"ms": 0})"));
  auto before = commits_of(db);
  constexpr int threads = 16;
  constexpr int per_thread = 50;
  std::atomic<int> acked{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      test::direct_client c{node.sys, node.handles, 30s};
      auto req = request("sleep", R"({"ms": 0})");
      req.resources = {{"nowhere", 1}};
      for (int i = 0; i < per_thread; ++i)
        if (c.submit(req))
          ++acked;
    });
  for (auto& th : pool)
    th.join();
  auto after = commits_of(db);
  CHECK(acked == threads * per_thread);
  // Each acknowledged submit is durable, yet far fewer transactions than
  // submits committed (pg_stat counts our own reads too: generous bound).
  INFO("transactions: " << (after - before) << " for " << acked << " submits");
  CHECK(after - before < acked / 2);
  job_query q;
  q.limit = 10000;
  auto all = node.client.list(q);
  REQUIRE(all);
  CHECK(all->size() == static_cast<size_t>(threads * per_thread + 1));
}

TEST_CASE("a batch submit commits in one transaction, refusals per item",
          "[pg][store][batch]") {
  test_db db;
  pg_node node{db.url(), {{"cpu", 1}}};
  node.submit(request("sleep", R"({"ms": 0})"));
  // More items than the store's group-commit batch (2000): without the
  // batch path they would need at least two transactions.
  constexpr size_t n = 3000;
  std::vector<submit_request> reqs;
  for (size_t i = 0; i < n; ++i) {
    auto req = request("sleep", R"({"ms": 0})");
    req.resources = {{"nowhere", 1}}; // no worker: they stay queued
    reqs.push_back(std::move(req));
  }
  reqs[5].type = "no-such-type";
  reqs[6].idempotency_key = "batch-key";
  reqs[7] = reqs[6];
  reqs[7].input = R"({"ms": 1})"; // same key, different spec
  caf::scoped_actor self{node.sys};
  std::vector<job_record> got;
  self->request(node.handles->queue(), 30s, submit_atom::value, reqs)
      .receive([&](std::vector<job_record>& recs) { got = std::move(recs); },
               [](caf::error& err) { FAIL(describe(err)); });
  REQUIRE(got.size() == n);
  CHECK(got[5].job_id.empty());
  CHECK(got[5].error.code == "invalid_request");
  CHECK_FALSE(got[6].job_id.empty());
  CHECK(got[7].job_id.empty());
  CHECK(got[7].error.code == "conflict");
  size_t created = 0;
  for (auto& rec : got)
    created += rec.job_id.empty() ? 0 : 1;
  CHECK(created == n - 2);
  auto conn = db.connect();
  auto rows = must(conn.exec("SELECT count(*) FROM drover.jobs"));
  CHECK(rows.value(0, 0) == std::to_string(n - 2 + 1));
  // Every row of the batch was written by one transaction: they share
  // their xmin (the jobs stay queued, so no later update replaced it).
  // Counting commits in pg_stat cannot tell this any more: the lease
  // keeper's renewals commit on the same database meanwhile.
  std::string ids = "{";
  for (auto& rec : got)
    if (!rec.job_id.empty())
      ids += (ids.size() > 1 ? "," : "") + rec.job_id;
  ids += "}";
  auto writers
      = must(conn.exec("SELECT count(DISTINCT xmin::text) FROM drover.jobs "
                       "WHERE job_id = ANY($1::text[])",
                       pg::params{}.text(ids)));
  CHECK(writers.value(0, 0) == "1");
}

TEST_CASE("a cache smaller than the queue: evicted jobs are read back",
          "[pg][store][cache]") {
  test_db db;
  // 40 cached records for 300 queued jobs: most are evicted and every
  // later operation on them reads PostgreSQL again.
  pg_node node{db.url(), {{"cpu", 1}}, 40};
  node.submit(request("sleep", R"({"ms": 0})"));
  std::vector<std::string> ids;
  for (int i = 0; i < 300; ++i) {
    auto req = request("sleep", R"({"ms": 0})");
    req.resources = {{"nowhere", 1}}; // stays queued
    req.idempotency_key = "cache-" + std::to_string(i);
    ids.push_back(node.submit(req).job_id);
  }
  // An idempotent repeat of an early (evicted) job finds the same job; a
  // different spec under its key is a conflict.
  auto again = request("sleep", R"({"ms": 0})");
  again.resources = {{"nowhere", 1}};
  again.idempotency_key = "cache-3";
  CHECK(node.submit(again).job_id == ids[3]);
  again.input = R"({"ms": 5})";
  auto conflict = node.client.submit(again);
  REQUIRE_FALSE(conflict);
  CHECK(is(conflict.error(), errc::conflict));
  // Appends to evicted jobs: cancel every tenth job.
  for (size_t i = 0; i < ids.size(); i += 10)
    REQUIRE_FALSE(node.client.cancel(ids[i]));
  for (size_t i = 0; i < ids.size(); ++i) {
    auto rec = node.client.get(ids[i]);
    REQUIRE(rec);
    CHECK(rec->status
          == (i % 10 == 0 ? job_status::cancelled : job_status::queued));
  }
  // Jobs that run still complete with their records cycling through the
  // cache.
  std::vector<std::string> run;
  for (int i = 0; i < 120; ++i)
    run.push_back(node.submit(request("sleep", R"({"ms": 0})")).job_id);
  for (auto& id : run) {
    auto done = node.client.wait(id, 30s);
    REQUIRE(done);
    CHECK(done->status == job_status::completed);
  }
  auto conn = db.connect();
  auto rows = must(
      conn.exec("SELECT count(*) FROM drover.events WHERE kind = "
                + std::to_string(static_cast<int>(event_kind::completed))));
  CHECK(rows.value(0, 0) == std::to_string(120 + 1));
}

TEST_CASE("reads of uncached jobs after a restart are answered together",
          "[pg][store][cache]") {
  test_db db;
  std::vector<std::string> ids;
  {
    pg_node node{db.url(), {{"cpu", 1}}};
    for (int i = 0; i < 400; ++i) {
      auto req = request("sleep", R"({"ms": 0})");
      req.resources = {{"nowhere", 1}}; // stays queued
      req.input = R"({"ms": 0, "steps": )" + std::to_string(i) + "}";
      ids.push_back(node.submit(req).job_id);
    }
  }
  // A new node: its store's cache is empty. 400 gets in flight at once
  // (loaded in batches), one of them for a job that does not exist, then
  // appends to some of the loaded jobs.
  pg_node node{db.url(), {{"cpu", 1}}};
  node.submit(request("sleep", R"({"ms": 0})")); // the store is connected
  auto store = node.handles->store();
  caf::scoped_actor self{node.sys};
  std::vector<std::string> asked = ids;
  asked.insert(asked.begin() + 200, "no-such-job");
  for (const auto& id : asked)
    self->send(caf::actor_cast<caf::actor>(store), get_atom::value, id);
  // Replies come back in any order; match them by job id.
  std::map<std::string, job_record> got;
  int not_found = 0;
  for (size_t i = 0; i < asked.size(); ++i)
    self->receive(
        [&](job_record& rec) { got.emplace(rec.job_id, std::move(rec)); },
        [&](caf::error& err) {
          CHECK(is(err, errc::not_found));
          ++not_found;
        },
        caf::after(30s) >> [&] { FAIL("no answer within 30 s"); });
  CHECK(not_found == 1);
  REQUIRE(got.size() == ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    INFO(ids[i]);
    const auto& rec = got.at(ids[i]);
    CHECK(rec.status == job_status::queued);
    // Stored canonically (runtime/json_strict.hpp).
    CHECK(rec.spec.input == R"({"ms":0,"steps":)" + std::to_string(i) + "}");
  }
  for (size_t i = 0; i < ids.size(); i += 50)
    REQUIRE_FALSE(node.client.cancel(ids[i]));
  for (size_t i = 0; i < ids.size(); i += 25) {
    auto rec = node.client.get(ids[i]);
    REQUIRE(rec);
    CHECK(rec->status
          == (i % 50 == 0 ? job_status::cancelled : job_status::queued));
  }
}

TEST_CASE("a lost connection: writes are refused, then the store recovers",
          "[pg][store][outage]") {
  test_db db;
  pg_node node{db.url(), {{"cpu", 1}}};
  std::vector<std::string> acked;
  auto parked = request("sleep", R"({"ms": 0})");
  parked.resources = {{"nowhere", 1}};
  for (int i = 0; i < 10; ++i)
    acked.push_back(node.submit(parked).job_id);
  {
    auto admin = db.connect();
    must(admin.exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid()"));
  }
  // Until the store has reconnected, a submit fails with "unavailable" —
  // never an acknowledgement without a commit.
  int refused = 0;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (;;) {
    auto rec = node.client.submit(parked);
    if (rec) {
      acked.push_back(rec->job_id);
      break;
    }
    INFO(describe(rec.error()));
    REQUIRE(is(rec.error(), errc::unavailable));
    ++refused;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    caf::scoped_actor self{node.sys};
    self->receive(caf::after(20ms) >> [] {});
  }
  CHECK(refused >= 1);
  for (int i = 0; i < 5; ++i)
    acked.push_back(node.submit(parked).job_id);
  // Every acknowledged job is there, exactly once.
  for (const auto& id : acked) {
    auto rec = node.client.get(id);
    INFO(id);
    REQUIRE(rec);
    auto events = node.client.events(id);
    REQUIRE(events);
    CHECK(events->size() == 1);
  }
}
