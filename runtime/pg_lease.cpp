#include "runtime/pg_lease.hpp"

#include "runtime/errors.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <optional>
#include <random>
#include <sstream>
#include <unistd.h>

namespace drover::pg {

namespace {

template <class T>
T number(std::string_view str) {
  T out{};
  std::from_chars(str.data(), str.data() + str.size(), out);
  return out;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0)
    return "unknown";
  return buf;
}

/// Where this process's pid means something: the kernel's boot id and the
/// pid namespace ("<boot id>/pid:[<inode>]"); empty if either is unknown.
std::string process_space() {
  std::string boot;
  if (auto* f = std::fopen("/proc/sys/kernel/random/boot_id", "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof(buf), f) != nullptr)
      boot = buf;
    std::fclose(f);
  }
  while (!boot.empty() && (boot.back() == '\n' || boot.back() == ' '))
    boot.pop_back();
  char ns[64] = {};
  auto n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
  if (boot.empty() || n <= 0)
    return {};
  return boot + "/" + std::string{ns, static_cast<size_t>(n)};
}

/// Rolls back whatever transaction is open, ignoring errors: the caller
/// already has the error to report.
void abandon(session& db) {
  if (db.conn().in_transaction())
    db.conn().exec("ROLLBACK", {}, false, "rolling back");
}

/// The grant's partitions and epochs as array parameters ($2, $3), after
/// the owner's instance ($1).
params grant_params(const lease_grant& g) {
  array_param parts{array_param::element::int4, g.partitions.size()};
  array_param epochs{array_param::element::int8, g.epochs.size()};
  for (auto p : g.partitions)
    parts.int32(p);
  for (auto e : g.epochs)
    epochs.int64(e);
  params ps;
  ps.text(g.owner.instance).array(parts).array(epochs);
  return ps;
}

/// Opens a transaction (rolling back one left open) that waits at most
/// `lock_wait` for a row lock (lock_timeout; SQLSTATE 55P03 after it).
caf::error begin_lease_change(session& db, std::chrono::milliseconds lock_wait,
                              const char* what) {
  auto& conn = db.conn();
  abandon(db);
  if (auto res = conn.exec("BEGIN", {}, false, what); !res)
    return std::move(res.error());
  // A bounded wait for the row locks: a writer of a paused holder keeps
  // them until PostgreSQL ends its idle transaction, and the caller
  // decides how long to keep trying.
  if (auto res = conn.exec(
          "SELECT set_config('lock_timeout', $1, true)",
          params{}.text(std::to_string(std::max<int64_t>(1, lock_wait.count()))
                        + "ms"),
          false, what);
      !res) {
    abandon(db);
    return std::move(res.error());
  }
  return caf::none;
}

} // namespace

lease_owner this_process(const std::string& node_id) {
  lease_owner o;
  o.node_id = node_id;
  o.host = host_name();
  o.process_space = process_space();
  o.pid = static_cast<int64_t>(getpid());
  std::random_device rd;
  char random[17];
  std::snprintf(random, sizeof(random), "%08x%08x", rd(), rd());
  o.instance
      = node_id + "@" + o.host + ":" + std::to_string(o.pid) + ":" + random;
  return o;
}

std::shared_ptr<const write_fence>
lease_grant::fence(std::chrono::milliseconds idle_limit) const {
  auto f = std::make_shared<write_fence>();
  f->idle_limit_ms = idle_limit.count();
  f->instance = owner.instance;
  f->partitions = partitions;
  f->epochs = epochs;
  return f;
}

std::string describe(const lease_holder& h) {
  std::ostringstream out;
  out.precision(1);
  out << "node '" << h.owner.node_id << "' (host " << h.owner.host << ", pid "
      << h.owner.pid << ", instance " << h.owner.instance
      << ") holds the partition leases of this database until " << h.expires_at
      << " (in " << std::fixed << static_cast<double>(h.expires_in_ms) / 1000.0
      << " s, renewed while it runs)";
  return out.str();
}

caf::expected<acquire_attempt>
try_acquire_all(session& db, const lease_owner& owner,
                std::chrono::milliseconds ttl,
                std::chrono::milliseconds lock_wait) {
  auto& conn = db.conn();
  auto fail = [&db](caf::error err) {
    abandon(db);
    return err;
  };
  if (auto err
      = begin_lease_change(db, lock_wait, "taking the partition leases"))
    return err;
  // Every row locked: a concurrent taker waits, then sees our epochs.
  auto rows = conn.exec(
      "SELECT partition, owner, coalesce(owner_node, ''), "
      "coalesce(owner_host, ''), coalesce(owner_pid, 0), epoch, "
      "expires_at > now(), "
      "CASE WHEN isfinite(expires_at) THEN to_char(expires_at AT TIME ZONE "
      "'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') ELSE 'never' END, "
      "CASE WHEN isfinite(expires_at) THEN greatest(0, extract(epoch FROM "
      "expires_at - now()) * 1000)::bigint ELSE 0 END "
      "FROM drover.partition_leases ORDER BY partition FOR UPDATE",
      {}, false, "reading the partition leases");
  if (!rows && sqlstate_of(rows.error()) == "55P03") { // lock_not_available
    abandon(db);
    acquire_attempt busy;
    busy.busy = true;
    return busy;
  }
  if (!rows)
    return fail(std::move(rows.error()));
  if (rows->rows() == 0)
    return fail(
        make_error(errc::bad_config, "drover.partition_leases has no rows"));
  acquire_attempt out;
  for (int row = 0; row < rows->rows(); ++row) {
    bool owned = !rows->is_null(row, 1);
    bool live = rows->value(row, 6) == "t";
    if (owned && live && rows->value(row, 1) != owner.instance) {
      lease_holder h;
      h.partition = number<int32_t>(rows->value(row, 0));
      h.owner.instance = std::string{rows->value(row, 1)};
      h.owner.node_id = std::string{rows->value(row, 2)};
      h.owner.host = std::string{rows->value(row, 3)};
      h.owner.pid = number<int64_t>(rows->value(row, 4));
      h.epoch = number<int64_t>(rows->value(row, 5));
      h.expires_at = std::string{rows->value(row, 7)};
      h.expires_in_ms = number<int64_t>(rows->value(row, 8));
      out.held_by = std::move(h);
      abandon(db);
      return out;
    }
  }
  auto taken = conn.exec(
      "UPDATE drover.partition_leases SET owner = $1, owner_node = $2, "
      "owner_host = $3, owner_pid = $4, epoch = epoch + 1, "
      "expires_at = now() + $5 * interval '1 millisecond', "
      "acquired_at = now() RETURNING partition, epoch",
      params{}
          .text(owner.instance)
          .text(owner.node_id)
          .text(owner.host)
          .int64(owner.pid)
          .int64(ttl.count()),
      false, "taking the partition leases");
  if (!taken)
    return fail(std::move(taken.error()));
  lease_grant g;
  g.owner = owner;
  // Ascending (the fence looks partitions up by bisection); RETURNING
  // has no order of its own.
  std::vector<std::pair<int32_t, int64_t>> held;
  for (int row = 0; row < taken->rows(); ++row)
    held.emplace_back(number<int32_t>(taken->value(row, 0)),
                      number<int64_t>(taken->value(row, 1)));
  std::sort(held.begin(), held.end());
  for (auto& [partition, epoch] : held) {
    g.partitions.push_back(partition);
    g.epochs.push_back(epoch);
  }
  if (auto res = conn.exec("COMMIT", {}, false, "taking the partition leases");
      !res)
    return fail(std::move(res.error()));
  out.grant = std::move(g);
  return out;
}

caf::expected<lease_grant>
acquire_all(session& db, const lease_owner& owner,
            std::chrono::milliseconds ttl, std::chrono::milliseconds poll,
            std::chrono::milliseconds patience,
            const std::function<bool()>& keep_waiting) {
  auto give_up = std::chrono::steady_clock::now() + patience;
  std::optional<lease_holder> seen;
  for (;;) {
    auto attempt = try_acquire_all(db, owner, ttl, poll);
    if (!attempt)
      return std::move(attempt.error());
    if (attempt->grant)
      return std::move(*attempt->grant);
    if (attempt->busy) {
      if (keep_waiting && !keep_waiting())
        return make_error(errc::conflict,
                          "stopped while the partition leases were locked by "
                          "another transaction");
      if (std::chrono::steady_clock::now() >= give_up)
        return make_error(errc::unavailable,
                          "the partition leases stay locked by another "
                          "transaction (pg_locks names it)");
      continue;
    }
    auto& h = *attempt->held_by;
    // The same holder, its expiry moved on: it renewed, so it is alive.
    bool renewed = seen && seen->owner.instance == h.owner.instance
                   && seen->expires_at != h.expires_at;
    if (renewed || std::chrono::steady_clock::now() >= give_up)
      return make_error(errc::conflict, describe(h));
    if (!seen || seen->owner.instance != h.owner.instance)
      seen = h;
    // Wait for its next renewal or its expiry, whichever we see first.
    auto wait = std::min(poll, std::chrono::milliseconds{h.expires_in_ms + 1});
    std::this_thread::sleep_for(wait);
  }
}

// -- membership
// -----------------------------------------------------------------

caf::expected<int64_t> announce_row(session& db, const lease_owner& owner,
                                    bool shares, int64_t started_us,
                                    std::chrono::milliseconds ttl) {
  auto res = db.conn().exec_prepared(
      "drover_announce",
      "WITH beat AS (INSERT INTO drover.coordinators (instance, node_id, "
      "host, pid, cluster_address, shares, share_key, started_at, "
      "process_space, lease_ttl_ms) VALUES ($1, $2, $3, $4, $5, $6, CASE "
      "WHEN $6 THEN $2 END, CASE WHEN $7::bigint > 0 THEN timestamptz "
      "'epoch' + $7::bigint * interval '1 microsecond' ELSE now() END, "
      "nullif($8, ''), nullif($9::bigint, 0)) ON CONFLICT "
      "(instance) DO UPDATE SET heartbeat_at = now(), lease_ttl_ms = "
      "EXCLUDED.lease_ttl_ms "
      "RETURNING started_at), "
      "pruned AS (DELETE FROM drover.coordinators WHERE heartbeat_at < now() "
      "- interval '1 hour' AND instance <> $1) "
      "SELECT (extract(epoch FROM started_at) * 1000000)::bigint FROM beat",
      params{}
          .text(owner.instance)
          .text(owner.node_id)
          .text(owner.host)
          .int64(owner.pid)
          .text(owner.cluster_address)
          .boolean(shares)
          .int64(started_us)
          .text(owner.process_space)
          .int64(ttl.count()),
      false, "announcing the coordinator");
  if (!res)
    return std::move(res.error());
  if (res->rows() != 1)
    return make_error(errc::unavailable, "announcing the coordinator: no row");
  return number<int64_t>(res->value(0, 0));
}

caf::error announce(session& db, const lease_owner& owner, bool shares) {
  auto res = announce_row(db, owner, shares, 0);
  return res ? caf::none : std::move(res.error());
}

caf::error leave(session& db, const lease_owner& owner) {
  auto res = db.conn().exec("DELETE FROM drover.coordinators WHERE instance = "
                            "$1",
                            params{}.text(owner.instance), false,
                            "leaving drover.coordinators");
  return res ? caf::none : std::move(res.error());
}

std::string announced_ttl_sql(const std::string& column,
                              const std::string& fallback) {
  return "least(greatest(coalesce(" + column + ", " + fallback
         + "), 500), 600000)";
}

caf::expected<std::string> members_json(session& db,
                                        std::chrono::milliseconds stale) {
  // Built by PostgreSQL: the rows are few and json_build_object escapes.
  // Gone after twice its own TTL; a row without one after `stale`.
  auto res = db.conn().exec(
      "SELECT coalesce(json_agg(json_build_object("
      "'node_id', c.node_id, 'host', c.host, 'pid', c.pid, "
      "'cluster_address', c.cluster_address, "
      "'state', CASE WHEN c.heartbeat_at < now() - 2 * "
          + announced_ttl_sql("c.lease_ttl_ms", "$1 / 2")
          + " * interval "
            "'1 millisecond' THEN 'gone' WHEN p.held > 0 THEN 'active' "
            "ELSE 'standby' END, "
            "'partitions', p.held, "
            "'started_at', to_char(c.started_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
            "'heard_ms_ago', greatest(0, (extract(epoch FROM now() - "
            "c.heartbeat_at) * 1000)::bigint)) "
            "ORDER BY p.held DESC, c.heartbeat_at DESC), '[]')::text "
            "FROM drover.coordinators c CROSS JOIN LATERAL (SELECT count(*) AS "
            "held "
            "FROM drover.partition_leases l WHERE l.owner = c.instance AND "
            "l.expires_at > now()) p",
      params{}.int64(stale.count()), false, "listing the coordinators");
  if (!res)
    return std::move(res.error());
  return std::string{res->value(0, 0)};
}

caf::expected<lease_grant>
claim_coordinator(const std::string& conninfo, const lease_owner& owner,
                  std::chrono::milliseconds ttl,
                  std::function<bool(const std::string&)> standby,
                  std::function<void(const caf::error&)> on_outage) {
  // A standby outlasts PostgreSQL outages (a restart, a failover of the
  // database itself): it reconnects every half second and goes on
  // waiting; an active coordinator's start fails on the first one.
  // Only once the database was reached: a wrong password, database name or
  // CA is a configuration error, not an outage, and ends the start.
  bool reached = false;
  auto outage = [&](caf::error err) -> std::optional<caf::error> {
    if (!standby || !reached || !is(err, errc::unavailable))
      return err;
    if (on_outage)
      on_outage(err);
    if (!standby(std::string{}))
      return err;
    std::this_thread::sleep_for(std::chrono::milliseconds{500});
    return std::nullopt;
  };
  for (;;) {
    auto db = session::open(conninfo);
    if (!db) {
      if (auto err = outage(std::move(db.error())))
        return std::move(*err);
      continue;
    }
    if (auto err = db->migrate()) {
      if (auto stop = outage(std::move(err)))
        return std::move(*stop);
      continue;
    }
    reached = true;
    // A standby asked to stop while the rows stay locked stops at once.
    bool stopped = false;
    std::function<bool()> keep_waiting;
    if (standby)
      keep_waiting = [&] {
        stopped = !standby(std::string{});
        return !stopped;
      };
    for (;;) {
      auto grant = acquire_all(*db, owner, ttl, std::chrono::milliseconds{200},
                               2 * ttl + std::chrono::milliseconds{60000},
                               keep_waiting);
      if (grant || !standby)
        return grant;
      if (stopped) {
        leave(*db, owner);
        return grant;
      }
      if (!is(grant.error(), errc::conflict)) {
        if (auto err = outage(std::move(grant.error())))
          return std::move(*err);
        break; // a new session
      }
      auto holder = drover::describe(grant.error());
      // Seen by operators (drover.coordinators); a failure here is not
      // the standby's business: the next round tries again.
      announce(*db, owner);
      if (!standby(holder)) {
        leave(*db, owner);
        return grant;
      }
    }
  }
}

// The rows of `grant` still held ($1 owner, $2 partitions, $3 epochs),
// locked in partition order — the order in which every job write's fence
// locks them FOR SHARE (runtime/pg_fence.cpp). An UPDATE joined to the
// array directly locks them in whatever order its plan visits them, and
// a renewal then deadlocked with a job write of the same coordinator
// (SQLSTATE 40P01, seen with a million jobs; docs/benchmarks.md).
#define LOCK_HELD_IN_ORDER                                                     \
  "SELECT x.partition FROM drover.partition_leases x "                         \
  "JOIN unnest($2::int4[], $3::int8[]) AS g(partition, epoch) "                \
  "ON x.partition = g.partition WHERE x.owner = $1 AND x.epoch = g.epoch "     \
  "ORDER BY x.partition FOR UPDATE OF x"

caf::expected<std::vector<int32_t>> renew_each(session& db,
                                               const lease_grant& grant,
                                               std::chrono::milliseconds ttl) {
  std::vector<int32_t> renewed;
  if (grant.partitions.empty())
    return renewed;
  auto ps = grant_params(grant);
  ps.int64(ttl.count());
  auto res = db.conn().exec_prepared(
      "drover_renew_leases",
      "UPDATE drover.partition_leases l "
      "SET expires_at = now() + $4 * interval '1 millisecond' "
      "FROM (" LOCK_HELD_IN_ORDER ") AS h "
      "WHERE l.partition = h.partition RETURNING l.partition",
      ps, false, "renewing the partition leases");
  if (!res)
    return std::move(res.error());
  for (int row = 0; row < res->rows(); ++row)
    renewed.push_back(number<int32_t>(res->value(row, 0)));
  std::sort(renewed.begin(), renewed.end());
  return renewed;
}

caf::error renew(session& db, const lease_grant& grant,
                 std::chrono::milliseconds ttl) {
  auto renewed = renew_each(db, grant, ttl);
  if (!renewed)
    return std::move(renewed.error());
  if (!renewed->empty()) {
    // Membership is for operators: its own statement, best effort, so that
    // a missing GRANT on drover.coordinators or a lock an operator holds
    // there never stops the renewals.
    announce(db, grant.owner);
  }
  if (renewed->size() == grant.partitions.size())
    return caf::none;
  // Name the partitions lost (the first few), not only how many.
  std::string lost;
  size_t n = 0;
  for (auto p : grant.partitions)
    if (!std::binary_search(renewed->begin(), renewed->end(), p) && n++ < 8)
      lost += (lost.empty() ? "" : ", ") + std::to_string(p);
  if (n > 8)
    lost += ", ...";
  return make_error(errc::not_owner,
                    "partition " + lost + " was taken over ("
                        + std::to_string(n) + " of "
                        + std::to_string(grant.partitions.size())
                        + " partition leases taken over by another "
                          "coordinator)");
}

caf::error release_rows(session& db, const lease_grant& grant) {
  if (grant.partitions.empty())
    return caf::none;
  auto res = db.conn().exec(
      "UPDATE drover.partition_leases l SET owner = NULL, expires_at = now() "
      "FROM (" LOCK_HELD_IN_ORDER ") AS h WHERE l.partition = h.partition",
      grant_params(grant), false, "releasing the partition leases");
  return res ? caf::none : std::move(res.error());
}

#undef LOCK_HELD_IN_ORDER

caf::error release(session& db, const lease_grant& grant) {
  if (auto err = release_rows(db, grant))
    return err;
  return leave(db, grant.owner);
}

// -- lease_keeper -------------------------------------------------------------

renewal_clock::renewal_clock()
    : ns_(std::make_shared<std::atomic<int64_t>>(now_ns())) {}

int64_t renewal_clock::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void renewal_clock::renewed(int64_t sent_ns) {
  ns_->store(sent_ns, std::memory_order_relaxed);
}

std::function<bool()>
renewal_clock::freshness(std::chrono::milliseconds ttl,
                         std::chrono::milliseconds margin) const {
  auto limit
      = std::chrono::duration_cast<std::chrono::nanoseconds>(ttl - margin)
            .count();
  return [ns = ns_, limit] {
    return now_ns() - ns->load(std::memory_order_relaxed) < limit;
  };
}

lease_keeper::lease_keeper(config cfg) : cfg_(std::move(cfg)) {
  thread_ = std::thread{[this] { run(); }};
}

std::function<bool()>
lease_keeper::freshness(std::chrono::milliseconds margin) const {
  return clock_.freshness(cfg_.ttl, margin);
}

lease_keeper::~lease_keeper() {
  stop();
}

void lease_keeper::stop() {
  {
    std::lock_guard<std::mutex> guard{mx_};
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

void lease_keeper::run() {
  std::unique_ptr<session> db;
  bool healthy = true;
  auto say = [this](const std::string& line) {
    if (cfg_.log)
      cfg_.log(line);
  };
  std::unique_lock<std::mutex> guard{mx_};
  for (;;) {
    if (cv_.wait_for(guard, cfg_.interval, [this] { return stopping_; }))
      return;
    guard.unlock();
    caf::error err;
    if (!db || !db->ok()) {
      auto s = session::open(cfg_.conninfo);
      if (s)
        db = std::make_unique<session>(std::move(*s));
      else
        err = std::move(s.error());
    }
    auto sent = renewal_clock::now_ns();
    if (!err)
      err = renew(*db, cfg_.grant, cfg_.ttl);
    if (!err)
      clock_.renewed(sent);
    guard.lock();
    if (err && is(err, errc::not_owner)) {
      guard.unlock();
      if (cfg_.deposed)
        cfg_.deposed(drover::describe(err));
      return;
    }
    if (err && healthy)
      say("cannot renew the partition leases (retrying every "
          + std::to_string(cfg_.interval.count())
          + " ms; writes stop when they expire): " + drover::describe(err));
    else if (!err && !healthy)
      say("partition leases renewed again");
    healthy = !err;
  }
}

caf::error lease_keeper::stop_and_release() {
  stop();
  auto s = session::open(cfg_.conninfo);
  if (!s)
    return std::move(s.error());
  return release(*s, cfg_.grant);
}

} // namespace drover::pg
