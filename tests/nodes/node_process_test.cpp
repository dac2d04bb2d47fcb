// Process tests: real drover-node and droverctl binaries, real signals.
// Every wait is on an event (pipe readable, pidfd readable) with a deadline.

#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <string>
#include <sys/wait.h>

using namespace std::chrono_literals;
using drover::testing::admin_port_of;
using drover::testing::droverctl;
using drover::testing::job_id_of;
using drover::testing::process;

TEST_CASE("a node starts, serves its supervision tree and stops on SIGTERM",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "proc-test", "--http-port", "0",
                "--admin-port", "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  CHECK(ready->find("roles=all") != std::string::npos);
  auto port = admin_port_of(*ready);

  auto [rc, out] = droverctl({"tree", "--port", port});
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("node:proc-test [supervisor one_for_one] running")
        != std::string::npos);

  auto [jrc, json] = droverctl({"tree", "--port", port, "--json"});
  INFO(json);
  CHECK(jrc == 0);
  CHECK(json.find("\"node:proc-test\"") != std::string::npos);

  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(node.drain_all().find("stopped") != std::string::npos);
}

TEST_CASE("SIGINT stops a node cleanly too", "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "sigint", "--admin-port", "0",
                "--http-port", "0"}};
  REQUIRE(node.wait_for_line("ready", 30s));
  node.signal(SIGINT);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("droverctl reports a node killed with SIGKILL as unreachable",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "victim", "--admin-port", "0",
                "--http-port", "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  node.signal(SIGKILL);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  CHECK(WIFSIGNALED(*st));
  auto [rc, out] = droverctl({"tree", "--port", port, "--timeout-ms", "2000"});
  CHECK(rc == 3); // unavailable
  CHECK(out.find("cannot reach") != std::string::npos);
}

TEST_CASE("a bad configuration exits with status 2 and a clear message",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--roles", "janitor"}};
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(node.drain_all().find("unknown role 'janitor'") != std::string::npos);
}

TEST_CASE("droverctl rejects bad usage with status 2", "[node]") {
  auto [rc, out] = droverctl({"frobnicate"});
  CHECK(rc == 2);
  CHECK(out.find("unknown command 'frobnicate'") != std::string::npos);
  auto [rc2, out2] = droverctl({"tree", "--port", "99999"});
  CHECK(rc2 == 2);
}

TEST_CASE("jobs submitted with droverctl run on the node", "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "jobs", "--admin-port", "0",
                "--http-port", "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  auto [rc, out] = droverctl({"submit", "sleep", "--port", port, "--input",
                              R"({"ms": 200, "steps": 4})", "--wait"});
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find(" completed (attempt 1)\n") != std::string::npos);
  CHECK(out.find("\"slept_ms\":200") != std::string::npos); // its result
  CHECK(out.find("100%") != std::string::npos); // progress was streamed
  auto [brc, bad]
      = droverctl({"submit", "exec", "--port", port, "--input",
                   R"({"argv": []})", "--max-attempts", "1", "--wait"});
  CHECK(brc == 1);
  // Refused at submit by the exec type's own input check: no job is made.
  CHECK(bad.find("argv must not be empty") != std::string::npos);
  auto [vrc, verr]
      = droverctl({"submit", "sleep", "--port", port, "--max-attempts", "0"});
  CHECK(vrc == 1);
  CHECK(verr.find("max_attempts must be at least 1") != std::string::npos);
  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
}

TEST_CASE("cancelling an exec job whose program ignores SIGTERM kills it",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "cancel", "--admin-port", "0",
                "--http-port", "0", "--exec-kill-grace-ms", "300"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  // The program reports its pid as a stage name, then ignores SIGTERM.
  auto script = std::string{"trap '' TERM; echo PROGRESS 10 pid-$$; "
                            "while :; do sleep 0.05; done"};
  auto input = std::string{R"({"argv": ["sh", "-c", ")"} + script + "\"]}";
  auto [rc, out]
      = droverctl({"submit", "exec", "--port", port, "--input", input});
  REQUIRE(rc == 0);
  auto id = job_id_of(out);
  process waiter{{DROVER_CTL_BIN, "wait", id, "--port", port}};
  // droverctl wait prints progress lines to stderr; the first one names
  // the pid, and means the program runs (and ignores SIGTERM) now.
  auto progress = waiter.wait_for_line("pid-", 30s, true);
  REQUIRE(progress);
  auto [crc, cout_] = droverctl(
      {"cancel", id, "--port", port, "--reason", "stuck on purpose"});
  CHECK(crc == 0);
  auto wst = waiter.wait_exit(30s);
  REQUIRE(wst);
  auto all = waiter.drain_all();
  INFO(all);
  CHECK(all.find(" cancelled (attempt 1)") != std::string::npos);
  auto p = progress->find("pid-");
  REQUIRE(p != std::string::npos);
  auto pid = std::stoi(progress->substr(p + 4));
  CHECK(kill(pid, 0) == -1); // killed and reaped: no zombie
  CHECK(errno == ESRCH);
  // The reason given to droverctl is in the job's history.
  auto [erc, history] = droverctl({"events", id, "--port", port});
  CHECK(erc == 0);
  INFO(history);
  CHECK(history.find("stuck on purpose") != std::string::npos);
  node.signal(SIGTERM);
  REQUIRE(node.wait_exit(30s));
}
