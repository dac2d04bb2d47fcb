#pragma once

// A PostgreSQL cluster of a test's own, to stop and start at will (fault
// tests: `pg_ctl stop -m immediate` mid-run). Needs PostgreSQL's server
// binaries (/usr/lib/postgresql/*/bin, or PG_BIN), not DROVER_PG_URL.

#include "runtime/pg.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <glob.h>
#include <pwd.h>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

namespace drover::testing {

using namespace std::chrono_literals;

/// The newest installed PostgreSQL's bin directory (PG_BIN overrides).
inline std::string pg_bin_dir() {
  if (const char* env = std::getenv("PG_BIN"); env != nullptr && *env)
    return env;
  glob_t g{};
  std::vector<std::string> dirs;
  if (glob("/usr/lib/postgresql/*/bin", 0, nullptr, &g) == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i)
      dirs.emplace_back(g.gl_pathv[i]);
  globfree(&g);
  if (dirs.empty())
    FAIL("no PostgreSQL binaries under /usr/lib/postgresql/*/bin");
  auto version = [](const std::string& dir) {
    return std::atoi(dir.c_str() + std::string{"/usr/lib/postgresql/"}.size());
  };
  std::sort(dirs.begin(), dirs.end(), [&](const auto& x, const auto& y) {
    return version(x) < version(y);
  });
  return dirs.back();
}

/// A PostgreSQL cluster of the test's own: data directory and unix socket
/// in a temporary directory, no TCP listener, fsync and synchronous_commit
/// at their (durable) defaults. Stopping it disturbs nobody else. The
/// destructor stops it (immediately) and deletes it, whatever happened.
/// As root, PostgreSQL's programs run as the `postgres` account, like
/// scripts/lib.sh's pg_run.
class throwaway_cluster {
public:
  throwaway_cluster() : dir_("drover-pg"), bin_(pg_bin_dir()) {
    data_ = dir_.path() + "/data";
    socket_dir_ = dir_.path() + "/run";
    std::filesystem::create_directories(socket_dir_);
    if (geteuid() == 0) {
      auto* pw = getpwnam("postgres");
      REQUIRE(pw != nullptr);
      for (const auto& p : {dir_.path(), socket_dir_})
        REQUIRE(chown(p.c_str(), pw->pw_uid, pw->pw_gid) == 0);
      // Nodes started as root switch to an unprivileged user (--run-as,
      // support/process.hpp), which must reach the socket (initdb keeps
      // the data directory itself 0700).
      for (const auto& p : {dir_.path(), socket_dir_})
        REQUIRE(chmod(p.c_str(), 0755) == 0);
    }
    // --no-sync: only initdb's own final flush; the server itself runs
    // with fsync on.
    pg({bin_ + "/initdb", "-D", data_, "-U", "drover", "-A", "trust",
        "--no-instructions", "--no-sync"},
       60s);
    start();
    auto admin = must(pg::connection::open(url_of("postgres")));
    must(admin.exec("CREATE DATABASE drover"));
  }

  ~throwaway_cluster() {
    // Never throws: runs during stack unwinding of a failed test.
    std::vector<std::string> argv = as_owner(
        {bin_ + "/pg_ctl", "-D", data_, "-m", "immediate", "-w", "stop"});
    std::string cmd;
    for (const auto& a : argv)
      cmd += "'" + a + "' ";
    cmd += ">/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      // Not running (already stopped by the test): nothing to do.
    }
  }

  throwaway_cluster(const throwaway_cluster&) = delete;
  throwaway_cluster& operator=(const throwaway_cluster&) = delete;

  void start() {
    pg({bin_ + "/pg_ctl", "-D", data_, "-l", dir_.path() + "/server.log", "-w",
        "-t", "60", "-o", "-k " + socket_dir_ + " -c listen_addresses=''",
        "start"},
       90s);
  }

  /// `pg_ctl stop -m immediate`: the server dies without a checkpoint, as
  /// in a crash; in-flight transactions are lost, committed ones are not.
  void stop_immediately() {
    pg({bin_ + "/pg_ctl", "-D", data_, "-m", "immediate", "-w", "stop"}, 60s);
  }

  std::string url() const {
    return url_of("drover");
  }

  std::string server_log() const {
    return tail_of(dir_.path() + "/server.log");
  }

private:
  std::string url_of(const std::string& db) const {
    return "postgresql:///" + db + "?host=" + socket_dir_ + "&user=drover";
  }

  static std::vector<std::string> as_owner(std::vector<std::string> argv) {
    if (geteuid() == 0)
      argv.insert(argv.begin(), {"/usr/sbin/runuser", "-u", "postgres", "--"});
    return argv;
  }

  void pg(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
    auto [rc, out] = run_to_exit(as_owner(std::move(argv)), timeout);
    INFO(out << "\n" << server_log());
    REQUIRE(rc == 0);
  }

  scratch_dir dir_;
  std::string bin_;
  std::string data_;
  std::string socket_dir_;
};

} // namespace drover::testing
