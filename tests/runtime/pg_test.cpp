// Integration tests of runtime/pg against a real PostgreSQL: the server
// DROVER_PG_URL points at (scripts/test starts a private one and sets it).
// Every test case works in its own database, created fresh and dropped at
// the end, so cases are independent and may run in parallel.

#include "runtime/pg.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg_lease.hpp"

#include <catch2/catch.hpp>

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

namespace {

// -- helpers ------------------------------------------------------------------

template <class T>
T value_of(caf::expected<T>&& x) {
  if (!x)
    FAIL(describe(x.error()));
  return std::move(*x);
}

/// The error `x` holds; fails the test if it holds a value.
template <class T>
caf::error error_of(caf::expected<T>&& x) {
  if (x)
    FAIL("expected an error, got a value");
  return std::move(x.error());
}

void require_ok(const caf::error& err) {
  if (err)
    FAIL(describe(err));
}

/// Runs SQL that must succeed.
/// Runs SQL that must fail; returns the error.
caf::error refused(pg::connection& conn, const std::string& sql) {
  auto res = conn.exec(sql);
  if (res)
    FAIL("'" << sql << "' should have failed");
  return res.error();
}

int64_t count(pg::connection& conn, const std::string& sql,
              const pg::params& ps = {}) {
  auto res = run(conn, sql, ps);
  REQUIRE(res.rows() == 1);
  return std::stoll(std::string{res.value(0, 0)});
}

bool mentions(const caf::error& err, const std::string& text) {
  return describe(err).find(text) != std::string::npos;
}

/// A login role for the duration of a test (roles are cluster-wide).
/// Declare it before the test_db whose objects it is granted on, so the
/// database is gone when the role is dropped.
class test_role {
public:
  test_role() : name_("drover_test_role_" + random_suffix()) {
    admin_ = value_of(pg::connection::open(server_url()));
    run(admin_, "CREATE ROLE " + name_ + " LOGIN");
  }
  ~test_role() {
    if (admin_.connection_ok())
      admin_.exec("DROP ROLE IF EXISTS " + name_);
  }
  test_role(const test_role&) = delete;
  test_role& operator=(const test_role&) = delete;

  const std::string& name() const {
    return name_;
  }

private:
  std::string name_;
  pg::connection admin_;
};

job_spec make_spec(std::string tenant, std::string type, std::string key) {
  job_spec spec;
  spec.tenant = std::move(tenant);
  spec.type = std::move(type);
  spec.idempotency_key = std::move(key);
  spec.input = R"({"file":"in.mp4"})";
  return spec;
}

/// A job's history built through the state machine, so records and events
/// always agree. `add_to` moves what has not been written yet into a batch.
class job {
public:
  job(std::string id, job_spec spec, int64_t at_ms = 1000) {
    job_event ev;
    ev.job_id = std::move(id);
    ev.kind = event_kind::submitted;
    ev.spec = std::move(spec);
    ev.at_ms = at_ms;
    push(std::move(ev));
    submitted_ = rec_;
  }

  const std::string& id() const {
    return rec_.job_id;
  }
  const job_record& record() const {
    return rec_;
  }
  const std::vector<job_event>& events() const {
    return events_;
  }

  job& start(int64_t at_ms) {
    auto ev = next(event_kind::started, at_ms);
    ev.attempt = rec_.attempt + 1;
    ev.worker_id = "worker-1";
    ev.lease_expiry_ms = at_ms + 30000;
    return push(std::move(ev));
  }

  job& progress(double percent, int64_t at_ms) {
    auto ev = next(event_kind::progressed, at_ms);
    ev.progress.job_id = rec_.job_id;
    ev.progress.percent = percent;
    ev.progress.at_ms = at_ms;
    ev.progress.attempt = rec_.attempt;
    ev.progress.message = "working";
    return push(std::move(ev));
  }

  job& checkpoint(std::string bytes, int64_t at_ms) {
    auto ev = next(event_kind::checkpointed, at_ms);
    ev.checkpoint = std::move(bytes);
    return push(std::move(ev));
  }

  job& complete(int64_t at_ms) {
    auto ev = next(event_kind::completed, at_ms);
    ev.result = R"({"ok":true})";
    return push(std::move(ev));
  }

  job& fail(int64_t at_ms) {
    auto ev = next(event_kind::failed, at_ms);
    ev.error = error_info{"boom", "it broke", false};
    return push(std::move(ev));
  }

  job& dead_letter(int64_t at_ms) {
    auto ev = next(event_kind::dead_lettered, at_ms);
    ev.error = error_info{"boom", "it broke", false};
    return push(std::move(ev));
  }

  job& purge_from_dlq(int64_t at_ms) {
    auto ev = next(event_kind::purged, at_ms);
    ev.reason = "operator";
    return push(std::move(ev));
  }

  job& cancel(int64_t at_ms) {
    auto ev = next(event_kind::cancelled, at_ms);
    ev.reason = "user";
    return push(std::move(ev));
  }

  /// A webhook attempt for the terminal event the record owes one for.
  job& webhook(webhook_outcome outcome, int64_t at_ms) {
    auto ev = next(event_kind::webhook_attempted, at_ms);
    ev.webhook.url = rec_.spec.callback_url;
    ev.webhook.terminal_sequence = rec_.webhook_pending_sequence;
    ev.webhook.webhook_id
        = rec_.job_id + "." + std::to_string(rec_.webhook_pending_sequence);
    ev.webhook.attempt_number = 1;
    ev.webhook.outcome = outcome;
    ev.webhook.at_ms = at_ms;
    if (outcome == webhook_outcome::retrying)
      ev.webhook.next_attempt_at_ms = at_ms + 1000;
    return push(std::move(ev));
  }

  /// Adds the unwritten part of the history to `batch`: the submit if not
  /// written yet, the new events, and the projection if it moved past
  /// what the submit (or the last write) holds.
  void add_to(pg::write_batch& batch) {
    if (written_ == 0)
      batch.submits.push_back(submitted_);
    uint64_t last = written_ == 0 ? 1 : events_[written_ - 1].sequence;
    for (size_t i = written_; i < events_.size(); ++i)
      batch.events.push_back(events_[i]);
    if (rec_.sequence > last)
      batch.updates.push_back(rec_);
    written_ = events_.size();
  }

private:
  job_event next(event_kind kind, int64_t at_ms) const {
    job_event ev;
    ev.job_id = rec_.job_id;
    ev.kind = kind;
    ev.attempt = rec_.attempt;
    ev.at_ms = at_ms;
    return ev;
  }

  job& push(job_event ev) {
    ev.sequence = rec_.sequence + 1;
    if (auto err = apply(rec_, ev))
      FAIL(describe(err));
    events_.push_back(std::move(ev));
    return *this;
  }

  job_record rec_;
  job_record submitted_;
  std::vector<job_event> events_;
  size_t written_ = 0;
};

pg::write_batch batch_of(std::initializer_list<job*> jobs) {
  pg::write_batch batch;
  for (auto* j : jobs)
    j->add_to(batch);
  return batch;
}

std::vector<std::string> ids_of(const std::vector<job_record>& recs) {
  std::vector<std::string> out;
  for (const auto& rec : recs)
    out.push_back(rec.job_id);
  return out;
}

} // namespace

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

// -- unknown outcomes ---------------------------------------------------------

TEST_CASE("committed tells whether a batch is stored", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "k")};
  a.start(2000);
  auto written = batch_of({&a});
  value_of(s.write(written));
  CHECK(value_of(s.committed(written)));

  job b{"j-b", make_spec("t", "x", "")};
  auto unwritten = batch_of({&b});
  CHECK_FALSE(value_of(s.committed(unwritten)));

  // Part present, part absent: the caller must not guess.
  a.progress(10, 2100);
  auto next = batch_of({&a});
  pg::write_batch mixed = next;
  mixed.events.insert(mixed.events.begin(), written.events.begin(),
                      written.events.end());
  mixed.submits = written.submits;
  CHECK(is(error_of(s.committed(mixed)), errc::conflict));

  // Same keys, different content.
  auto altered = written;
  altered.events[1].worker_id = "someone-else";
  CHECK(is(error_of(s.committed(altered)), errc::conflict));

  // A duplicate submit is no evidence: the batch below was written.
  job dup{"j-dup", make_spec("t", "x", "k")};
  auto with_dup = next;
  dup.add_to(with_dup);
  CHECK_FALSE(value_of(s.committed(with_dup)));
  auto res = value_of(s.write(with_dup));
  CHECK(res.duplicate_submits == std::vector<std::string>{"j-dup"});
  CHECK(value_of(s.committed(with_dup)));

  // Batches without events are judged by their projections.
  pg::write_batch projections;
  projections.updates.push_back(a.record());
  CHECK(value_of(s.committed(projections)));
  auto ahead = a.record();
  ahead.sequence += 1;
  projections.updates = {ahead};
  CHECK_FALSE(value_of(s.committed(projections)));
}

// -- connection loss ----------------------------------------------------------

TEST_CASE("a lost connection is unavailable until reconnect", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "")};
  value_of(s.write(batch_of({&a})));
  auto pid = s.conn().backend_pid();
  REQUIRE(pid != 0);
  auto admin = db.connect();
  auto res = run(admin, "SELECT pg_terminate_backend($1, 5000)",
                 pg::params{}.int32(pid));
  REQUIRE(res.value(0, 0) == "t");
  auto err = error_of(s.load_job("j-a"));
  CHECK(is(err, errc::unavailable));
  CHECK(mentions(err, "PostgreSQL unavailable"));
  CHECK_FALSE(s.ok());
  job b{"j-b", make_spec("t", "x", "")};
  auto batch = batch_of({&b});
  auto werr = error_of(s.write(batch));
  CHECK(is(werr, errc::unavailable));
  CHECK_FALSE(mentions(werr, "outcome unknown")); // never got to COMMIT
  require_ok(s.reconnect());
  CHECK(s.ok());
  CHECK(s.conn().backend_pid() != pid);
  CHECK(value_of(s.load_job("j-a")) == a.record());
  CHECK_FALSE(value_of(s.committed(batch)));
  value_of(s.write(batch));
  CHECK(value_of(s.load_job("j-b")) == b.record());
}

TEST_CASE("a connection lost during COMMIT leaves the outcome to committed()",
          "[pg]") {
  test_db db;
  auto s = db.session();
  // A deferred trigger runs inside COMMIT; this one kills its own backend
  // there, so the client loses the connection with COMMIT unanswered.
  auto owner = db.connect();
  run(owner, "CREATE FUNCTION public.die() RETURNS trigger LANGUAGE plpgsql "
             "AS $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); "
             "RETURN NULL; END $$");
  run(owner, "CREATE CONSTRAINT TRIGGER die_in_commit AFTER INSERT ON "
             "drover.events DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
             "WHEN (NEW.job_id = 'j-doomed') EXECUTE FUNCTION public.die()");
  job doomed{"j-doomed", make_spec("t", "x", "k")};
  doomed.start(2000);
  auto batch = batch_of({&doomed});
  auto err = error_of(s.write(batch));
  CHECK(is(err, errc::unavailable));
  CHECK(mentions(err, "outcome unknown"));
  CHECK_FALSE(s.ok());
  require_ok(s.reconnect());
  // The backend died before writing its commit record.
  CHECK_FALSE(value_of(s.committed(batch)));
  CHECK(count(owner, "SELECT count(*) FROM drover.events") == 0);
  run(owner, "DROP TRIGGER die_in_commit ON drover.events");
  CHECK(value_of(s.write(batch)).duplicate_submits.empty());
  CHECK(value_of(s.committed(batch)));
  CHECK(value_of(s.load_job("j-doomed")) == doomed.record());
}

TEST_CASE("an unreachable server is unavailable", "[pg]") {
  auto url = value_of(pg::conninfo_with(
      server_url(), {{"host", "/nonexistent/drover-socket-dir"}}));
  auto s = pg::session::open(url);
  REQUIRE_FALSE(s);
  CHECK(is(s.error(), errc::unavailable));
  CHECK(mentions(s.error(), "cannot connect to PostgreSQL"));
  CHECK(mentions(s.error(), "/nonexistent/drover-socket-dir"));
  CHECK(is(error_of(pg::conninfo_with("host='unterminated", {})),
           errc::bad_config));
}

// -- hostile input ------------------------------------------------------------

TEST_CASE("SQL metacharacters in ids, tenants and keys stay inert", "[pg]") {
  test_db db;
  auto s = db.session();
  const std::string id = "j'; DROP TABLE drover.events; --";
  const std::string tenant = "t\"'\\$1%_*;";
  const std::string key = "k' OR '1'='1";
  const std::string type = "x); DELETE FROM drover.jobs; -- \xc3\xbc";
  job evil{id, make_spec(tenant, type, key)};
  evil.start(2000);
  job plain{"j-plain", make_spec("t", "x", "k")};
  value_of(s.write(batch_of({&evil, &plain})));
  CHECK(value_of(s.load_job(id)) == evil.record());
  CHECK(value_of(s.load_events(id)) == evil.events());
  CHECK(value_of(s.find_by_key(tenant, key)) == evil.record());
  CHECK(is(error_of(s.find_by_key("t", key)), errc::not_found));
  CHECK(is(error_of(s.find_by_key(tenant, "k")), errc::not_found));
  job_query q;
  q.tenant = tenant;
  q.type = type;
  CHECK(ids_of(value_of(s.list(q))) == std::vector<std::string>{id});
  q.tenant = "%";
  q.type.clear();
  CHECK(value_of(s.list(q)).empty());
  auto& conn = s.conn();
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs") == 2);
  CHECK(count(conn, "SELECT count(*) FROM drover.events") == 3);
  // NUL bytes can't be stored as text; they are refused, never truncated.
  job nul{"j-nul", make_spec(std::string{"ten\0ant", 7}, "x", "")};
  auto err = error_of(s.write(batch_of({&nul})));
  CHECK(is(err, errc::invalid_value));
  CHECK(mentions(err, "NUL"));
  CHECK(is(error_of(s.load_job(std::string{"j-plain\0x", 9})),
           errc::invalid_value));
  CHECK(count(conn, "SELECT count(*) FROM drover.jobs") == 2);
}

TEST_CASE("a corrupt row is an error, not a crash", "[pg]") {
  test_db db;
  auto s = db.session();
  job a{"j-a", make_spec("t", "x", "")};
  value_of(s.write(batch_of({&a})));
  auto conn = db.connect();
  SECTION("garbage bytes") {
    run(conn, "INSERT INTO drover.jobs (job_id, tenant, type, status, "
              "priority, created_at_ms, updated_at_ms, seq, record) VALUES "
              "('j-bad', 't', 'x', 0, 1, 1, 1, 1, '\\xdeadbeef')");
    run(conn, "INSERT INTO drover.events (job_id, seq, attempt, kind, at_ms, "
              "payload) VALUES ('j-bad', 1, 0, 0, 1, '\\x0000000001000000')");
    auto err = error_of(s.load_job("j-bad"));
    CHECK(err);
    CHECK(mentions(err, "j-bad"));
    CHECK(error_of(s.list(job_query{})));
    CHECK(error_of(s.live_jobs()));
    CHECK(error_of(s.load_events("j-bad")));
    CHECK(value_of(s.load_job("j-a")) == a.record());
  }
  SECTION("another job's record") {
    run(conn, "INSERT INTO drover.jobs (job_id, tenant, type, status, "
              "priority, created_at_ms, updated_at_ms, seq, record) "
              "SELECT 'j-copy', tenant, type, status, priority, "
              "created_at_ms, updated_at_ms, seq, record FROM drover.jobs "
              "WHERE job_id = 'j-a'");
    auto err = error_of(s.load_job("j-copy"));
    CHECK(is(err, errc::malformed));
    CHECK(mentions(err, "holds the record of job 'j-a'"));
  }
  CHECK(s.ok());
}
