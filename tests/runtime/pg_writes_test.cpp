// Integration tests of runtime/pg against a real PostgreSQL, writes: the
// schema, batches, the append-only audit log and idempotency. Against
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

// -- schema -------------------------------------------------------------------

TEST_CASE("migrations create the schema and are safe to run twice", "[pg]") {
  test_db db;
  auto s = db.session(false);
  CHECK(value_of(s.schema_version()) == 0);
  require_ok(s.migrate());
  require_ok(s.migrate());
  const auto& all = pg::migrations();
  REQUIRE_FALSE(all.empty());
  CHECK(value_of(s.schema_version()) == all.back().version);
  auto& conn = s.conn();
  CHECK(count(conn, "SELECT count(*) FROM drover.schema_migrations")
        == static_cast<int64_t>(all.size()));
  for (const char* rel :
       {"drover.events", "drover.jobs", "drover.schema_migrations",
        "drover.jobs_idempotency", "drover.jobs_finished", "drover.jobs_dlq",
        "drover.jobs_live", "drover.jobs_tenant", "drover.jobs_purgeable",
        "drover.jobs_live_partition"})
    CHECK(count(conn,
                "SELECT count(*) FROM pg_class WHERE oid = "
                "to_regclass($1)",
                pg::params{}.text(rel))
          == 1);
  CHECK(count(conn, "SELECT count(*) FROM pg_proc WHERE oid = "
                    "'drover.purge_finished(bigint, integer)'::regprocedure")
        == 1);
  // A second session sees a current schema and changes nothing.
  auto other = db.session(false);
  require_ok(other.migrate());
  CHECK(count(conn, "SELECT count(*) FROM drover.schema_migrations")
        == static_cast<int64_t>(all.size()));
}

TEST_CASE("concurrent migrations serialise on the advisory lock", "[pg]") {
  test_db db;
  constexpr int n = 4;
  std::vector<pg::session> sessions;
  for (int i = 0; i < n; ++i)
    sessions.push_back(db.session(false));
  std::vector<caf::error> errors(n);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < n)
        std::this_thread::yield();
      errors[i] = sessions[i].migrate();
    });
  for (auto& t : threads)
    t.join();
  for (auto& err : errors)
    require_ok(err);
  CHECK(
      count(sessions[0].conn(), "SELECT count(*) FROM drover.schema_migrations")
      == static_cast<int64_t>(pg::migrations().size()));
}

TEST_CASE("notices are collected, not printed", "[pg]") {
  test_db db;
  auto conn = db.connect();
  run(conn, "DO $$ BEGIN RAISE NOTICE 'hello from the server'; END $$");
  auto notices = conn.take_notices();
  REQUIRE(notices.size() == 1);
  CHECK(notices[0].find("hello from the server") != std::string::npos);
  CHECK(conn.take_notices().empty());
  conn.drop_notices();
  run(conn, "DO $$ BEGIN RAISE NOTICE 'dropped'; END $$");
  CHECK(conn.take_notices().empty());
}

// -- writing and reading ------------------------------------------------------

TEST_CASE("events and projections agree and replay to the stored record",
          "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("acme", "video.transcode", "order-1"), 1000};
  job b{"j-b", make_spec("acme", "export", ""), 1001};
  // Batch 1: a's submit; b's submit and start together.
  b.start(1002);
  auto first = value_of(s.write(batch_of({&a, &b})));
  CHECK(first.duplicate_submits.empty());
  // Batch 2: a runs to completion, binary checkpoint included.
  a.start(2000)
      .progress(40, 2100)
      .checkpoint(std::string{"ck\0\x01\xff", 5}, 2200)
      .progress(80, 2300)
      .complete(2400);
  value_of(s.write(batch_of({&a})));
  for (auto* j : {&a, &b}) {
    INFO(j->id());
    auto rec = value_of(s.load_job(j->id()));
    CHECK(rec == j->record());
    auto events = value_of(s.load_events(j->id()));
    CHECK(events == j->events());
    CHECK(value_of(replay(events)) == rec);
    // Read on from a sequence, a page at a time: the same events.
    std::vector<job_event> paged;
    for (uint64_t after = 0;;) {
      auto page = value_of(s.load_events(j->id(), after, 2));
      REQUIRE(page.size() <= 2);
      if (page.empty())
        break;
      CHECK(page.front().sequence == after + 1);
      after = page.back().sequence;
      paged.insert(paged.end(), page.begin(), page.end());
    }
    CHECK(paged == events);
  }
  CHECK(value_of(s.load_events("j-a", 6, 10)).empty());
  CHECK(value_of(s.load_events("nope", 0, 10)).empty());
  CHECK(ids_of(value_of(s.list(job_query{})))
        == std::vector<std::string>{"j-a", "j-b"});
  auto& conn = s.conn();
  auto row = run(conn, "SELECT status, priority, dead_lettered, created_at_ms, "
                       "updated_at_ms, completed_at_ms, seq, tenant, type, "
                       "idempotency_key FROM drover.jobs WHERE job_id = 'j-a'");
  CHECK(row.value(0, 0) == "4");
  CHECK(row.value(0, 2) == "f");
  CHECK(row.value(0, 3) == "1000");
  CHECK(row.value(0, 4) == "2400");
  CHECK(row.value(0, 5) == "2400");
  CHECK(row.value(0, 6) == "6");
  CHECK(row.value(0, 7) == "acme");
  CHECK(row.value(0, 9) == "order-1");
  CHECK(run(conn, "SELECT idempotency_key FROM drover.jobs "
                  "WHERE job_id = 'j-b'")
            .is_null(0, 0));
  // final_status: the terminal status, NULL while live (migration 3).
  CHECK(run(conn, "SELECT final_status FROM drover.jobs WHERE job_id = 'j-a'")
            .value(0, 0)
        == "4");
  CHECK(run(conn, "SELECT final_status FROM drover.jobs WHERE job_id = 'j-b'")
            .is_null(0, 0));
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 8);
  CHECK(is(error_of(s.load_job("nope")), errc::not_found));
  CHECK(is(error_of(s.load_events("nope")), errc::not_found));
  CHECK(value_of(s.find_by_key("acme", "order-1")) == a.record());
  CHECK(is(error_of(s.find_by_key("other", "order-1")), errc::not_found));
  CHECK(is(error_of(s.find_by_key("acme", "")), errc::not_found));
}

TEST_CASE("a batch is all or nothing", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "")};
  value_of(s.write(batch_of({&a})));
  auto& conn = s.conn();
  SECTION("an update of an unknown job") {
    job c{"j-c", make_spec("t", "x", "")};
    a.start(2000);
    auto batch = batch_of({&a});
    auto ghost = c.record();
    ghost.sequence = 2;
    batch.updates.push_back(ghost);
    batch.events.push_back(c.events()[0]);
    batch.events.back().sequence = 2;
    auto err = error_of(s.write(batch));
    CHECK(is(err, errc::not_found));
    CHECK(mentions(err, "j-c"));
  }
  SECTION("an update that does not move the projection forward") {
    auto stale = a.record();
    pg::write_batch batch;
    batch.updates.push_back(stale);
    auto err = error_of(s.write(batch));
    CHECK(is(err, errc::conflict));
    CHECK(mentions(err, "is at seq 1"));
  }
  SECTION("an event that exists") {
    pg::write_batch batch;
    a.start(2000);
    batch.events.push_back(a.events()[0]);
    batch.updates.push_back(a.record());
    auto err = error_of(s.write(batch));
    CHECK(is(err, errc::conflict));
    CHECK(mentions(err, "23505"));
  }
  SECTION("an event without its job in the batch") {
    a.start(2000);
    pg::write_batch batch;
    batch.events.push_back(a.events()[1]);
    CHECK(is(error_of(s.write(batch)), errc::invalid_value));
  }
  SECTION("a job id that exists") {
    job again{"j-a", make_spec("t", "x", "")};
    auto err = error_of(s.write(batch_of({&again})));
    CHECK(is(err, errc::conflict));
    CHECK(mentions(err, "'j-a' exists"));
  }
  // Nothing of the failed batch arrived; the session is usable.
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 1);
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs") == 1);
  CHECK(value_of(s.load_job("j-a")).sequence == 1);
  CHECK_FALSE(conn.in_transaction());
}

TEST_CASE("batches beyond libpq's parameter limit are written", "[pg]") {
  test_db db;
  auto s = db.session();
  // 12,000 events and 6,000 submits: as one parameter per value they would
  // exceed 65,535 parameters several times over; as arrays they are one
  // statement each.
  std::vector<job> jobs;
  jobs.reserve(6000);
  for (int i = 0; i < 6000; ++i) {
    char id[16];
    std::snprintf(id, sizeof(id), "j%06d", i);
    jobs.emplace_back(id, make_spec("t", "x", id), 1000 + i);
    jobs.back().start(5000 + i);
  }
  pg::write_batch batch;
  for (auto& j : jobs)
    j.add_to(batch);
  REQUIRE(batch.events.size() == 12000);
  CHECK(value_of(s.write(batch)).duplicate_submits.empty());
  auto& conn = s.conn();
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 12000);
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs WHERE status = 2")
        == 6000);
  CHECK(value_of(s.committed(batch)));
  CHECK(value_of(s.load_job("j005999")) == jobs.back().record());
}

TEST_CASE("live transitions are HOT updates, the terminal one is not", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "key-a")};
  value_of(s.write(batch_of({&a})));
  a.start(2000);
  value_of(s.write(batch_of({&a}))); // queued -> processing
  a.progress(50, 2100);
  value_of(s.write(batch_of({&a}))); // processing, progress
  a.complete(2200);
  value_of(s.write(batch_of({&a}))); // -> completed
  // Statistics reach the shared counters when the writing backend goes
  // idle: forced here, then read from another connection (re-read until a
  // deadline in case the flush met a lock and was deferred).
  run(s.conn(), "SELECT pg_stat_force_next_flush()");
  auto watcher = db.session(false);
  auto& conn = watcher.conn();
  const std::string stats
      = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE relid = 'drover.jobs'::regclass";
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds{10};
  int64_t updates = 0;
  int64_t hot = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    run(conn, "SELECT pg_stat_clear_snapshot()");
    auto row = run(conn, stats);
    updates = std::stoll(std::string{row.value(0, 0)});
    hot = std::stoll(std::string{row.value(0, 1)});
    if (updates >= 3)
      break;
    run(s.conn(), "SELECT pg_stat_force_next_flush()");
  }
  REQUIRE(updates == 3);
  // start and progress change no indexed column; completion sets
  // final_status and completed_at_ms, which the indexes use.
  CHECK(hot == 2);
}

TEST_CASE("array parameters carry NULLs, bytes and every integer width",
          "[pg]") {
  test_db db;
  auto s = db.session(false);
  auto& conn = s.conn();
  using el = pg::array_param::element;
  pg::array_param texts{el::text}, blobs{el::bytea}, i2{el::int2}, i4{el::int4},
      i8{el::int8}, flags{el::boolean};
  texts.text("a'b").null().text("\u00e9t\u00e9");
  blobs.bytes(std::string{"\0\x01\xff", 3}.data(), 3).null().bytes("", 0);
  i2.int16(-32768).null().int16(32767);
  i4.int32(-2147483647 - 1).null().int32(2147483647);
  i8.int64(INT64_MIN).null().int64(INT64_MAX);
  flags.boolean(true).null().boolean(false);
  auto res = value_of(conn.exec(
      "SELECT t, encode(b, 'hex'), x2, x4, x8, f FROM unnest($1::text[], "
      "$2::bytea[], $3::int2[], $4::int4[], $5::int8[], $6::bool[]) "
      "AS u(t, b, x2, x4, x8, f)",
      pg::params{}
          .array(texts)
          .array(blobs)
          .array(i2)
          .array(i4)
          .array(i8)
          .array(flags)));
  REQUIRE(res.rows() == 3);
  CHECK(res.value(0, 0) == "a'b");
  CHECK(res.value(0, 1) == "0001ff");
  CHECK(res.value(0, 2) == "-32768");
  CHECK(res.value(0, 3) == "-2147483648");
  CHECK(res.value(0, 4) == "-9223372036854775808");
  CHECK(res.value(0, 5) == "t");
  for (int col = 0; col < 6; ++col)
    CHECK(res.is_null(1, col));
  CHECK(res.value(2, 0) == "\u00e9t\u00e9");
  CHECK(res.value(2, 1).empty());
  CHECK_FALSE(res.is_null(2, 1));
  CHECK(res.value(2, 4) == "9223372036854775807");
  CHECK(res.value(2, 5) == "f");
  // An empty array is a valid, empty parameter.
  CHECK(value_of(conn.exec("SELECT cardinality($1::int8[])",
                           pg::params{}.array(pg::array_param{el::int8})))
            .value(0, 0)
        == "0");
  // A NUL byte in text is refused before anything is sent.
  pg::array_param bad{el::text};
  bad.text("ok").text(std::string{"a\0b", 3});
  auto err = error_of(conn.exec("SELECT $1::text[]", pg::params{}.array(bad)));
  CHECK(is(err, errc::invalid_value));
  CHECK(mentions(err, "NUL"));
}

// -- the audit log is append-only ---------------------------------------------

TEST_CASE("the audit log refuses UPDATE, DELETE and TRUNCATE", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "")};
  a.start(2000).complete(3000);
  value_of(s.write(batch_of({&a})));
  auto conn = db.connect();
  auto err = refused(conn, "UPDATE drover.events SET at_ms = 0");
  CHECK(is(err, errc::invalid_value));
  CHECK(mentions(err, "drover.events is append-only: UPDATE refused"));
  err = refused(conn, "DELETE FROM drover.events WHERE job_id = 'j-a'");
  CHECK(mentions(err, "drover.events is append-only: DELETE refused"));
  err = refused(conn, "TRUNCATE drover.events");
  CHECK(mentions(err, "drover.events is append-only: TRUNCATE refused"));
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 3);
  // Privileges: PUBLIC holds none of the forbidden ones.
  CHECK(count(conn, "SELECT count(*) FROM information_schema.role_table_grants "
                    "WHERE table_schema = 'drover' AND table_name = 'events' "
                    "AND grantee = 'PUBLIC'")
        == 0);
}

TEST_CASE("an application role can append and purge but never delete", "[pg]") {
  test_role app; // outlives the database
  test_db db;
  auto owner = db.session();
  job old{"j-old", make_spec("t", "x", "")};
  old.start(1100).complete(1200);
  value_of(owner.write(batch_of({&old})));
  // The grants the schema's comments prescribe for drover_app.
  auto& conn = owner.conn();
  const auto& role = app.name();
  run(conn, "GRANT USAGE ON SCHEMA drover TO " + role);
  run(conn, "GRANT SELECT ON drover.schema_migrations TO " + role);
  run(conn, "GRANT SELECT, INSERT ON drover.events TO " + role);
  run(conn, "GRANT SELECT, INSERT, UPDATE ON drover.jobs TO " + role);
  run(conn, "GRANT EXECUTE ON FUNCTION drover.purge_finished(bigint, integer) "
            "TO "
                + role);
  auto s = value_of(pg::session::open(
      value_of(pg::conninfo_with(db.url(), {{"user", role}}))));
  require_ok(s.migrate()); // current schema: only reads
  job fresh{"j-new", make_spec("t", "x", "")};
  fresh.start(5000);
  value_of(s.write(batch_of({&fresh})));
  auto& app_conn = s.conn();
  auto err = refused(app_conn, "DELETE FROM drover.events");
  CHECK(mentions(err, "permission denied"));
  // The retention setting opens nothing for a role that isn't the owner,
  // not even one that was (wrongly) granted DELETE.
  run(app_conn, "SET drover.retention = 'on'");
  err = refused(app_conn, "DELETE FROM drover.events");
  CHECK(mentions(err, "permission denied"));
  run(conn, "GRANT DELETE ON drover.events TO " + role);
  err = refused(app_conn, "DELETE FROM drover.events");
  CHECK(mentions(err, "append-only: DELETE refused"));
  run(conn, "REVOKE DELETE ON drover.events FROM " + role);
  // Retention works through the function.
  CHECK(value_of(s.purge_finished(2000, 10)) == 1);
  CHECK(is(error_of(s.load_job("j-old")), errc::not_found));
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 2);
}

// -- idempotency --------------------------------------------------------------

TEST_CASE("duplicate idempotency keys create no second job", "[pg]") {
  test_db db;
  auto s = db.session();
  auto& conn = s.conn();
  job first{"j1", make_spec("acme", "x", "k1")};
  value_of(s.write(batch_of({&first})));
  SECTION("in a later batch") {
    job dup{"j2", make_spec("acme", "x", "k1")};
    dup.start(2000); // its events and update are skipped too
    job other{"j3", make_spec("acme", "x", "k2")};
    job other_tenant{"j4", make_spec("globex", "x", "k1")};
    auto res = value_of(s.write(batch_of({&dup, &other, &other_tenant})));
    CHECK(res.duplicate_submits == std::vector<std::string>{"j2"});
    CHECK(is(error_of(s.load_job("j2")), errc::not_found));
    CHECK(is(error_of(s.load_events("j2")), errc::not_found));
    CHECK(value_of(s.load_job("j3")) == other.record());
    CHECK(value_of(s.load_job("j4")) == other_tenant.record());
    CHECK(value_of(s.find_by_key("acme", "k1")) == first.record());
    CHECK(value_of(s.find_by_key("globex", "k1")) == other_tenant.record());
  }
  SECTION("within one batch") {
    job x{"j5", make_spec("acme", "x", "k9")};
    job y{"j6", make_spec("acme", "x", "k9")};
    job z{"j7", make_spec("acme", "x", "k9")};
    auto res = value_of(s.write(batch_of({&x, &y, &z})));
    CHECK(res.duplicate_submits == std::vector<std::string>{"j6", "j7"});
    CHECK(value_of(s.find_by_key("acme", "k9")) == x.record());
    CHECK(count(conn, "SELECT count(*) FROM drover.events WHERE job_id IN "
                      "('j6', 'j7')")
          == 0);
  }
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs WHERE tenant = 'acme' "
                    "AND idempotency_key = 'k1'")
        == 1);
}

TEST_CASE("concurrent duplicate submits create one job", "[pg]") {
  test_db db;
  auto s1 = db.session();
  auto s2 = db.session();
  constexpr int rounds = 20;
  int created = 0;
  int duplicates = 0;
  for (int round = 0; round < rounds; ++round) {
    auto key = "key-" + std::to_string(round);
    job a{"a-" + std::to_string(round), make_spec("t", "x", key)};
    job b{"b-" + std::to_string(round), make_spec("t", "x", key)};
    auto batch_a = batch_of({&a});
    auto batch_b = batch_of({&b});
    caf::expected<pg::write_result> res_a{pg::write_result{}};
    caf::expected<pg::write_result> res_b{pg::write_result{}};
    std::atomic<int> ready{0};
    auto go = [&ready] {
      ready.fetch_add(1);
      while (ready.load() < 2)
        std::this_thread::yield();
    };
    std::thread ta{[&] {
      go();
      res_a = s1.write(batch_a);
    }};
    std::thread tb{[&] {
      go();
      res_b = s2.write(batch_b);
    }};
    ta.join();
    tb.join();
    auto ra = value_of(std::move(res_a));
    auto rb = value_of(std::move(res_b));
    auto dups = ra.duplicate_submits.size() + rb.duplicate_submits.size();
    CHECK(dups == 1);
    duplicates += static_cast<int>(dups);
    created += 2 - static_cast<int>(dups);
    CHECK(count(s1.conn(),
                "SELECT count(*) FROM drover.jobs "
                "WHERE idempotency_key = $1",
                pg::params{}.text(key))
          == 1);
  }
  CHECK(created == rounds);
  CHECK(duplicates == rounds);
  CHECK(count(s1.conn(), "SELECT count(*) FROM drover.events") == rounds);
}
