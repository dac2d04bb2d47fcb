// The node's log as a process writes it (runtime/log.hpp,
// docs/operations.md): with --log-format json every line the node writes,
// on stdout and stderr, is one JSON object with ts, level and component;
// --log-level filters records but never the "ready" line; a bad log option
// is refused up front.

#include "support/log_record.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>

using namespace std::chrono_literals;
using drover::testing::droverctl;
using drover::testing::log_record;
using drover::testing::process;

namespace {

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    out.push_back(line);
  return out;
}

/// Checks that `line` is one log record in JSON; returns it.
log_record record_of(const std::string& line) {
  INFO(line);
  static const std::regex rfc3339{
      R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$)"};
  static const std::set<std::string> levels{"trace", "debug", "info", "warn",
                                            "error"};
  auto doc = log_record::parse(line);
  REQUIRE(doc.members.size() >= 4);
  CHECK(doc.members[0].first == "ts");
  CHECK(doc.members[1].first == "level");
  CHECK(doc.members[2].first == "component");
  CHECK(std::regex_match(doc["ts"], rfc3339));
  CHECK(levels.count(doc["level"]) == 1);
  CHECK(!doc["component"].empty());
  CHECK(doc.has("msg"));
  return doc;
}

/// The admin port of a JSON "ready" record ("admin":"host:port").
std::string admin_port_of_json(const log_record& ready) {
  auto admin = ready["admin"];
  auto colon = admin.rfind(':');
  REQUIRE(colon != std::string::npos);
  return admin.substr(colon + 1);
}

} // namespace

TEST_CASE("with --log-format json every line a node writes is a JSON record",
          "[node][log]") {
  process node{{DROVER_NODE_BIN, "--node-id", "log-json", "--admin-port", "0",
                "--http-port", "0", "--log-format", "json"}};
  auto ready_line = node.wait_for_line("\"msg\":\"ready\"", 30s);
  REQUIRE(ready_line);
  auto ready = record_of(*ready_line);
  CHECK(ready["component"] == "node");
  CHECK(ready["node"] == "log-json");
  CHECK(ready["roles"] == "all");
  CHECK(ready["development_mode"] == "true");
  CHECK(ready_line->find(R"("development_mode":true})") != std::string::npos);
  auto port = admin_port_of_json(ready);
  // The node at work: a job through the admin endpoint.
  auto [rc, out] = droverctl(
      {"submit", "sleep", "--port", port, "--input", R"({"ms": 1})", "--wait"});
  INFO(out);
  CHECK(rc == 0);
  // Startup warnings are on stderr by now (written before "ready").
  REQUIRE(node.wait_for_line("DEVELOPMENT MODE", 10s, true));
  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  auto all = node.drain_all();
  auto lines = lines_of(all);
  REQUIRE(lines.size() >= 4); // ready, stopped, and warnings
  std::set<std::string> messages;
  for (const auto& line : lines) {
    auto doc = record_of(line);
    messages.insert(doc["component"] + ": " + doc["msg"]);
  }
  CHECK(messages.count("node: ready") == 1);
  CHECK(messages.count("node: stopped") == 1);
}

TEST_CASE("the log level filters records but not the ready line",
          "[node][log]") {
  process node{{DROVER_NODE_BIN, "--node-id", "log-quiet", "--admin-port", "0",
                "--http-port", "0", "--log-level", "error"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  // Text by default: timestamp, level, component, message, fields.
  std::regex text_ready{
      R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z info node: ready node=log-quiet roles=all store=memory admin=\S+:\d+ http=\S+:\d+ development_mode=true$)"};
  CHECK(std::regex_match(*ready, text_ready));
  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  auto all = node.drain_all();
  INFO(all);
  // The development-mode warnings are below "error": not written.
  CHECK(all.find("DEVELOPMENT MODE") == std::string::npos);
  CHECK(all.find(" warn ") == std::string::npos);
  CHECK(all.find("node: stopped") != std::string::npos);
}

TEST_CASE("a node refuses unknown log options", "[node][log]") {
  for (auto [option, value] : {std::pair{"--log-format", "xml"},
                               std::pair{"--log-level", "verbose"}}) {
    process node{{DROVER_NODE_BIN, "--admin-port", "0", "--http-port", "0",
                  option, value}};
    auto st = node.wait_exit(30s);
    REQUIRE(st);
    auto out = node.drain_all();
    INFO(out);
    REQUIRE(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 2);
    CHECK(out.find(std::string{option}.substr(2)) != std::string::npos);
    CHECK(out.find("ready") == std::string::npos);
  }
}
