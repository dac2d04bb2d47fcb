// Partition leases (runtime/pg_lease) against a real PostgreSQL: taking
// all of them, refusing a live holder, taking over an expired lease with
// epoch + 1, renewal, release, and the fence every write transaction
// checks. Expiry is made by moving expires_at into the past with an UPDATE
// (PostgreSQL's clock decides), never by sleeping.

#include "runtime/pg_lease.hpp"
#include "support/pg_batches.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::must;
using drover::testing::must_ok;
using drover::testing::one_submit;
using drover::testing::run;
using drover::testing::test_db;

namespace {

int64_t scalar(pg::connection& conn, const std::string& sql) {
  auto res = run(conn, sql);
  REQUIRE(res.rows() == 1);
  return std::stoll(std::string{res.value(0, 0)});
}

pg::lease_grant take(pg::session& s, const pg::lease_owner& who) {
  auto attempt = must(pg::try_acquire_all(s, who, 5000ms));
  if (!attempt.grant)
    FAIL("not granted: " << pg::describe(*attempt.held_by));
  return std::move(*attempt.grant);
}

void expire_all(pg::connection& admin) {
  run(admin, "UPDATE drover.partition_leases "
             "SET expires_at = now() - interval '1 second'");
}

} // namespace

TEST_CASE("migration 4 makes P lease rows, 64 unless the database says",
          "[pg][lease]") {
  {
    test_db db;
    auto s = db.session();
    CHECK(scalar(s.conn(), "SELECT partitions FROM drover.partitioning") == 64);
    CHECK(scalar(s.conn(), "SELECT count(*) FROM drover.partition_leases "
                           "WHERE owner IS NULL AND epoch = 0")
          == 64);
  }
  {
    test_db db;
    auto url = must(
        pg::conninfo_with(db.url(), {{"options", "-c drover.partitions=8"}}));
    auto s = must(pg::session::open(url));
    must_ok(s.migrate());
    CHECK(scalar(s.conn(), "SELECT partitions FROM drover.partitioning") == 8);
    CHECK(scalar(s.conn(), "SELECT max(partition) FROM drover.partition_leases")
          == 7);
  }
}

TEST_CASE("leases: all or nothing, a live holder is named, an expired one "
          "is taken over with epoch + 1",
          "[pg][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto first = pg::this_process("node-a");
  auto second = pg::this_process("node-a"); // same node id, other process
  CHECK(first.instance != second.instance);
  auto g1 = take(s, first);
  REQUIRE(g1.partitions.size() == 64);
  for (auto e : g1.epochs)
    CHECK(e == 1);
  // A second owner while the first holds: refused, nothing changes.
  auto attempt = must(pg::try_acquire_all(s, second, 5000ms));
  REQUIRE_FALSE(attempt.grant);
  REQUIRE(attempt.held_by);
  const auto& h = *attempt.held_by;
  CHECK(h.owner.instance == first.instance);
  CHECK(h.owner.node_id == "node-a");
  CHECK(h.owner.pid == first.pid);
  CHECK(h.expires_in_ms > 0);
  CHECK(h.expires_in_ms <= 5000);
  auto line = pg::describe(h);
  CHECK(line.find("node 'node-a'") != std::string::npos);
  CHECK(line.find("pid " + std::to_string(first.pid)) != std::string::npos);
  CHECK(scalar(admin, "SELECT count(*) FROM drover.partition_leases "
                      "WHERE epoch = 1 AND owner = '"
                          + first.instance + "'")
        == 64);
  // Renewal works while ours.
  must_ok(pg::renew(s, g1, 5000ms));
  // Expired (its owner was killed): taken with epoch + 1.
  expire_all(admin);
  auto g2 = take(s, second);
  for (auto e : g2.epochs)
    CHECK(e == 2);
  // The deposed owner can no longer renew.
  auto err = pg::renew(s, g1, 5000ms);
  CHECK(is(err, errc::not_owner));
  // Release: the next owner need not wait, and gets epoch + 1.
  must_ok(pg::release(s, g2));
  CHECK(scalar(admin, "SELECT count(*) FROM drover.partition_leases "
                      "WHERE owner IS NULL")
        == 64);
  auto g3 = take(s, first);
  for (auto e : g3.epochs)
    CHECK(e == 3);
}

TEST_CASE("acquire_all: a holder that renews is alive, one that does not "
          "is taken over",
          "[pg][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto holder = pg::this_process("holder");
  auto g = take(s, holder);
  {
    // The holder renews every 50 ms: the newcomer sees a renewal and gives
    // up, naming it.
    pg::lease_keeper::config kc;
    kc.conninfo = db.url();
    kc.grant = g;
    kc.ttl = 5000ms;
    kc.interval = 50ms;
    pg::lease_keeper keeper{kc};
    auto s2 = db.session();
    auto started = std::chrono::steady_clock::now();
    auto r = pg::acquire_all(s2, pg::this_process("newcomer"), 5000ms, 20ms,
                             10000ms);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::conflict));
    CHECK(describe(r.error()).find("node 'holder'") != std::string::npos);
    CHECK(std::chrono::steady_clock::now() - started < 5000ms);
    must_ok(keeper.stop_and_release());
  }
  CHECK(scalar(admin, "SELECT count(*) FROM drover.partition_leases "
                      "WHERE owner IS NULL")
        == 64);
  // Held again, then left to expire (no keeper): taken over.
  auto g2 = take(s, holder);
  run(admin, "UPDATE drover.partition_leases "
             "SET expires_at = now() + interval '200 milliseconds'");
  auto s3 = db.session();
  auto r = pg::acquire_all(s3, pg::this_process("successor"), 5000ms, 20ms,
                           10000ms);
  REQUIRE(r);
  for (size_t i = 0; i < r->epochs.size(); ++i)
    CHECK(r->epochs[i] == g2.epochs[i] + 1);
}

TEST_CASE("the fence: a superseded or expired lease writes nothing",
          "[pg][lease][fence]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto g = take(s, pg::this_process("fenced"));
  s.set_fence(g.fence());
  must(s.write(one_submit("j-1")));
  CHECK(scalar(admin, "SELECT count(*) FROM drover.jobs") == 1);
  SECTION("epoch bumped behind its back") {
    run(admin, "UPDATE drover.partition_leases SET epoch = epoch + 1 "
               "WHERE partition = 17");
    // A write to that partition is refused whole...
    auto r = s.write(one_submit("ja-17"));
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::not_owner));
    CHECK(describe(r.error()).find("partition 17") != std::string::npos);
    CHECK(s.stale_partitions() == std::vector<int32_t>{17});
    // ...one to a partition still ours commits...
    must(s.write(one_submit("jb-2")));
    // ...and a group commit with both drops only the stale partition's
    // jobs, answered not_owner, in one more transaction.
    auto both = one_submit("jc-17");
    auto ours = one_submit("jd-5");
    both.submits.push_back(ours.submits.front());
    both.events.push_back(ours.events.front());
    auto iso = must(s.write_isolated(both));
    CHECK(iso.transactions == 2);
    REQUIRE(iso.failed.size() == 1);
    CHECK(iso.failed.front().first == "jc-17");
    CHECK(is(iso.failed.front().second, errc::not_owner));
    // A batch with nothing of ours commits nothing and says so per job.
    auto none = must(s.write_isolated(one_submit("je-17")));
    CHECK(none.failed.size() == 1);
    auto renewal = pg::renew(s, g, 5000ms);
    CHECK(is(renewal, errc::not_owner));
    CHECK(describe(renewal).find("partition 17 was taken over (1 of 64")
          != std::string::npos);
    auto jobs = run(admin, "SELECT string_agg(job_id, ',' ORDER BY job_id) "
                           "FROM drover.jobs");
    CHECK(std::string{jobs.value(0, 0)} == "j-1,jb-2,jd-5");
  }
  SECTION("expired, not renewed yet") {
    expire_all(admin);
    auto r = s.write(one_submit("j-2"));
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::unavailable));
    CHECK(pg::failure_class_of(r.error()) == pg::failure_class::other);
    // Nobody took it: a renewal makes writes possible again.
    must_ok(pg::renew(s, g, 5000ms));
    must(s.write(one_submit("j-3")));
    CHECK(scalar(admin, "SELECT count(*) FROM drover.jobs") == 2);
    return;
  }
  CHECK(scalar(admin, "SELECT count(*) FROM drover.jobs") == 3);
  CHECK(scalar(admin, "SELECT count(*) FROM drover.events") == 3);
  CHECK(s.ok());
}

TEST_CASE("the fence: a takeover waits for a write in flight",
          "[pg][lease][fence]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto g = take(s, pg::this_process("writer"));
  s.set_fence(g.fence());
  // The writer's transaction holds the lease rows FOR SHARE...
  run(s.conn(), "BEGIN");
  run(s.conn(), "SELECT 1 FROM drover.partition_leases WHERE partition = 0 "
                "FOR SHARE");
  // ...so a takeover's UPDATE cannot pass it (lock_timeout instead of a
  // wait: the refusal is the event).
  run(admin, "SET lock_timeout = '200ms'");
  auto taken = admin.exec("UPDATE drover.partition_leases SET epoch = epoch "
                          "+ 1, owner = 'thief' WHERE partition = 0");
  REQUIRE_FALSE(taken);
  CHECK(pg::sqlstate_of(taken.error()) == "55P03"); // lock_not_available
  run(s.conn(), "ROLLBACK");
}

TEST_CASE("a paused writer's locks hold a takeover back only until "
          "PostgreSQL ends its idle transaction",
          "[pg][lease][fence]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto g = take(s, pg::this_process("paused"));
  s.set_fence(g.fence(3000ms));
  // A write applies the fence's session setting, the idle limit.
  must(s.write(one_submit("j-1")));
  CHECK(scalar(s.conn(), "SELECT setting FROM pg_settings WHERE name = "
                         "'idle_in_transaction_session_timeout'")
        == 3000);
  // Its lease runs out, and the writer stops inside a transaction that
  // holds the lease rows (what a SIGSTOP between two statements of a
  // write leaves).
  expire_all(admin);
  run(s.conn(), "BEGIN");
  run(s.conn(), "SELECT 1 FROM drover.partition_leases FOR SHARE");
  auto t = db.session();
  auto thief = pg::this_process("standby");
  // A bounded wait, not a hang: the attempt reports the rows busy.
  auto first = must(pg::try_acquire_all(t, thief, 5000ms, 100ms));
  CHECK(first.busy);
  CHECK_FALSE(first.grant);
  // PostgreSQL ends the idle transaction after 3 s; the takeover then goes
  // through, with epoch + 1.
  auto started = std::chrono::steady_clock::now();
  auto grant = must(pg::acquire_all(t, thief, 5000ms, 200ms, 20000ms));
  CHECK(std::chrono::steady_clock::now() - started < 15s);
  REQUIRE_FALSE(grant.epochs.empty());
  CHECK(grant.epochs.front() == g.epochs.front() + 1);
  // The paused writer's connection is gone; nothing it held was written.
  CHECK_FALSE(s.conn().exec("SELECT 1"));
  CHECK(scalar(admin, "SELECT count(*) FROM drover.jobs") == 1);
}

TEST_CASE("a standby asked to stop while the lease rows stay locked stops "
          "at once",
          "[pg][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  take(s, pg::this_process("holder"));
  expire_all(admin);
  // A transaction that keeps the rows locked (no idle limit here).
  run(s.conn(), "BEGIN");
  run(s.conn(), "SELECT 1 FROM drover.partition_leases FOR SHARE");
  int asked = 0;
  auto started = std::chrono::steady_clock::now();
  auto r = pg::claim_coordinator(db.url(), pg::this_process("standby"), 2000ms,
                                 [&](const std::string&) {
                                   ++asked;
                                   return false; // SIGTERM arrived
                                 });
  auto took = std::chrono::steady_clock::now() - started;
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::conflict));
  CHECK(asked == 1);
  // One lock wait (200 ms), not the 64 s of patience.
  CHECK(took < 5s);
  CHECK(scalar(admin, "SELECT count(*) FROM drover.coordinators") == 0);
  run(s.conn(), "ROLLBACK");
}

TEST_CASE("membership: the holder is active with each renewal, a standby "
          "announces itself, both leave on an orderly stop",
          "[pg][lease][members]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto a = pg::this_process("coord-a");
  a.cluster_address = "10.0.0.1:7420";
  auto g = take(s, a);
  auto list = [&] { return must(pg::members_json(s, 10000ms)); };
  // Taking the leases announces nothing; the first renewal does.
  CHECK(list() == "[]");
  must_ok(pg::renew(s, g, 5000ms));
  auto b = pg::this_process("coord-b");
  auto t = db.session();
  must_ok(pg::announce(t, b));
  auto both = list();
  INFO(both);
  // Active first, with its partitions (64 unexpired leases); the standby
  // holds none.
  auto at_a = both.find("\"node_id\" : \"coord-a\"");
  auto at_b = both.find("\"node_id\" : \"coord-b\"");
  REQUIRE(at_a != std::string::npos);
  REQUIRE(at_b != std::string::npos);
  CHECK(at_a < at_b);
  CHECK(both.find("\"cluster_address\" : \"10.0.0.1:7420\", \"state\" : "
                  "\"active\", \"partitions\" : 64")
        != std::string::npos);
  CHECK(both.find("\"state\" : \"standby\", \"partitions\" : 0")
        != std::string::npos);
  // A row without a lease TTL of its own (a standby, or a binary before
  // schema 10) is judged by `stale`: heard from 5 s ago, not gone (it was,
  // after 1 s, while a missing TTL read as the range's least).
  run(admin, "UPDATE drover.coordinators SET heartbeat_at = now() - "
             "interval '5 s' WHERE node_id = 'coord-b'");
  CHECK(list().find("\"state\" : \"gone\"") == std::string::npos);
  // Not heard from for longer than `stale`: gone.
  run(admin, "UPDATE drover.coordinators SET heartbeat_at = now() - "
             "interval '1 minute' WHERE node_id = 'coord-b'");
  CHECK(list().find("\"state\" : \"gone\"") != std::string::npos);
  // A sharing coordinator is judged by its own lease TTL (twice it): one
  // with a minute's TTL heard from a minute ago is not gone.
  auto sharing = pg::this_process("coord-c");
  must(pg::announce_row(t, sharing, true, 0, 60000ms));
  run(admin, "UPDATE drover.coordinators SET heartbeat_at = now() - "
             "interval '1 minute' WHERE node_id = 'coord-c'");
  auto with_c = list();
  INFO(with_c);
  auto at_c = with_c.find("\"node_id\" : \"coord-c\"");
  REQUIRE(at_c != std::string::npos);
  CHECK(with_c.find("\"state\" : \"standby\"", at_c) < with_c.find('}', at_c));
  must_ok(pg::leave(t, sharing));
  must_ok(pg::leave(t, b));
  CHECK(list().find("coord-b") == std::string::npos);
  // An hour of silence is pruned by the next renewal (never the renewing
  // owner's own row).
  run(admin, "UPDATE drover.coordinators SET heartbeat_at = now() - "
             "interval '2 hours'");
  must_ok(pg::announce(t, b));
  run(admin, "UPDATE drover.coordinators SET heartbeat_at = now() - "
             "interval '2 hours' WHERE node_id = 'coord-b'");
  must_ok(pg::renew(s, g, 5000ms));
  CHECK(scalar(admin, "SELECT count(*) FROM drover.coordinators") == 1);
  must_ok(pg::release(s, g));
  CHECK(list() == "[]");
}

TEST_CASE("self-fencing: the keeper's freshness holds while renewals succeed "
          "and lapses when they cannot reach PostgreSQL",
          "[pg][lease][fence]") {
  test_db db;
  auto s = db.session();
  auto g = take(s, pg::this_process("fresh"));
  pg::lease_keeper::config kc;
  kc.conninfo = db.url();
  kc.grant = g;
  kc.ttl = 1000ms;
  kc.interval = 200ms;
  std::function<bool()> fresh;
  {
    pg::lease_keeper keeper{kc};
    fresh = keeper.freshness(250ms);
    CHECK(fresh());
    // Renewed every 200 ms: never stale within 1.5 TTL.
    CHECK_FALSE(drover::testing::poll_until([&] { return !fresh(); }, 1500ms));
  }
  // The keeper is gone and renews no more: the test still answers (the
  // queue may outlive the keeper), and turns stale.
  CHECK(drover::testing::poll_until([&] { return !fresh(); }, 3000ms));
  // A keeper that cannot reach PostgreSQL: stale after TTL - margin.
  kc.conninfo = "postgresql:///none?host=/nonexistent-drover-socket";
  pg::lease_keeper cut{kc};
  auto cut_fresh = cut.freshness(250ms);
  auto started = std::chrono::steady_clock::now();
  CHECK(cut_fresh());
  REQUIRE(drover::testing::poll_until([&] { return !cut_fresh(); }, 3000ms));
  CHECK(std::chrono::steady_clock::now() - started >= 700ms);
}
