#pragma once

// A fresh PostgreSQL database per test case, on the server DROVER_PG_URL
// points at (scripts/test starts a private one and exports it). Tests fail
// with a clear message when the variable is unset: they never skip.

#include "runtime/errors.hpp"
#include "runtime/pg.hpp"
#include "support/time_scale.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

namespace drover::testing {

inline std::string server_url() {
  const char* url = std::getenv("DROVER_PG_URL");
  if (url == nullptr || *url == '\0')
    FAIL("DROVER_PG_URL is not set. The [pg] tests need a PostgreSQL server "
         "where they may CREATE DATABASE: run them through scripts/test "
         "(which starts a private server), or export DROVER_PG_URL");
  return url;
}

inline std::string random_suffix() {
  std::random_device rd;
  auto x = (static_cast<uint64_t>(rd()) << 32) | rd();
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx",
                static_cast<unsigned long long>(x));
  return buf;
}

/// The value of `x`, or a test failure naming the error.
template <class T>
T must(caf::expected<T>&& x) {
  if (!x)
    FAIL(describe(x.error()));
  return std::move(*x);
}

inline void must_ok(const caf::error& err) {
  if (err)
    FAIL(describe(err));
}

/// Runs SQL that must succeed.
inline pg::result run(pg::connection& conn, const std::string& sql,
                      const pg::params& ps = {}) {
  auto res = conn.exec(sql, ps);
  if (!res)
    FAIL(sql << ": " << describe(res.error()));
  return std::move(*res);
}

/// The single value `sql` returns on a new connection to `url`, as an
/// integer (counts, epochs).
inline int64_t scalar(const std::string& url, const std::string& sql) {
  auto conn = must(pg::connection::open(url));
  auto res = run(conn, sql);
  return std::stoll(std::string{res.value(0, 0)});
}

/// Re-runs `probe` every `interval` (20 ms) until it holds (true) or
/// `timeout` (stretched by time_scale()) passes (false): how process tests
/// wait for what a database or a log shows -- the database has no push for
/// "a job changed" that a test could wait on.
template <class Probe>
bool poll_until(Probe probe, std::chrono::milliseconds timeout,
                std::chrono::milliseconds interval
                = std::chrono::milliseconds{20}) {
  auto deadline = std::chrono::steady_clock::now() + scaled(timeout);
  for (;;) {
    if (probe())
      return true;
    if (std::chrono::steady_clock::now() + interval > deadline)
      return probe();
    std::this_thread::sleep_for(interval);
  }
}

/// A fresh database on the server of DROVER_PG_URL, dropped (forcibly) on
/// destruction.
class test_db {
public:
  test_db() : server_(server_url()), name_("drover_test_" + random_suffix()) {
    admin_ = must(pg::connection::open(server_));
    // The name is ours ([a-z0-9_]); identifiers can't be parameters.
    run(admin_, "CREATE DATABASE " + name_);
    url_ = must(pg::conninfo_with(server_, {{"dbname", name_}}));
  }

  ~test_db() {
    if (admin_.connection_ok())
      admin_.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  }

  test_db(const test_db&) = delete;
  test_db& operator=(const test_db&) = delete;

  const std::string& url() const {
    return url_;
  }
  const std::string& server() const {
    return server_;
  }

  /// A session on this database, migrated unless told otherwise.
  pg::session session(bool migrated = true) {
    auto s = must(pg::session::open(url_));
    if (migrated)
      must_ok(s.migrate());
    return s;
  }

  /// A plain connection to this database (the owner's).
  pg::connection connect() {
    return must(pg::connection::open(url_));
  }

private:
  std::string server_;
  std::string name_;
  std::string url_;
  pg::connection admin_;
};

} // namespace drover::testing
