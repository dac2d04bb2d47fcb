// A worker node's GET /metrics (--metrics-port; nodes/worker_metrics.cpp,
// gateway/metrics_endpoint.cpp, docs/operations.md "Metrics") on a real
// cluster: a coordinator on a private PostgreSQL database and a worker
// process, scraped over HTTP and read with the Prometheus client library's
// parser. What a hostile client or a browser page gets, and what the node
// refuses at start.

#include "support/cluster.hpp"
#include "support/http_client.hpp"
#include "support/metrics_text.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using drover::testing::expect_node_refuses;
using drover::testing::give_to_node_user;
using drover::testing::http_client;
using drover::testing::http_connection;
using drover::testing::http_response;
using drover::testing::parse_metrics;
using drover::testing::poll_until;
using drover::testing::process;
using drover::testing::scratch_dir;
using drover::testing::tail_of;
using namespace drover::testing::cluster_harness;

namespace {

namespace bhttp = boost::beast::http;

using metrics = std::map<std::string, std::map<std::string, std::string>>;

/// Starts worker `name` with `extra` options and waits for its ready line
/// (the metrics port listens before it is printed).
process& start_scraped_worker(cluster& c, const std::string& name,
                              std::vector<std::string> extra) {
  auto& w = c.start_worker(name, std::move(extra));
  auto ready = w.wait_for_line("ready", 30s);
  INFO(tail_of(c.logs.path() + "/" + name + ".log"));
  REQUIRE(ready);
  CHECK_THAT(*ready, Catch::Contains(" metrics="));
  return w;
}

/// One scrape that must succeed, parsed.
metrics scrape(const http_client& client) {
  auto res = client.get("/metrics");
  INFO(res.body);
  REQUIRE(res.status == 200);
  CHECK(res.header("Content-Type")
        == "text/plain; version=0.0.4; charset=utf-8");
  return parse_metrics(res.body);
}

/// Writes `text` to `path` with `mode`, owned by the user nodes run as.
void write_token_file(const std::string& path, const std::string& text,
                      mode_t mode) {
  {
    std::ofstream out{path};
    out << text << '\n';
  }
  REQUIRE(chmod(path.c_str(), mode) == 0);
  give_to_node_user(path);
}

} // namespace

TEST_CASE("worker metrics: a worker node's GET /metrics has its slots per "
          "class, a busy slot while a job runs, its connection and the "
          "process figures",
          "[pg][cluster][process][metrics]") {
  cluster c;
  c.start_coordinator();
  auto port = free_port();
  start_scraped_worker(c, "w1",
                       {"--slots", "cpu=2,gpu=1", "--elastic-slots", "cpu=1",
                        "--metrics-port", std::to_string(port)});
  http_client client{port};
  const std::string cpu = "resource_class=cpu";
  const std::string gpu = "resource_class=gpu";

  auto m = scrape(client);
  CHECK(m["drover_worker_slots"][cpu] == "2.0");
  CHECK(m["drover_worker_slots"][gpu] == "1.0");
  CHECK(m["#type drover_worker_slots"][""] == "gauge");
  // Elastic classes only.
  CHECK(m["drover_worker_elastic_min_slots"][cpu] == "1.0");
  CHECK(m["drover_worker_elastic_min_slots"].count(gpu) == 0);
  CHECK(m["drover_worker_busy_slots"][cpu] == "0.0");
  CHECK(m["drover_worker_busy_slots"][gpu] == "0.0");
  CHECK(m["drover_worker_connected"][""] == "1.0");
  CHECK(m["drover_worker_draining"][""] == "0.0");
  CHECK(m["drover_worker_reconnects_total"][""] == "0.0");
  CHECK(m["#type drover_worker_reconnects_total"][""] == "counter");
  CHECK(m["drover_worker_attempts_started_total"][cpu] == "0.0");
  CHECK(m["#type drover_worker_attempts_started_total"][""] == "counter");
  CHECK(m["drover_worker_token_takes_waiting"][""] == "0.0");
  CHECK(m["drover_worker_tokens_granted_total"][""] == "0.0");
  // Joined: the coordinator has answered (the join at least).
  REQUIRE(m["drover_worker_heartbeat_answer_age_seconds"].count("") == 1);
  CHECK(std::stod(m["drover_worker_heartbeat_answer_age_seconds"][""]) < 30);
  // The process's figures, as the gateway exports them.
  CHECK(std::stod(m["process_resident_memory_bytes"][""]) > 1e6);
  CHECK(std::stod(m["process_start_time_seconds"][""]) > 1.7e9);
  CHECK(std::stod(m["process_open_fds"][""]) >= 3);
  CHECK(m["#type process_cpu_seconds_total"][""] == "counter");
  CHECK(std::stod(m["process_cpu_seconds_total"][""]) > 0);

  // A sleep job: while its handler runs (it has reported progress), one
  // cpu slot is busy with one running attempt.
  auto job = c.submit(3000, "sleep", 30);
  INFO(tail_of(c.logs.path() + "/w1.log"));
  REQUIRE(c.wait_running(job, 30s));
  m = scrape(client);
  CHECK(m["drover_worker_busy_slots"][cpu] == "1.0");
  CHECK(m["drover_worker_running_attempts"][cpu] == "1.0");
  CHECK(m["drover_worker_busy_slots"][gpu] == "0.0");
  CHECK(m["drover_worker_attempts_started_total"][cpu] == "1.0");
  CHECK(std::stod(m["drover_worker_leases_received_total"][""]) >= 1);

  // Done: the slot is free again and the outcome settled.
  REQUIRE(poll_until([&] { return c.events(job, completed_kind) == 1; }, 30s));
  REQUIRE(poll_until(
      [&] {
        m = scrape(client);
        return m["drover_worker_busy_slots"][cpu] == "0.0"
               && m["drover_worker_unsettled_outcomes"][""] == "0.0";
      },
      10s));
  CHECK(m["drover_worker_running_attempts"][cpu] == "0.0");
  CHECK(m["drover_worker_attempts_finished_total"][""] == "1.0");
}

TEST_CASE("worker metrics: other paths are 404, other methods 405, a "
          "foreign Host 421, HEAD has no body, and a bad request leaves "
          "the others alone",
          "[pg][cluster][process][metrics]") {
  cluster c;
  c.start_coordinator();
  auto port = free_port();
  start_scraped_worker(c, "w1", {"--metrics-port", std::to_string(port)});
  http_client client{port};
  auto p = std::to_string(port);

  CHECK(client.get("/").status == 404);
  CHECK(client.get("/api/jobs").status == 404);
  CHECK(client.get("/metrics/x").status == 404);
  CHECK(client.get("/metrics?name=x").status == 200);
  auto post = client.call(bhttp::verb::post, "/metrics");
  CHECK(post.status == 405);
  CHECK(post.header("Allow") == "GET, HEAD");
  CHECK(client.call(bhttp::verb::delete_, "/metrics").status == 405);
  CHECK(client.call(bhttp::verb::options, "/metrics").status == 405);
  // DNS rebinding: a page whose name now points at 127.0.0.1 sends its
  // own name as the Host; only loopback names with the bound port pass.
  auto evil = client.get("/metrics", {{"Host", "evil.example:" + p}});
  CHECK(evil.status == 421);
  CHECK(evil.body.find("drover_worker") == std::string::npos);
  CHECK(client.get("/metrics", {{"Host", "127.0.0.1:1"}}).status == 421);
  CHECK(client.get("/metrics", {{"Host", "localhost:" + p}}).status == 200);
  // A body, and headers over the limit.
  CHECK(client.call(bhttp::verb::get, "/metrics", "x").status == 413);
  CHECK(client.get("/metrics", {{"X-Pad", std::string(10000, 'a')}}).status
        == 431);

  // A request that never ends holds its own connection only.
  http_connection stalled{port};
  REQUIRE(stalled.connected());
  REQUIRE(stalled.write_raw("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:" + p
                            + "\r\nX-Never: "));
  // HEAD answers GET's length without a body: the pipelined request's
  // answer follows the head at once.
  http_connection pipelined{port};
  REQUIRE(pipelined.connected());
  REQUIRE(pipelined.write_raw("HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1:" + p
                              + "\r\n\r\nGET /nope HTTP/1.1\r\nHost: "
                                "127.0.0.1:"
                              + p + "\r\nConnection: close\r\n\r\n"));
  std::string received;
  REQUIRE(pipelined.wait_closed(10s, &received));
  INFO(received);
  CHECK(received.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  auto head_end = received.find("\r\n\r\n");
  REQUIRE(head_end != std::string::npos);
  auto length = received.find("Content-Length: ");
  REQUIRE(length < head_end);
  CHECK(std::stol(received.substr(length + 16)) > 1000);
  CHECK(received.substr(head_end + 4, 22) == "HTTP/1.1 404 Not Found");
  CHECK(scrape(client)["drover_worker_connected"][""] == "1.0");
}

TEST_CASE("worker metrics: a non-loopback endpoint needs the bearer token "
          "of its token file",
          "[pg][cluster][process][metrics]") {
  cluster c;
  c.start_coordinator();
  scratch_dir dir{"drover-metrics-token"};
  give_to_node_user(dir.path());
  auto file = dir.path() + "/token";
  const std::string token = "scrape-token-0123456789abcdef";
  write_token_file(file, token, 0600);
  auto port = free_port();
  start_scraped_worker(c, "w1",
                       {"--metrics-port", std::to_string(port),
                        "--metrics-host", "0.0.0.0", "--metrics-token-file",
                        file});
  http_client client{port};
  auto none = client.get("/metrics");
  CHECK(none.status == 401);
  CHECK(none.header("WWW-Authenticate") == "Bearer");
  CHECK(none.body.find("drover_worker") == std::string::npos);
  CHECK(client.with_key("scrape-token-0123456789abcdeF").get("/metrics").status
        == 401);
  CHECK(client.with_key(token + "x").get("/metrics").status == 401);
  auto m = scrape(client.with_key(token));
  CHECK(m["drover_worker_slots"]["resource_class=cpu"] == "2.0");
}

TEST_CASE("worker metrics: the node refuses at start what would expose its "
          "figures or pretend",
          "[pg][cluster][process][metrics]") {
  // Outside loopback without a token.
  expect_node_refuses({"--roles", "worker", "--coordinator", "127.0.0.1:1",
                       "--metrics-port", "9", "--metrics-host", "0.0.0.0"},
                      "--metrics-host outside loopback needs "
                      "--metrics-token-file");
  // A coordinator's figures are at its gateway's /metrics.
  expect_node_refuses({"--roles", "all", "--metrics-port", "9"},
                      "--metrics-port is for worker nodes that join a "
                      "coordinator");
  expect_node_refuses({"--roles", "worker", "--coordinator", "127.0.0.1:1",
                       "--metrics-host", "127.0.0.2"},
                      "need --metrics-port");
  expect_node_refuses({"--roles", "worker", "--coordinator", "127.0.0.1:1",
                       "--metrics-port", "65536"},
                      "metrics-port must be within [0, 65535]");
  // A token file others may read.
  scratch_dir dir{"drover-metrics-token"};
  give_to_node_user(dir.path());
  auto file = dir.path() + "/token";
  write_token_file(file, "scrape-token-0123456789abcdef", 0644);
  expect_node_refuses({"--roles", "worker", "--coordinator", "127.0.0.1:1",
                       "--metrics-port", "9", "--metrics-host", "0.0.0.0",
                       "--metrics-token-file", file},
                      "must be readable by its owner only");
  write_token_file(file, "short", 0600);
  expect_node_refuses({"--roles", "worker", "--coordinator", "127.0.0.1:1",
                       "--metrics-port", "9", "--metrics-token-file", file},
                      "the token must be 16 to 1024 characters");
}
