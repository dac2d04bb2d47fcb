// One coordinator per database, with real drover-node processes on a
// private database: a second node (even with the same node id) exits 2
// naming the first and the first runs on untouched; after kill -9 the next
// node takes over within one TTL with epoch + 1 and finishes the jobs; a
// node that cannot listen changes nothing in the database; an orderly stop
// releases the leases.
//
// Waits are on events with deadlines: a "ready" line, a process exit
// (pidfd), or a query result re-run until it holds.

#include "runtime/partition.hpp"
#include "runtime/pg.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <iostream>
#include <netinet/in.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::admin_port_of;
using drover::testing::droverctl;
using drover::testing::job_id_of;
using drover::testing::must;
using drover::testing::poll_until;
using drover::testing::process;
using drover::testing::run;
using drover::testing::scalar;
using drover::testing::scaled;
using drover::testing::scratch_dir;
using drover::testing::tail_of;
using drover::testing::test_db;

namespace {

constexpr auto ttl = 2000ms;

std::vector<std::string> node_args(const std::string& url,
                                   const std::string& node_id,
                                   std::vector<std::string> extra = {}) {
  std::vector<std::string> args{DROVER_NODE_BIN,
                                "--node-id",
                                node_id,
                                "--store",
                                "postgres",
                                "--pg-url",
                                url,
                                "--admin-port",
                                "0",
                                "--http-port",
                                "0",
                                "--slots",
                                "cpu=2",
                                "--lease-ttl-ms",
                                std::to_string(ttl.count()),
                                "--lease-renew-interval-ms",
                                "300"};
  // extra: (option, value) pairs that replace the defaults above.
  for (size_t i = 0; i + 1 < extra.size(); i += 2) {
    auto opt = std::find(args.begin(), args.end(), extra[i]);
    if (opt != args.end())
      *(opt + 1) = extra[i + 1];
    else
      args.insert(args.end(), {extra[i], extra[i + 1]});
  }
  return args;
}

/// Owner, epoch and expiry of every lease row, one line each: what "the
/// lease table is unchanged" compares.
std::string lease_table(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  auto exists = run(conn, "SELECT to_regclass('drover.partition_leases') "
                          "IS NOT NULL");
  if (exists.value(0, 0) != "t")
    return "(no lease table)";
  auto res = run(conn, "SELECT partition, coalesce(owner, '-'), epoch, "
                       "expires_at FROM drover.partition_leases "
                       "ORDER BY partition");
  std::string out;
  for (int row = 0; row < res.rows(); ++row)
    out += std::string{res.value(row, 0)} + " " + std::string{res.value(row, 1)}
           + " " + std::string{res.value(row, 2)} + " "
           + std::string{res.value(row, 3)} + "\n";
  return out;
}

bool all_terminal(const std::string& url, std::chrono::milliseconds timeout) {
  return poll_until(
      [&] {
        return scalar(url, "SELECT count(*) FROM drover.jobs "
                           "WHERE final_status IS NULL")
               == 0;
      },
      timeout);
}

std::string submit(const std::string& port, const std::string& input) {
  auto [rc, out] = droverctl({"submit", "sleep", "--port", port, "--input",
                              input, "--max-attempts", "5"});
  INFO(out);
  REQUIRE(rc == 0);
  return job_id_of(out);
}

int exit_code_of(process& p, std::chrono::milliseconds timeout) {
  auto st = p.wait_exit(timeout);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  return WEXITSTATUS(*st);
}

/// A TCP listener on a free loopback port, held for the test's duration.
class taken_port {
public:
  taken_port() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    REQUIRE(listen(fd_, 1) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~taken_port() {
    close(fd_);
  }
  std::string port() const {
    return std::to_string(port_);
  }

private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

} // namespace

TEST_CASE("a second node on the same database exits 2 naming the first, "
          "which runs on untouched",
          "[pg][lease][process]") {
  test_db db;
  scratch_dir logs{"drover-lease"};
  process first{node_args(db.url(), "twin"), logs.path() + "/first.log"};
  auto ready = first.wait_for_line("ready", 30s);
  INFO(tail_of(logs.path() + "/first.log"));
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  auto owner = std::to_string(first.pid());
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.partition_leases "
                         "WHERE epoch = 1 AND owner LIKE 'twin@%:"
                             + owner + ":%'")
        == 64);
  // Same node id, same machine: still another process, refused.
  auto started = std::chrono::steady_clock::now();
  process second{node_args(db.url(), "twin")};
  auto code = exit_code_of(second, 30s);
  auto out = second.drain_all();
  INFO(out);
  CHECK(code == 2);
  CHECK(std::chrono::steady_clock::now() - started < ttl + scaled(10s));
  CHECK(out.find("another coordinator runs on this database")
        != std::string::npos);
  CHECK(out.find("node 'twin'") != std::string::npos);
  CHECK(out.find("pid " + owner) != std::string::npos);
  CHECK(out.find(" until ") != std::string::npos);
  CHECK(out.find("ready") == std::string::npos);
  // The first: same owner, same epoch, and it still runs jobs.
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.partition_leases "
                         "WHERE epoch = 1 AND owner LIKE 'twin@%:"
                             + owner + ":%'")
        == 64);
  submit(port, R"({"ms": 50, "steps": 2})");
  CHECK(all_terminal(db.url(), 30s));
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.jobs "
                         "WHERE final_status = 4")
        == 1);
  // An orderly stop releases every lease: the next node need not wait.
  first.signal(SIGTERM);
  CHECK(exit_code_of(first, 30s) == 0);
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.partition_leases "
                         "WHERE owner IS NULL AND epoch = 1")
        == 64);
  auto restart = std::chrono::steady_clock::now();
  process next{node_args(db.url(), "twin")};
  REQUIRE(next.wait_for_line("ready", 30s));
  INFO("restart after release took "
       << std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - restart)
              .count()
       << " ms");
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.partition_leases "
                         "WHERE epoch = 2")
        == 64);
  next.signal(SIGTERM);
  CHECK(exit_code_of(next, 30s) == 0);
}

TEST_CASE("after kill -9 of the coordinator the next node takes over within "
          "one TTL with epoch + 1 and finishes the jobs",
          "[pg][lease][process]") {
  test_db db;
  scratch_dir logs{"drover-lease"};
  auto log = logs.path() + "/node.log";
  std::string port;
  {
    process victim{node_args(db.url(), "victim"), log};
    auto ready = victim.wait_for_line("ready", 30s);
    INFO(tail_of(log));
    REQUIRE(ready);
    port = admin_port_of(*ready);
    for (int i = 0; i < 6; ++i)
      submit(port, R"({"ms": 1500, "steps": 3})");
    REQUIRE(poll_until(
        [&] {
          return scalar(db.url(),
                        "SELECT count(*) FROM drover.jobs WHERE status = 2")
                 >= 1;
        },
        30s));
    victim.signal(SIGKILL);
    auto st = victim.wait_exit(10s);
    REQUIRE(st);
    REQUIRE(WIFSIGNALED(*st));
  }
  auto killed = std::chrono::steady_clock::now();
  process successor{node_args(db.url(), "successor"), log};
  auto ready = successor.wait_for_line("ready", 30s);
  INFO(tail_of(log));
  REQUIRE(ready);
  auto took = std::chrono::steady_clock::now() - killed;
  INFO("takeover took "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
       << " ms");
  // One TTL, plus slack for a loaded 2-core machine (start-up, polling).
  CHECK(took < ttl + scaled(5s));
  std::cout
      << "lease_process_test: takeover after kill -9 took "
      << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
      << " ms to the successor's ready line (TTL " << ttl.count() << " ms)"
      << std::endl;
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.partition_leases "
                         "WHERE epoch = 2 AND owner LIKE 'successor@%:"
                             + std::to_string(successor.pid()) + ":%'")
        == 64);
  CHECK(all_terminal(db.url(), 60s));
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.jobs "
                         "WHERE final_status = 4")
        == 6);
  successor.signal(SIGTERM);
  CHECK(exit_code_of(successor, 30s) == 0);
}

TEST_CASE("a node whose port is taken exits non-zero and changes nothing in "
          "the database",
          "[pg][lease][process]") {
  test_db db;
  taken_port taken;
  // A fresh database: not even the schema appears.
  {
    process node{
        node_args(db.url(), "blocked", {"--admin-port", taken.port()})};
    auto code = exit_code_of(node, 30s);
    auto out = node.drain_all();
    INFO(out);
    CHECK(code != 0);
    CHECK(out.find("cannot listen") != std::string::npos);
  }
  CHECK(lease_table(db.url()) == "(no lease table)");
  CHECK(scalar(db.url(), "SELECT count(*) FROM pg_namespace "
                         "WHERE nspname = 'drover'")
        == 0);
  // A database a node has used: its lease table stays as it was.
  {
    process node{node_args(db.url(), "used")};
    REQUIRE(node.wait_for_line("ready", 30s));
    node.signal(SIGTERM);
    CHECK(exit_code_of(node, 30s) == 0);
  }
  auto before = lease_table(db.url());
  {
    process node{node_args(db.url(), "blocked", {"--http-port", taken.port()})};
    auto code = exit_code_of(node, 30s);
    INFO(node.drain_all());
    CHECK(code != 0);
  }
  CHECK(lease_table(db.url()) == before);
}

TEST_CASE("a job's id names its partition, and a partition taken from the "
          "node refuses its writes alone before the node steps down",
          "[pg][lease][process][partition]") {
  test_db db;
  process node{node_args(db.url(), "parted")};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  auto keyed = [&](const std::string& key) {
    auto [rc, out] = droverctl({"submit", "sleep", "--port", port, "--input",
                                R"({"ms": 1})", "--tenant", "acme",
                                "--idempotency-key", key, "--json"});
    INFO(out);
    return std::pair{rc, out};
  };
  // Keyed: the partition of (tenant, key), here 44 of 64
  // (tests/runtime/partition_test.cpp pins it).
  auto [rc, out] = keyed("order-42");
  REQUIRE(rc == 0);
  CHECK(partition_of_id(job_id_of(out)) == 44);
  CHECK(job_id_of(out).substr(14) == "-44");
  // Keyless submits take the node's partitions in turn.
  std::set<int32_t> seen;
  for (int i = 0; i < 8; ++i)
    seen.insert(partition_of_id(submit(port, R"({"ms": 1})")));
  CHECK(seen.size() == 8);
  REQUIRE(all_terminal(db.url(), 30s));
  // Partition 44 is taken over behind the node's back. A write there is
  // refused: the client never hears a success (the node stops at once, so
  // it hears "unavailable" or nothing before its deadline) ...
  auto admin = must(pg::connection::open(db.url()));
  run(admin, "UPDATE drover.partition_leases SET epoch = epoch + 1, owner = "
             "'thief', owner_node = 'thief' WHERE partition = 44");
  std::string key44;
  for (int i = 0; key44.empty(); ++i)
    if (partition_of_key("acme", "k" + std::to_string(i), 64) == 44)
      key44 = "k" + std::to_string(i);
  auto [rc2, out2] = keyed(key44);
  INFO(out2);
  CHECK(rc2 != 0);
  CHECK(out2.find("job_id") == std::string::npos);
  // ... and the node, deposed from a partition it held, steps down.
  CHECK(exit_code_of(node, 30s) == 3);
  auto all = node.drain_all();
  INFO(all);
  // (Its lease keeper's renewal or the refused write, whichever came first,
  // names the partition.)
  CHECK(all.find("partition 44 was taken over") != std::string::npos);
  // Nothing was written under the thief's epoch.
  CHECK(scalar(db.url(), "SELECT count(*) FROM drover.jobs") == 9);
}
