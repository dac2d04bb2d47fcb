#pragma once

// A drover-node with the gateway role for process tests: free ports, its
// stderr in a log file of its own (never a pipe nobody reads), the HTTP port
// read from its "ready" line. Needs DROVER_NODE_BIN.

#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace drover::testing {

/// What is left until `deadline`, at least 1 ms (an operation given 0 ms
/// would not even look at what already arrived).
inline std::chrono::milliseconds
time_left(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds{1});
}

/// The HTTP port of drover-node's ready line ("... http=127.0.0.1:PORT").
inline uint16_t http_port_of(const std::string& ready_line) {
  auto pos = ready_line.find(" http=");
  REQUIRE(pos != std::string::npos);
  auto colon = ready_line.find(':', pos);
  REQUIRE(colon != std::string::npos);
  auto port = std::stoi(ready_line.substr(colon + 1));
  REQUIRE(port > 0);
  REQUIRE(port < 65536);
  return static_cast<uint16_t>(port);
}

/// A drover-node (all roles) on free ports with `options` added (the memory
/// store and 4 cpu slots unless they say otherwise); its stderr goes to a
/// log file.
class gateway_node {
public:
  explicit gateway_node(std::vector<std::string> options = {})
      : dir_("drover-gw"), proc_(argv(options), dir_.path() + "/node.log") {
    // Its exec jobs may write there (they run as the node's user).
    give_to_node_user(dir_.path());
    auto ready = proc_.wait_for_line("ready", std::chrono::seconds{30});
    INFO(log());
    REQUIRE(ready);
    ready_line_ = *ready;
    port_ = http_port_of(*ready);
  }

  uint16_t port() const {
    return port_;
  }

  const std::string& ready_line() const {
    return ready_line_;
  }

  /// A client presenting `key` ("" = no Authorization header).
  http_client client(const std::string& key = {}) const {
    return http_client{port_, key};
  }

  /// The node's process id (e.g. to read its /proc/<pid>/status).
  pid_t pid() const {
    return proc_.pid();
  }

  /// A scratch directory that lives as long as the node, owned by the
  /// node's user.
  const std::string& dir() const {
    return dir_.path();
  }

  std::string log() const {
    return tail_of(dir_.path() + "/node.log");
  }

  /// SIGTERM; the node must stop in order (exit 0).
  void stop() {
    proc_.signal(SIGTERM);
    auto st = proc_.wait_exit(std::chrono::seconds{30});
    REQUIRE(st);
    REQUIRE(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 0);
  }

private:
  static std::vector<std::string>
  argv(const std::vector<std::string>& options) {
    std::vector<std::string> out{
        DROVER_NODE_BIN, "--node-id", "gw-test", "--admin-port", "0",
        "--http-port",   "0"};
    if (std::find(options.begin(), options.end(), "--slots") == options.end())
      out.insert(out.end(), {"--slots", "cpu=4"});
    out.insert(out.end(), options.begin(), options.end());
    return out;
  }

  scratch_dir dir_;
  process proc_;
  std::string ready_line_;
  uint16_t port_ = 0;
};

/// The body of a submission of the built-in `sleep` job type.
inline std::string sleep_job(int ms, int steps) {
  return R"({"type": "sleep", "input": {"ms": )" + std::to_string(ms)
         + R"(, "steps": )" + std::to_string(steps) + "}}";
}

} // namespace drover::testing
