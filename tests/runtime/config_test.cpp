#include "runtime/config.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace drover;

namespace {

caf::expected<parse_outcome> parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"drover-node"};
  for (auto& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out;
  return parse_node_config(static_cast<int>(argv.size()), argv.data(), out);
}

void expect_bad(std::vector<std::string> args, const std::string& fragment) {
  auto r = parse(std::move(args));
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::bad_config));
  INFO(describe(r.error()));
  CHECK(describe(r.error()).find(fragment) != std::string::npos);
}

} // namespace

TEST_CASE("defaults are valid", "[config]") {
  auto r = parse({});
  REQUIRE(r);
  CHECK_FALSE(r->exit_now);
  CHECK(r->config.roles == std::vector<std::string>{"all"});
  CHECK(r->config.admin_host == "127.0.0.1");
  CHECK(r->config.admin_port == 7411);
  CHECK_FALSE(r->config.node_id.empty());
}

TEST_CASE("command line values are parsed", "[config]") {
  auto r = parse({"--node-id", "n1", "--roles", "coordinator,worker",
                  "--admin-port", "0", "--scheduler-threads", "1"});
  REQUIRE(r);
  CHECK(r->config.node_id == "n1");
  CHECK(r->config.roles == std::vector<std::string>{"coordinator", "worker"});
  CHECK(r->config.admin_port == 0);
  CHECK(r->config.scheduler_threads == 1);
  r = parse({"--slots", "cpu=4,gpu=1"});
  REQUIRE(r);
  CHECK(r->config.slots == std::map<std::string, uint32_t>{{"cpu", 4},
                                                           {"gpu", 1}});
}

TEST_CASE("the command line wins over the config file", "[config]") {
  char path[] = "/tmp/drover-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f{path};
    f << "node-id = from-file\nadmin-port = 9000\n";
  }
  auto r = parse({"--config", path, "--admin-port", "9001"});
  std::remove(path);
  REQUIRE(r);
  CHECK(r->config.node_id == "from-file");
  CHECK(r->config.admin_port == 9001);
}

TEST_CASE("bad configuration gets a specific error", "[config]") {
  expect_bad({"--no-such-option"}, "no-such-option");
  expect_bad({"--admin-port", "70000"}, "admin-port");
  expect_bad({"--admin-port", "http"}, "admin-port");
  expect_bad({"--scheduler-threads", "0"}, "scheduler-threads");
  expect_bad({"--roles", "janitor"}, "unknown role 'janitor'");
  expect_bad({"--roles", ","}, "at least one role");
  expect_bad({"--node-id", "a b"}, "node-id");
  expect_bad({"--heartbeat-interval-ms", "5000", "--connection-timeout-ms",
              "1000"},
             "connection-timeout-ms must exceed");
  expect_bad({"--config", "/nonexistent/drover.ini"}, "cannot read config");
  expect_bad({"--slots", "cpu"}, "expected class=count");
  expect_bad({"--slots", "cpu=0"}, "within [1, 1024]");
  expect_bad({"--slots", "cpu=2,cpu=3"}, "listed twice");
  expect_bad({"--slots", "c pu=2"}, "class names");
  expect_bad({"--slots", ","}, "at least one class");
  expect_bad({"--aging-interval-ms", "0"}, "aging-interval-ms");
  expect_bad({"--store", "redis"}, "store must be 'postgres' or 'memory'");
  expect_bad({"--store", "postgres"}, "needs --pg-url");
}

TEST_CASE("a config file with an unknown key is refused", "[config]") {
  char path[] = "/tmp/drover-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f{path};
    f << "admin-prot = 9000\n";
  }
  auto r = parse({"--config", path});
  std::remove(path);
  REQUIRE_FALSE(r);
  CHECK(describe(r.error()).find("admin-prot") != std::string::npos);
}

TEST_CASE("help asks to exit without running", "[config]") {
  auto r = parse({"--help"});
  REQUIRE(r);
  CHECK(r->exit_now);
}
