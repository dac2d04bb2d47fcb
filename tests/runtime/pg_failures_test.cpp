// Integration tests of runtime/pg against a real PostgreSQL, failures:
// unknown outcomes, lost connections and hostile input. Against
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
