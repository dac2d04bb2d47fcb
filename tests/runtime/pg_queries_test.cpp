// Integration tests of runtime/pg against a real PostgreSQL, reads: list
// queries, live jobs, partitions, pending webhooks and retention. Against
// the server DROVER_PG_URL points at (scripts/test starts a private one
// and sets it). Every test case works in its own database, created fresh
// and dropped at the end, so cases are independent and may run in
// parallel. Helpers: tests/support/pg_records.hpp.

#include "runtime/pg.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg_lease.hpp"

#include <catch2/catch.hpp>

#include "support/pg_records.hpp"
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::random_suffix;
using drover::testing::run;
using drover::testing::server_url;
using drover::testing::test_db;
using namespace drover::testing::pg_records;

// -- queries ------------------------------------------------------------------

TEST_CASE("list pages and filters like the memory store", "[pg]") {
  test_db db;
  auto s = db.session();
  std::vector<job> jobs;
  jobs.reserve(24);
  for (int i = 0; i < 24; ++i) {
    char id[8];
    std::snprintf(id, sizeof(id), "j%02d", i);
    jobs.emplace_back(id,
                      make_spec(i % 3 == 0 ? "acme" : "globex",
                                i % 2 == 0 ? "export" : "import", ""),
                      1000 + i);
    auto& j = jobs.back();
    switch (i % 4) {
      case 0:
        break; // queued
      case 1:
        j.start(2000);
        break;
      case 2:
        j.start(2000).complete(3000);
        break;
      case 3:
        j.start(2000).fail(3000);
        if (i % 8 == 3)
          j.dead_letter(3001);
        break;
    }
  }
  pg::write_batch batch;
  for (auto& j : jobs)
    j.add_to(batch);
  value_of(s.write(batch));
  // The memory store's matching rule (actors/memory_store.cpp).
  auto expected_ids = [&jobs](const job_query& q) {
    std::vector<std::string> out;
    for (const auto& j : jobs) {
      const auto& rec = j.record();
      if (rec.job_id <= q.after)
        continue;
      if (q.status >= 0 && static_cast<int32_t>(rec.status) != q.status)
        continue;
      if (q.dead_lettered && !rec.dead_lettered)
        continue;
      if (!q.tenant.empty() && rec.spec.tenant != q.tenant)
        continue;
      if (!q.type.empty() && rec.spec.type != q.type)
        continue;
      if (out.size() < q.limit)
        out.push_back(rec.job_id);
    }
    return out;
  };
  std::vector<job_query> queries;
  for (int32_t status : {-1, 0, 2, 4, 5, 6})
    for (bool dlq : {false, true})
      for (const char* tenant : {"", "acme", "globex", "nobody"})
        for (const char* type : {"", "export", "import"}) {
          job_query q;
          q.status = status;
          q.dead_lettered = dlq;
          q.tenant = tenant;
          q.type = type;
          queries.push_back(q);
        }
  for (auto q : queries) {
    INFO("status " << q.status << " dlq " << q.dead_lettered << " tenant '"
                   << q.tenant << "' type '" << q.type << "'");
    CHECK(ids_of(value_of(s.list(q))) == expected_ids(q));
    // Paging by 3 concatenates to the same list.
    std::vector<std::string> paged;
    q.limit = 3;
    for (;;) {
      auto page = ids_of(value_of(s.list(q)));
      REQUIRE(page.size() <= 3);
      paged.insert(paged.end(), page.begin(), page.end());
      if (page.size() < 3)
        break;
      q.after = page.back();
    }
    q.after.clear();
    q.limit = 100;
    CHECK(paged == expected_ids(q));
  }
  job_query q;
  q.after = "j20";
  CHECK(ids_of(value_of(s.list(q)))
        == std::vector<std::string>{"j21", "j22", "j23"});
  q = {};
  q.status = 42;
  CHECK(value_of(s.list(q)).empty());
  q = {};
  q.limit = 0;
  CHECK(is(error_of(s.list(q)), errc::invalid_request));
  q.limit = 10001;
  CHECK(is(error_of(s.list(q)), errc::invalid_request));
  // Records come back whole.
  q = {};
  q.dead_lettered = true;
  auto dlq = value_of(s.list(q));
  REQUIRE(dlq.size() == 3);
  CHECK(dlq[0] == jobs[3].record());
}

TEST_CASE("live_jobs returns the non-terminal jobs for recovery", "[pg]") {
  test_db db;
  auto s = db.session();
  job queued{"j1", make_spec("t", "x", "")};
  job running{"j2", make_spec("t", "x", "")};
  running.start(2000).progress(50, 2100);
  job done{"j3", make_spec("t", "x", "")};
  done.start(2000).complete(2500);
  job cancelled{"j4", make_spec("t", "x", "")};
  cancelled.cancel(1500);
  job failed{"j5", make_spec("t", "x", "")};
  failed.start(2000).fail(2500).dead_letter(2501);
  job scheduled{"j6", [] {
                  auto spec = make_spec("t", "x", "");
                  spec.run_at_ms = 999999;
                  return spec;
                }()};
  value_of(s.write(
      batch_of({&queued, &running, &done, &cancelled, &failed, &scheduled})));
  auto live = value_of(s.live_jobs());
  CHECK(ids_of(live) == std::vector<std::string>{"j1", "j2", "j6"});
  CHECK(live[1] == running.record());
  CHECK(ids_of(value_of(s.live_jobs("j1", 1)))
        == std::vector<std::string>{"j2"});
  CHECK(value_of(s.live_jobs("j6")).empty());
}

// -- partitions ---------------------------------------------------------------

TEST_CASE("drover.partition_of computes what partition_of_id computes",
          "[pg][partition]") {
  test_db db;
  auto s = db.session();
  std::vector<std::string> ids{"",
                               "-",
                               "--",
                               "j",
                               "12",
                               "-5",
                               "x-0",
                               "x-00",
                               "x-0042",
                               "x-0000",
                               "x-00000",
                               "a-12345",
                               "x-4095",
                               "x-4096",
                               "x-9999",
                               "x-409",
                               "j-17",
                               "j0h5kq3v7m2abc-17",
                               "j0h5kq3v7m2abc",
                               "a-b-3",
                               "a-3-b",
                               "a--1",
                               "a-1-",
                               "a-+1",
                               "a- 1",
                               "a-1 ",
                               " a-1",
                               "x-12\n",
                               "x-\n12",
                               "x-1\n2",
                               "x-1.5",
                               "x-1e3",
                               "x-0x1",
                               "x--0042",
                               "x-\xd9\xa3",
                               "x-\xef\xbc\x91\xef\xbc\x92",
                               "\xc3\xa9-7",
                               "x-7\xc3\xa9",
                               "j-" + std::string(5000, '1'),
                               std::string(300, '-') + "99"};
  // And random ids from an alphabet that makes near misses likely.
  std::mt19937 rng{20261202};
  const std::string alphabet = "-0123456789-9x ";
  for (int i = 0; i < 3000; ++i) {
    std::string id;
    auto len = std::uniform_int_distribution<int>{0, 9}(rng);
    for (int k = 0; k < len; ++k)
      id += alphabet[std::uniform_int_distribution<size_t>{0, alphabet.size()
                                                                  - 1}(rng)];
    ids.push_back(std::move(id));
  }
  pg::array_param arr{pg::array_param::element::text, ids.size()};
  for (const auto& id : ids)
    arr.text(id);
  auto res = run(s.conn(),
                 "SELECT i, drover.partition_of(x) FROM "
                 "unnest($1::text[]) WITH ORDINALITY AS u(x, i) ORDER BY i",
                 pg::params{}.array(arr));
  REQUIRE(res.rows() == static_cast<int>(ids.size()));
  int differ = 0;
  for (int row = 0; row < res.rows(); ++row) {
    const auto& id = ids[static_cast<size_t>(row)];
    auto sql = std::stoi(std::string{res.value(row, 1)});
    auto cpp = partition_of_id(id);
    if (sql != cpp) {
      ++differ;
      UNSCOPED_INFO("'" << id << "': SQL " << sql << ", C++ " << cpp);
    }
  }
  CHECK(differ == 0);
  // A few by hand, so the comparison is not vacuous.
  CHECK(partition_of_id("x-0042") == 42);
  CHECK(partition_of_id("a-12345") == 0);
  CHECK(partition_of_id("x-4095") == 4095);
  CHECK(partition_of_id("x-4096") == 0);
  // The function is usable in an index (immutable) and in parallel plans.
  CHECK(count(s.conn(), "SELECT count(*) FROM pg_proc WHERE oid = "
                        "'drover.partition_of(text)'::regprocedure "
                        "AND provolatile = 'i' AND proparallel = 's'")
        == 1);
}

TEST_CASE("live_jobs_of pages one partition's live jobs from its index",
          "[pg][partition]") {
  test_db db;
  auto s = db.session();
  // 64 partitions of 40 jobs each: job k of partition p is "j<k>-<p>",
  // every fourth one finished; plus ids outside the scheme (partition 0)
  // and a 5-digit suffix (partition 0 too).
  std::vector<job> jobs;
  jobs.reserve(64 * 40 + 3);
  for (int p = 0; p < 64; ++p)
    for (int k = 0; k < 40; ++k) {
      char id[32];
      std::snprintf(id, sizeof(id), "j%04d-%d", k, p);
      jobs.emplace_back(id, make_spec("t", "x", ""));
      if (k % 4 == 3)
        jobs.back().start(1100).complete(1200);
    }
  jobs.emplace_back("legacy0001", make_spec("t", "x", ""));
  jobs.emplace_back("j9999-12345", make_spec("t", "x", ""));
  jobs.emplace_back("j9998-0005", make_spec("t", "x", "")); // partition 5
  pg::write_batch all;
  for (auto& j : jobs)
    j.add_to(all);
  value_of(s.write(all));
  auto expected_of = [&jobs](int32_t p) {
    std::vector<std::string> out;
    for (const auto& j : jobs)
      if (partition_of_id(j.id()) == p && !is_terminal(j.record().status))
        out.push_back(j.id());
    std::sort(out.begin(), out.end());
    return out;
  };
  for (int32_t p : {0, 5, 63}) {
    INFO("partition " << p);
    // Pages of 7 from the start, each after the last one's end.
    std::vector<std::string> got;
    std::string after;
    for (;;) {
      auto page = value_of(s.live_jobs_of(p, after, 7));
      for (const auto& rec : page) {
        CHECK(partition_of_id(rec.job_id) == p);
        CHECK_FALSE(is_terminal(rec.status));
        got.push_back(rec.job_id);
      }
      if (page.size() < 7)
        break;
      after = page.back().job_id;
    }
    CHECK(got == expected_of(p));
  }
  CHECK(expected_of(0).size() == 32); // 30 of its own, the two old ids
  CHECK(expected_of(5).size() == 31);
  CHECK(value_of(s.live_jobs_of(64, "", 10)).empty()); // no such jobs
  CHECK(is(error_of(s.live_jobs_of(-1, "", 10)), errc::invalid_request));
  CHECK(is(error_of(s.live_jobs_of(max_partitions, "", 10)),
           errc::invalid_request));
  CHECK(is(error_of(s.live_jobs_of(1, "", 0)), errc::invalid_request));
  // The read comes from jobs_live_partition, not from a scan of every live
  // job (jobs_live) or of the table: the scans it caused, as the session's
  // own not yet reported counters show them before and after.
  auto& conn = s.conn();
  run(conn, "ANALYZE drover.jobs");
  auto scans = [&conn] {
    auto res = run(conn, "SELECT "
                         "pg_stat_get_xact_numscans('drover.jobs_live_"
                         "partition'::regclass), "
                         "pg_stat_get_xact_numscans('drover.jobs_live'"
                         "::regclass), "
                         "pg_stat_get_xact_numscans('drover.jobs'::regclass)");
    std::vector<int64_t> out;
    for (int col = 0; col < 3; ++col)
      out.push_back(std::stoll(std::string{res.value(0, col)}));
    return out;
  };
  run(conn, "BEGIN");
  auto before = scans();
  auto page = value_of(s.live_jobs_of(17, "j0005-17", 100));
  auto after = scans();
  run(conn, "ROLLBACK");
  CHECK(page.size() == expected_of(17).size() - 5);
  CHECK(after[0] - before[0] == 1); // jobs_live_partition
  CHECK(after[1] - before[1] == 0); // jobs_live
  CHECK(after[2] - before[2] == 0); // sequential scans of drover.jobs
}

TEST_CASE("pending_webhooks of some partitions leaves the others out",
          "[pg][partition][webhook]") {
  test_db db;
  auto s = db.session();
  auto spec = make_spec("t", "x", "");
  spec.callback_url = "https://example.com/hook";
  std::vector<job> jobs;
  for (const char* id : {"j1-1", "j2-2", "j3-3", "j4-1", "legacy01"}) {
    jobs.emplace_back(id, spec);
    jobs.back().start(2000).complete(2500);
  }
  pg::write_batch b;
  for (auto& j : jobs)
    j.add_to(b);
  value_of(s.write(b));
  CHECK(
      ids_of(value_of(s.pending_webhooks("", 100)))
      == std::vector<std::string>{"j1-1", "j2-2", "j3-3", "j4-1", "legacy01"});
  CHECK(ids_of(value_of(s.pending_webhooks("", 100, {0, 1})))
        == std::vector<std::string>{"j1-1", "j4-1", "legacy01"});
  CHECK(ids_of(value_of(s.pending_webhooks("j1-1", 1, {1, 3})))
        == std::vector<std::string>{"j3-3"});
  CHECK(value_of(s.pending_webhooks("", 100, {})).empty());
  CHECK(is(error_of(s.pending_webhooks("", 0, {1})), errc::invalid_request));
}

TEST_CASE("a fenced purge deletes in the fence's partitions only and is "
          "refused when one of them was taken over",
          "[pg][partition][lease][fence]") {
  test_db db;
  auto s = db.session();
  auto grant_attempt
      = value_of(pg::try_acquire_all(s, pg::this_process("purger"), 60000ms));
  REQUIRE(grant_attempt.grant);
  const auto& grant = *grant_attempt.grant;
  // Finished long ago, in partitions 0 to 3.
  std::vector<job> jobs;
  for (const char* id : {"j1-0", "j2-1", "j3-2", "j4-3", "j5-1", "j6-3"}) {
    jobs.emplace_back(id, make_spec("t", "x", ""));
    jobs.back().start(1100).complete(1200);
  }
  pg::write_batch b;
  for (auto& j : jobs)
    j.add_to(b);
  value_of(s.write(b)); // unfenced: every partition
  // A coordinator that owns partitions 1 and 3 only.
  auto fence = std::make_shared<pg::write_fence>();
  fence->instance = grant.owner.instance;
  for (int32_t p : {1, 3}) {
    fence->partitions.push_back(p);
    fence->epochs.push_back(grant.epochs[static_cast<size_t>(p)]);
  }
  auto f = db.session();
  f.set_fence(fence);
  auto& conn = s.conn();
  auto left = [&conn] {
    auto res = run(conn, "SELECT string_agg(job_id, ',' ORDER BY job_id) "
                         "FROM drover.jobs");
    return std::string{res.value(0, 0)};
  };
  // A partition outside the fence being taken over is none of its
  // business.
  run(conn, "UPDATE drover.partition_leases SET epoch = epoch + 1, "
            "owner = 'other' WHERE partition = 2");
  CHECK(value_of(f.purge_finished(5000, 100)) == 4);
  CHECK(left() == "j1-0,j3-2");
  // One of its own taken over: nothing is deleted, not even in the other.
  job more{"j7-1", make_spec("t", "x", "")};
  more.start(1100).complete(1200);
  value_of(s.write(batch_of({&more})));
  run(conn, "UPDATE drover.partition_leases SET epoch = epoch + 1 "
            "WHERE partition = 3");
  auto refused_purge = f.purge_finished(5000, 100);
  REQUIRE_FALSE(refused_purge);
  CHECK(is(refused_purge.error(), errc::not_owner));
  CHECK(mentions(refused_purge.error(), "partition 3"));
  CHECK(left() == "j1-0,j3-2,j7-1");
  // A fence without partitions purges nothing.
  auto empty = std::make_shared<pg::write_fence>();
  empty->instance = grant.owner.instance;
  f.set_fence(empty);
  CHECK(value_of(f.purge_finished(5000, 100)) == 0);
  CHECK(left() == "j1-0,j3-2,j7-1");
}

TEST_CASE("pending_webhooks returns the jobs that still owe a webhook",
          "[pg][webhook]") {
  test_db db;
  auto s = db.session();
  auto with_url = [] {
    auto spec = make_spec("t", "x", "");
    spec.callback_url = "https://example.com/hook";
    return spec;
  };
  job owes{"j1", with_url()};
  owes.start(2000).complete(2500);
  job retrying{"j2", with_url()};
  retrying.start(2000).fail(2500).dead_letter(2501);
  job delivered{"j3", with_url()};
  delivered.start(2000).complete(2500);
  job no_url{"j4", make_spec("t", "x", "")};
  no_url.start(2000).complete(2500);
  job running{"j5", with_url()};
  running.start(2000);
  job cancelled{"j6", with_url()};
  cancelled.cancel(1500);
  value_of(s.write(
      batch_of({&owes, &retrying, &delivered, &no_url, &running, &cancelled})));
  // Attempts are written like any event; only a final outcome settles.
  retrying.webhook(webhook_outcome::retrying, 3000);
  delivered.webhook(webhook_outcome::retrying, 3000)
      .webhook(webhook_outcome::delivered, 4000);
  value_of(s.write(batch_of({&retrying, &delivered})));
  auto pending = value_of(s.pending_webhooks("", 100));
  CHECK(ids_of(pending) == std::vector<std::string>{"j1", "j2", "j6"});
  CHECK(pending[1] == retrying.record());
  CHECK(pending[1].status == job_status::failed);
  CHECK(ids_of(value_of(s.pending_webhooks("j1", 1)))
        == std::vector<std::string>{"j2"});
  CHECK(is(error_of(s.pending_webhooks("", 0)), errc::invalid_request));
  // The stored history replays to the stored record, webhooks included.
  auto events = value_of(s.load_events("j3"));
  CHECK(events.back().kind == event_kind::webhook_attempted);
  CHECK(events.back().webhook.outcome == webhook_outcome::delivered);
  CHECK(value_of(replay(events)) == value_of(s.load_job("j3")));
  // The column follows the record.
  auto& conn = s.conn();
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs WHERE webhook_pending")
        == 3);
}

TEST_CASE("retention keeps a finished job until its webhook is settled",
          "[pg][webhook]") {
  test_db db;
  auto s = db.session();
  auto spec = make_spec("t", "x", "");
  spec.callback_url = "https://example.com/hook";
  job owes{"j1", spec};
  owes.start(1100).complete(1200);
  job plain{"j2", make_spec("t", "x", "")};
  plain.start(1100).complete(1300);
  value_of(s.write(batch_of({&owes, &plain})));
  // Both are old enough; only the one without a pending webhook goes.
  CHECK(value_of(s.purge_finished(5000, 100)) == 1);
  CHECK(value_of(s.load_job("j1")) == owes.record());
  CHECK(is(error_of(s.load_job("j2")), errc::not_found));
  // Once the delivery has a final outcome, the job may go.
  owes.webhook(webhook_outcome::delivered, 2000);
  value_of(s.write(batch_of({&owes})));
  CHECK(value_of(s.purge_finished(5000, 100)) == 1);
  CHECK(is(error_of(s.load_job("j1")), errc::not_found));
  CHECK(is(error_of(s.load_events("j1")), errc::not_found));
}

// -- retention ----------------------------------------------------------------

TEST_CASE("purge_finished removes old finished jobs only", "[pg]") {
  test_db db;
  auto s = db.session();
  job completed_old{"j01", make_spec("t", "x", "k1")};
  completed_old.start(1100).complete(1200);
  job cancelled_old{"j02", make_spec("t", "x", "")};
  cancelled_old.cancel(1300);
  job failed_old{"j03", make_spec("t", "x", "")};
  failed_old.start(1100).fail(1400);
  job dlq_old{"j04", make_spec("t", "x", "")};
  dlq_old.start(1100).fail(1150).dead_letter(1151);
  job left_dlq_old{"j05", make_spec("t", "x", "")};
  left_dlq_old.start(1100).fail(1160).dead_letter(1161).purge_from_dlq(1162);
  job completed_new{"j06", make_spec("t", "x", "")};
  completed_new.start(4000).complete(5000);
  job queued_old{"j07", make_spec("t", "x", ""), 100};
  job running_old{"j08", make_spec("t", "x", ""), 100};
  running_old.start(150);
  value_of(s.write(
      batch_of({&completed_old, &cancelled_old, &failed_old, &dlq_old,
                &left_dlq_old, &completed_new, &queued_old, &running_old})));
  auto& conn = s.conn();
  // Oldest first, at most max_jobs per call.
  CHECK(value_of(s.purge_finished(2000, 2)) == 2);
  CHECK(is(error_of(s.load_job("j05")), errc::not_found)); // completed 1160
  CHECK(is(error_of(s.load_job("j01")), errc::not_found)); // completed 1200
  CHECK(value_of(s.purge_finished(2000, 100)) == 2);       // j02, j03
  CHECK(value_of(s.purge_finished(2000, 100)) == 0);
  CHECK(value_of(s.purge_finished(2000, 0)) == 0);
  for (const char* gone : {"j01", "j02", "j03", "j05"}) {
    INFO(gone);
    CHECK(is(error_of(s.load_job(gone)), errc::not_found));
    CHECK(is(error_of(s.load_events(gone)), errc::not_found));
  }
  for (auto* kept : {&dlq_old, &completed_new, &queued_old, &running_old}) {
    INFO(kept->id());
    CHECK(value_of(s.load_job(kept->id())) == kept->record());
    CHECK(value_of(s.load_events(kept->id())) == kept->events());
  }
  // The idempotency key of a purged job is free again.
  CHECK(is(error_of(s.find_by_key("t", "k1")), errc::not_found));
  // The function's permission to delete does not outlive it, not even
  // within the caller's transaction.
  run(conn, "BEGIN");
  run(conn, "SELECT drover.purge_finished(999999, 10)");
  auto err = refused(conn, "DELETE FROM drover.events");
  CHECK(mentions(err, "append-only: DELETE refused"));
  run(conn, "ROLLBACK");
  CHECK(value_of(s.load_job("j06")) == completed_new.record());
}
