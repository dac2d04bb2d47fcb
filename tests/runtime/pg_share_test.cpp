// The share keeper (runtime/pg_share) against a real PostgreSQL: its
// renewals run apart from its balancing, so a hook of the node that blocks
// (a recovery on a saturated host) keeps no renewal back; a lease taken
// over is dropped and never reported fresh; a partition handed over while
// a renewal is under way is not mistaken for one taken over. Takeovers are
// made with an UPDATE of the lease row; what the keeper does is waited for
// through its hooks, its log and the rows, each with a deadline.

#include "runtime/pg_share.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::must;
using drover::testing::must_ok;
using drover::testing::poll_until;
using drover::testing::run;
using drover::testing::scaled;
using drover::testing::test_db;

namespace {

constexpr auto ttl = 1500ms;
constexpr auto interval = 150ms;
/// What the node's queue uses (nodes/node_main.cpp).
constexpr auto margin = ttl / 4;

/// A hook's thread waits in enter() until the test opens the gate (or 60 s
/// pass: a failed test does not hang).
class gate {
public:
  void enter() {
    std::unique_lock<std::mutex> guard{mx_};
    ++entered_;
    cv_.notify_all();
    cv_.wait_for(guard, 60s, [this] { return open_; });
  }
  bool wait_entered(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> guard{mx_};
    return cv_.wait_for(guard, scaled(timeout),
                        [this] { return entered_ > 0; });
  }
  void open() {
    {
      std::lock_guard<std::mutex> guard{mx_};
      open_ = true;
    }
    cv_.notify_all();
  }

private:
  std::mutex mx_;
  std::condition_variable cv_;
  int entered_ = 0;
  bool open_ = false;
};

/// The lines a keeper logs, and a wait for one.
class log_lines {
public:
  std::function<void(const std::string&)> sink() {
    return [this](const std::string& line) {
      {
        std::lock_guard<std::mutex> guard{mx_};
        lines_.push_back(line);
      }
      cv_.notify_all();
    };
  }
  bool wait_for(const std::string& part, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> guard{mx_};
    return cv_.wait_for(guard, scaled(timeout),
                        [&] { return has_locked(part); });
  }
  bool has(const std::string& part) {
    std::lock_guard<std::mutex> guard{mx_};
    return has_locked(part);
  }
  size_t size() {
    std::lock_guard<std::mutex> guard{mx_};
    return lines_.size();
  }
  std::string all() {
    std::lock_guard<std::mutex> guard{mx_};
    std::string out;
    for (const auto& line : lines_)
      out += line + "\n";
    return out;
  }

private:
  bool has_locked(const std::string& part) const {
    return std::any_of(lines_.begin(), lines_.end(), [&](const auto& line) {
      return line.find(part) != std::string::npos;
    });
  }
  std::mutex mx_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

int64_t scalar(pg::connection& conn, const std::string& sql,
               const pg::params& ps = {}) {
  auto res = run(conn, sql, ps);
  REQUIRE(res.rows() == 1);
  return std::stoll(std::string{res.value(0, 0)});
}

/// How many of `owner`'s leases are unexpired.
int64_t unexpired(pg::connection& conn, const pg::lease_owner& owner) {
  return scalar(conn,
                "SELECT count(*) FROM drover.partition_leases "
                "WHERE owner = $1 AND expires_at > now()",
                pg::params{}.text(owner.instance));
}

/// The earliest expiry of `owner`'s leases, in ms since the epoch (server
/// clock).
int64_t earliest_expiry_ms(pg::connection& conn, const pg::lease_owner& owner) {
  return scalar(conn,
                "SELECT (extract(epoch FROM min(expires_at)) * 1000)::bigint "
                "FROM drover.partition_leases WHERE owner = $1",
                pg::params{}.text(owner.instance));
}

pg::share_keeper::config
keeper_config(const test_db& db, const pg::lease_owner& owner, log_lines& log) {
  pg::share_keeper::config kc;
  kc.conninfo = db.url();
  kc.owner = owner;
  kc.ttl = ttl;
  kc.interval = interval;
  kc.log = log.sink();
  return kc;
}

/// `owner`'s row in drover.coordinators counts as heard from for the next
/// hour (a member that takes nothing, or a dead one still fresh).
void heard_for_an_hour(pg::connection& admin, const pg::lease_owner& owner) {
  run(admin,
      "UPDATE drover.coordinators SET heartbeat_at = now() + "
      "interval '1 hour' WHERE instance = $1",
      pg::params{}.text(owner.instance));
}

bool holds(const pg::share_keeper& keeper, int32_t p) {
  auto held = keeper.held().partitions;
  return std::binary_search(held.begin(), held.end(), p);
}

} // namespace

TEST_CASE("share_keeper: the leases held stay renewed while a hook of the "
          "node blocks for longer than the TTL",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  // Partition 63 is someone else's for now: the keeper takes the other 63.
  run(admin, "UPDATE drover.partition_leases SET owner = 'other', "
             "epoch = epoch + 1, expires_at = now() + interval '1 hour' "
             "WHERE partition = 63");
  auto me = pg::this_process("share-a");
  log_lines log;
  pg::share_keeper keeper{keeper_config(db, me, log)};
  gate recovering;
  pg::share_keeper::hooks h;
  h.acquired = [&](const pg::lease_grant&, const std::vector<int32_t>& added) {
    if (std::find(added.begin(), added.end(), 63) != added.end())
      recovering.enter(); // a recovery that takes its time
    return true;
  };
  h.releasing = [](const pg::lease_grant&, const std::vector<int32_t>&) {
    return true;
  };
  keeper.start(h);
  auto fresh = keeper.freshness(margin);
  REQUIRE(
      poll_until([&] { return keeper.held().partitions.size() == 63; }, 10s));
  // 63 comes free: the keeper's next round takes it and blocks in the hook.
  run(admin, "UPDATE drover.partition_leases SET owner = NULL, "
             "expires_at = now() WHERE partition = 63");
  REQUIRE(recovering.wait_entered(10s));
  auto blocked_at = earliest_expiry_ms(admin, me);
  // Three TTLs with the keeper's thread stuck: the renewer goes on, so the
  // queue may dispatch throughout...
  CHECK_FALSE(poll_until([&] { return !fresh(); }, 3 * ttl));
  // ...and every lease, the one being recovered too, was renewed well
  // after the hook blocked.
  CHECK(unexpired(admin, me) == 64);
  CHECK(earliest_expiry_ms(admin, me) - blocked_at >= 2 * ttl.count());
  recovering.open();
  must_ok(keeper.stop_and_release());
  CHECK(unexpired(admin, me) == 0);
}

TEST_CASE("share_keeper: a lease taken over is dropped through the node's "
          "hook, and the leases held are not reported fresh until it is",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto me = pg::this_process("share-a");
  log_lines log;
  auto kc = keeper_config(db, me, log);
  std::mutex mx;
  std::vector<std::string> deposed;
  kc.deposed = [&](const std::string& why) {
    std::lock_guard<std::mutex> guard{mx};
    deposed.push_back(why);
  };
  pg::share_keeper keeper{kc};
  gate dropping;
  bool can_drop = true;
  SECTION("the node drops it: the keeper goes on") {}
  SECTION("the node cannot drop it: deposed") {
    can_drop = false;
  }
  pg::share_keeper::hooks h;
  h.acquired = [](const pg::lease_grant&, const std::vector<int32_t>&) {
    return true;
  };
  std::vector<int32_t> dropped;
  size_t staying_count = 0;
  // Catch's assertions are for the test's thread: the hook only records.
  h.releasing
      = [&](const pg::lease_grant& staying, const std::vector<int32_t>& gone) {
          {
            std::lock_guard<std::mutex> guard{mx};
            dropped = gone;
            staying_count = staying.partitions.size();
          }
          dropping.enter();
          return can_drop;
        };
  keeper.start(h);
  auto fresh = keeper.freshness(margin);
  REQUIRE(
      poll_until([&] { return keeper.held().partitions.size() == 64; }, 10s));
  REQUIRE(poll_until([&] { return unexpired(admin, me) == 64; }, 10s));
  CHECK(fresh());
  // Another coordinator takes partition 5 over behind the keeper's back.
  run(admin, "UPDATE drover.partition_leases SET owner = 'thief', "
             "owner_node = 'thief', epoch = epoch + 1, "
             "expires_at = now() + interval '1 hour' WHERE partition = 5");
  REQUIRE(dropping.wait_entered(10s));
  {
    std::lock_guard<std::mutex> guard{mx};
    CHECK(dropped == std::vector<int32_t>{5});
    CHECK(staying_count == 63);
  }
  // The node is still dropping it (5 is still held): the other 63 go on
  // being renewed, but no renewal vouches for what is held now, so the
  // queue stops dispatching once the last full renewal ages.
  CHECK(holds(keeper, 5));
  auto found_at = earliest_expiry_ms(admin, me);
  CHECK(poll_until([&] { return !fresh(); }, 3 * ttl));
  CHECK(poll_until(
      [&] { return earliest_expiry_ms(admin, me) - found_at >= ttl.count(); },
      3 * ttl));
  CHECK(holds(keeper, 5));
  CHECK_FALSE(fresh());
  dropping.open();
  if (can_drop) {
    REQUIRE(log.wait_for("deposed: partition 5 was taken over", 10s));
    CHECK_FALSE(holds(keeper, 5));
    CHECK(keeper.held().partitions.size() == 63);
    // Dropped: the renewal that follows at once vouches for the rest.
    CHECK(poll_until([&] { return fresh(); }, ttl));
    std::lock_guard<std::mutex> guard{mx};
    CHECK(deposed.empty());
  } else {
    REQUIRE(poll_until(
        [&] {
          std::lock_guard<std::mutex> guard{mx};
          return !deposed.empty();
        },
        10s));
    std::lock_guard<std::mutex> guard{mx};
    CHECK(deposed.size() == 1);
    CHECK(deposed.front().find("partition 5 was taken over")
          != std::string::npos);
    CHECK_FALSE(log.has("deposed: "));
  }
  must_ok(keeper.stop_and_release());
  // The row taken over is left to its new owner.
  CHECK(scalar(admin, "SELECT count(*) FROM drover.partition_leases "
                      "WHERE partition = 5 AND owner = 'thief'")
        == 1);
  CHECK(unexpired(admin, me) == 0);
}

TEST_CASE("share_keeper: a partition handed over while a renewal is under "
          "way is not taken for one taken over",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  // The renewal statement (and only it: a release sets owner too) waits,
  // before it touches a row, for an advisory lock the test holds.
  run(admin, R"sql(
    CREATE FUNCTION drover_test_hold_renewals() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
      IF current_query() LIKE '%SET expires_at = now() + $4%' THEN
        PERFORM pg_advisory_xact_lock_shared(4242);
      END IF;
      RETURN NULL;
    END $$)sql");
  run(admin, "CREATE TRIGGER hold_renewals BEFORE UPDATE ON "
             "drover.partition_leases FOR EACH STATEMENT EXECUTE FUNCTION "
             "drover_test_hold_renewals()");
  auto me = pg::this_process("share-a");
  log_lines log;
  auto kc = keeper_config(db, me, log);
  std::mutex mx;
  std::vector<std::vector<int32_t>> released;
  bool was_deposed = false;
  kc.deposed = [&](const std::string&) {
    std::lock_guard<std::mutex> guard{mx};
    was_deposed = true;
  };
  pg::share_keeper keeper{kc};
  pg::share_keeper::hooks h;
  h.acquired = [](const pg::lease_grant&, const std::vector<int32_t>&) {
    return true;
  };
  h.releasing = [&](const pg::lease_grant&, const std::vector<int32_t>& gone) {
    std::lock_guard<std::mutex> guard{mx};
    released.push_back(gone);
    return true;
  };
  keeper.start(h);
  REQUIRE(poll_until([&] { return unexpired(admin, me) == 64; }, 10s));
  // The next renewal (its snapshot: all 64) waits in PostgreSQL.
  run(admin, "SELECT pg_advisory_lock(4242)");
  REQUIRE(poll_until(
      [&] {
        return scalar(admin, "SELECT count(*) FROM pg_stat_activity WHERE "
                             "datname = current_database() AND "
                             "wait_event_type = 'Lock' AND "
                             "wait_event = 'advisory'")
               == 1;
      },
      10s));
  // A second sharing coordinator appears (heard from for the next hour):
  // the keeper hands it its share meanwhile -- the node drops them, the
  // rows are released.
  auto other = pg::this_process("share-b");
  must_ok(pg::announce(s, other, true));
  heard_for_an_hour(admin, other);
  REQUIRE(log.wait_for("handed over partitions", 10s));
  auto kept = keeper.held().partitions;
  CHECK(kept.size() >= 31);
  CHECK(kept.size() <= 33);
  CHECK(scalar(admin, "SELECT count(*) FROM drover.partition_leases "
                      "WHERE owner IS NULL")
        == static_cast<int64_t>(64 - kept.size()));
  // The renewal goes on: it finds the ones handed over no longer ours.
  // They were let go, not taken over: nothing more is dropped.
  run(admin, "SELECT pg_advisory_unlock(4242)");
  auto heartbeat = [&] {
    return scalar(admin,
                  "SELECT (extract(epoch FROM heartbeat_at) * 1000000)::bigint "
                  "FROM drover.coordinators WHERE instance = $1",
                  pg::params{}.text(me.instance));
  };
  // Two more renewals (the first one's answer is handled before the next
  // one is sent)...
  auto renewed_at = earliest_expiry_ms(admin, me);
  REQUIRE(poll_until([&] { return earliest_expiry_ms(admin, me) > renewed_at; },
                     10s));
  renewed_at = earliest_expiry_ms(admin, me);
  REQUIRE(poll_until([&] { return earliest_expiry_ms(admin, me) > renewed_at; },
                     10s));
  // ...and two more keeper rounds (the second began after the first one's
  // announcement) have run.
  for (int round = 0; round < 2; ++round) {
    auto before = heartbeat();
    REQUIRE(poll_until([&] { return heartbeat() > before; }, 10s));
  }
  CHECK(keeper.freshness(margin)());
  CHECK(keeper.held().partitions == kept);
  CHECK(unexpired(admin, me) == static_cast<int64_t>(kept.size()));
  CHECK_FALSE(log.has("deposed"));
  {
    std::lock_guard<std::mutex> guard{mx};
    CHECK_FALSE(was_deposed);
    CHECK(released.size() == 1);
  }
  must_ok(keeper.stop_and_release());
}

namespace {

/// Hooks that accept every change and record what was released.
struct recording_hooks {
  std::mutex mx;
  std::vector<int32_t> released;
  pg::share_keeper::hooks make() {
    pg::share_keeper::hooks h;
    h.acquired = [](const pg::lease_grant&, const std::vector<int32_t>&) {
      return true;
    };
    h.releasing
        = [this](const pg::lease_grant&, const std::vector<int32_t>& gone) {
            std::lock_guard<std::mutex> guard{mx};
            released.insert(released.end(), gone.begin(), gone.end());
            return true;
          };
    return h;
  }
};

bool subset_of(const std::vector<int32_t>& some,
               const std::vector<int32_t>& all) {
  return std::includes(all.begin(), all.end(), some.begin(), some.end());
}

} // namespace

TEST_CASE("share_keeper: a coordinator restarted under its node id takes "
          "exactly its dead predecessor's share",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  // Another sharing coordinator (heard from for the next hour; it takes
  // nothing here).
  auto other = pg::this_process("share-b");
  must_ok(pg::announce(s, other, true));
  heard_for_an_hour(admin, other);
  auto first = pg::this_process("share-a");
  log_lines log;
  recording_hooks first_hooks;
  auto keeper
      = std::make_unique<pg::share_keeper>(keeper_config(db, first, log));
  keeper->start(first_hooks.make());
  REQUIRE(poll_until(
      [&] { return log.has("took partitions") && unexpired(admin, first) > 0; },
      10s));
  auto share = keeper->held().partitions;
  CHECK(share.size() == 32);
  // It dies (no release; its leases expire one TTL later) while its
  // heartbeat is still fresh -- kept fresh here, so that the restart is
  // "at once" however slow this machine is.
  keeper.reset();
  heard_for_an_hour(admin, first);
  auto second = pg::this_process("share-a");
  REQUIRE(second.instance != first.instance);
  log_lines log2;
  recording_hooks second_hooks;
  pg::share_keeper restarted{keeper_config(db, second, log2)};
  restarted.start(second_hooks.make());
  // It takes the predecessor's rows as they expire: that share, no other
  // (as a third member its share would be 21 or 22 partitions, and some of
  // them the other's).
  std::vector<int32_t> seen;
  REQUIRE(poll_until(
      [&] {
        seen = restarted.held().partitions;
        REQUIRE(subset_of(seen, share));
        return seen == share;
      },
      10s));
  CHECK(unexpired(admin, second) == 32);
  CHECK_FALSE(log2.has("replaced"));
  must_ok(restarted.stop_and_release());
}

TEST_CASE("share_keeper: an instance that sees a newer one of its node id "
          "hands everything over and takes nothing more",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto older = pg::this_process("share-a");
  log_lines log;
  recording_hooks older_hooks;
  auto kc = keeper_config(db, older, log);
  log_lines replaced;
  kc.replaced = replaced.sink();
  pg::share_keeper keeper{kc};
  keeper.start(older_hooks.make());
  REQUIRE(poll_until([&] { return unexpired(admin, older) == 64; }, 10s));
  // A second process under the same node id (paused and replaced, or
  // given the same --node-id by mistake): the newer one wins, by hand-off
  // (the rows released), not by waiting for them to expire.
  auto newer = pg::this_process("share-a");
  log_lines log2;
  recording_hooks newer_hooks;
  pg::share_keeper twin{keeper_config(db, newer, log2)};
  twin.start(newer_hooks.make());
  REQUIRE(log.wait_for("replaced: a newer coordinator runs as node 'share-a'",
                       10s));
  REQUIRE(poll_until([&] { return unexpired(admin, newer) == 64; }, 10s));
  CHECK(keeper.held().partitions.empty());
  {
    std::lock_guard<std::mutex> guard{older_hooks.mx};
    CHECK(older_hooks.released.size() == 64);
  }
  REQUIRE(replaced.size() == 1);
  CHECK(replaced.has(newer.instance));
  CHECK_FALSE(log.has("deposed"));
  CHECK_FALSE(log2.has("replaced"));
  // Replaced, it takes nothing more even once the newer one is gone (its
  // process is stopping): the twin leaves, its rows are free, and four
  // renewal intervals later (a round each) the older one still holds
  // nothing.
  must_ok(twin.stop_and_release());
  CHECK_FALSE(poll_until([&] { return !keeper.held().partitions.empty(); },
                         4 * interval));
  CHECK(unexpired(admin, older) == 0);
  CHECK(replaced.size() == 1);
  must_ok(keeper.stop_and_release());
}

TEST_CASE("live_twin: another process under the node id counts while it "
          "beats, not once it is silent",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto running = pg::this_process("share-a");
  log_lines log;
  recording_hooks hooks;
  auto keeper
      = std::make_unique<pg::share_keeper>(keeper_config(db, running, log));
  keeper->start(hooks.make());
  REQUIRE(poll_until([&] { return unexpired(admin, running) == 64; }, 10s));
  // A patience of a lease TTL: ten of the keeper's rounds.
  auto newcomer = pg::this_process("share-a");
  // It beats (every renewal interval): a live twin.
  auto twin = must(pg::live_twin(s, newcomer, ttl, ttl));
  REQUIRE(twin);
  CHECK(twin->instance == running.instance);
  // Another node id is nobody's twin.
  CHECK_FALSE(must(pg::live_twin(s, pg::this_process("share-b"), ttl, ttl)));
  // It stops beating (crashed or paused) with its row still fresh: not a
  // live twin once it was silent for the patience, half its own TTL here
  // (its row still a member for 4 TTLs: silent, not stale).
  keeper.reset();
  run(admin,
      "UPDATE drover.coordinators SET lease_ttl_ms = $2 WHERE instance = $1",
      pg::params{}.text(running.instance).int64((4 * ttl).count()));
  CHECK_FALSE(must(pg::live_twin(s, newcomer, 60s, ttl)));
  // It was judged silent once unheard for half its TTL (the server's
  // clock), not the newcomer's 1.5 s.
  CHECK(scalar(admin,
               "SELECT (extract(epoch FROM now() - heartbeat_at) * 1000)"
               "::bigint FROM drover.coordinators WHERE instance = $1",
               pg::params{}.text(running.instance))
        >= (2 * ttl).count());
  // A row of a process gone from this process's space (boot and pid
  // namespace) does not count, at once however long the patience (it was
  // heard from just now)...
  REQUIRE_FALSE(newcomer.process_space.empty());
  auto child = fork();
  REQUIRE(child >= 0);
  if (child == 0)
    _exit(0);
  REQUIRE(waitpid(child, nullptr, 0) == child);
  auto gone = pg::this_process("share-c");
  gone.pid = child;
  must(pg::announce_row(s, gone, true, 0));
  auto asked = std::chrono::steady_clock::now();
  CHECK_FALSE(must(pg::live_twin(s, pg::this_process("share-c"), 60s, 30s)));
  CHECK(std::chrono::steady_clock::now() - asked < 15s);
  // ...but its pid says nothing in another space (a container of the same
  // host name): it is watched for the patience.
  auto elsewhere = pg::this_process("share-d");
  elsewhere.pid = child;
  elsewhere.process_space = "another-boot/pid:[1]";
  must(pg::announce_row(s, elsewhere, true, 0));
  asked = std::chrono::steady_clock::now();
  CHECK_FALSE(must(pg::live_twin(s, pg::this_process("share-d"), 60s, 600ms)));
  CHECK(std::chrono::steady_clock::now() - asked >= 600ms);
}

TEST_CASE("live_twin: a twin with a longer lease TTL than the newcomer's is "
          "waited for half its own TTL between its beats",
          "[pg][share][lease]") {
  // A process under the node id announced a 20 s lease TTL (it renews,
  // say, every 3 s) and last beat 2 s ago; the newcomer's own patience is
  // 1.5 s. Judged by that alone it would pass for dead (and start, and
  // displace a live coordinator as its newer twin); it beats again 2.5 s
  // later and is found.
  test_db db;
  auto s = db.session();
  auto twin = pg::this_process("share-a");
  twin.process_space = "another-boot/pid:[1]"; // its pid says nothing here
  must(pg::announce_row(s, twin, true, 0, 20s));
  auto admin = db.connect();
  run(admin,
      "UPDATE drover.coordinators SET heartbeat_at = now() - interval '2 s' "
      "WHERE instance = $1",
      pg::params{}.text(twin.instance));
  std::thread beat{[&] {
    std::this_thread::sleep_for(2500ms);
    auto other = db.session();
    must(pg::announce_row(other, twin, true, 0, 20s));
  }};
  auto asked = std::chrono::steady_clock::now();
  auto found = must(pg::live_twin(s, pg::this_process("share-a"), ttl, ttl));
  auto took = std::chrono::steady_clock::now() - asked;
  beat.join();
  REQUIRE(found);
  CHECK(found->instance == twin.instance);
  CHECK(took >= 2s);
}

TEST_CASE("other_lease_ttls names the live sharing coordinators announcing "
          "another lease TTL",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto me = pg::this_process("share-a");
  auto same = pg::this_process("share-b");
  auto longer = pg::this_process("share-c");
  auto silent = pg::this_process("share-d");
  must(pg::announce_row(s, same, true, 0, 2s));
  must(pg::announce_row(s, longer, true, 0, 10s));
  must(pg::announce_row(s, silent, true, 0, 4s));
  // Not heard from within its own TTL: no member, nothing to say.
  run(admin,
      "UPDATE drover.coordinators SET heartbeat_at = now() - interval '5 s' "
      "WHERE instance = $1",
      pg::params{}.text(silent.instance));
  CHECK(must(pg::other_lease_ttls(s, me, 2s)) == "share-c=10000");
  CHECK(must(pg::other_lease_ttls(s, me, 10s)) == "share-b=2000");
}

TEST_CASE("announce_row: an instance announced again after its row was "
          "pruned keeps its started_at, so it stays the older one",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto me = pg::this_process("share-a");
  auto started = must(pg::announce_row(s, me, true, 0));
  CHECK(must(pg::announce_row(s, me, true, started)) == started);
  // Pruned (unheard for an hour), then heard again.
  run(admin, "DELETE FROM drover.coordinators WHERE instance = $1",
      pg::params{}.text(me.instance));
  CHECK(must(pg::announce_row(s, me, true, started)) == started);
  // A first announcement takes the server's now().
  auto other = pg::this_process("share-a");
  CHECK(must(pg::announce_row(s, other, true, 0)) > started);
}

TEST_CASE("share_keeper: a member is judged by its own lease TTL, not the "
          "reader's",
          "[pg][share][lease]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto me = pg::this_process("share-a");
  log_lines log;
  recording_hooks hooks;
  pg::share_keeper keeper{keeper_config(db, me, log)};
  keeper.start(hooks.make());
  REQUIRE(poll_until([&] { return unexpired(admin, me) == 64; }, 10s));
  // Another coordinator with a 60 s lease TTL, last heard from 5 s ago
  // (more than this keeper's 1.5 s TTL; its row written so in one
  // statement): still a member, so this keeper hands it its share, and
  // keeps the rest.
  auto slow = pg::this_process("share-b");
  run(admin,
      "INSERT INTO drover.coordinators (instance, node_id, host, pid, "
      "shares, share_key, lease_ttl_ms, heartbeat_at) VALUES ($1, $2, $3, "
      "$4, true, $2, 60000, now() - interval '5 seconds')",
      pg::params{}
          .text(slow.instance)
          .text(slow.node_id)
          .text(slow.host)
          .int64(slow.pid));
  REQUIRE(log.wait_for("handed over partitions", 10s));
  CHECK(keeper.held().partitions.size() == 32);
  CHECK_FALSE(poll_until([&] { return keeper.held().partitions.size() != 32; },
                         2 * ttl));
  // Without a TTL of its own (an older binary's row), the reader's holds:
  // silent for 5 s, it is not a member, and the share comes back.
  run(admin,
      "UPDATE drover.coordinators SET lease_ttl_ms = NULL WHERE instance = "
      "$1",
      pg::params{}.text(slow.instance));
  REQUIRE(poll_until([&] { return unexpired(admin, me) == 64; }, 10s));
  must_ok(keeper.stop_and_release());
}
