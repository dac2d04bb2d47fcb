// A gateway node in front of coordinators that share the partitions
// (--share-partitions on the gateway; nodes/gateway_router.hpp): each
// request goes to the owner of its job's partition, and a kill -9 of a
// coordinator shows up as a short delay. Three coordinators, two worker
// nodes and a gateway as real processes on loopback, a real PostgreSQL.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <iostream>
#include <random>
#include <set>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace drover::testing::gateway_api;
using namespace std::chrono_literals;

namespace {

/// A sharing gateway node in front of the coordinators of `list`.
std::vector<std::string> gateway_argv(const std::string& list,
                                      const std::string& secret) {
  return {DROVER_NODE_BIN, "--node-id",     "gw", "--roles",
          "gateway",       "--coordinator", list, "--join-secret",
          secret,          "--http-port",   "0",  "--share-partitions"};
}

const std::string gateway_secret = "share-test-gateway-secret-42";

/// Submits `body` through the gateway once it serves its partition (503
/// until its map names the owner, within 10 s); the job id.
std::string submit_when_served(const http_client& http,
                               const std::string& body) {
  std::string id;
  REQUIRE(poll_until(
      [&] {
        auto res = http.post("/api/jobs", body);
        if (res.status == 202)
          id = body_of(res)["job_id"].str();
        return res.status == 202;
      },
      10s, 100ms));
  return id;
}

/// Starts sharing coordinators c1..c3 with `extra` and an HTTP port each
/// (--http-port 0), and waits until the partitions are spread over them:
/// a client of each one's own port.
std::map<std::string, http_client>
start_with_own_ports(sharing& s, std::vector<std::string> extra) {
  extra.insert(extra.end(), {"--http-port", "0"});
  std::map<std::string, http_client> own;
  for (const auto* name : {"c1", "c2", "c3"}) {
    s.start(name, false, extra);
    own.emplace(name, http_client{http_port_of(s.ready_lines.at(name))});
  }
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2", "c3"}); }, 20s));
  return own;
}

/// Three sharing coordinators c1..c3, worker nodes w1 and w2 (cpu=3 each)
/// and a sharing gateway node that joined all three.
struct gateway_cluster {
  cluster c;
  sharing s{c};
  std::unique_ptr<process> gw;
  uint16_t port = 0;

  gateway_cluster() {
    for (const auto* name : {"c1", "c2", "c3"})
      s.start(name, false, {"--gateway-join-secret", gateway_secret});
    REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2", "c3"}); }, 20s));
    for (const auto* w : {"w1", "w2"})
      s.start_worker(w, {"c1", "c2", "c3"}, "cpu=3");
    gw = std::make_unique<process>(
        gateway_argv(s.coordinator_list({"c1", "c2", "c3"}), gateway_secret),
        c.logs.path() + "/gw.log");
    auto ready = gw->wait_for_line("node: ready", 30s);
    INFO(s.logs_of({"gw", "c1", "c2", "c3"}));
    REQUIRE(ready);
    port = http_port_of(*ready);
    // The gateway learns who owns what within its map interval (1 s).
    REQUIRE(poll_until(
        [&] {
          return c.log_count("gw", "the gateway joined a coordinator") >= 3;
        },
        20s));
  }
};

} // namespace

TEST_CASE("a sharing gateway sends each request to its partition's owner "
          "and keeps serving through a kill -9 of a coordinator",
          "[pg][cluster][process][share]") {
  auto seed = std::random_device{}();
  std::cout << "share_gateway_test: seed " << seed << "\n";
  std::mt19937 rng{seed};
  gateway_cluster g;
  auto& c = g.c;
  auto& s = g.s;
  INFO(s.logs_of({"gw", "c1", "c2", "c3"}));
  http_client http{g.port};

  auto body = [](int ms, const std::string& key) {
    auto b = "{\"type\":\"sleep\",\"input\":{\"ms\":"
             + std::to_string(ms * time_scale()) + ",\"steps\":5}";
    if (!key.empty())
      b += ",\"idempotency_key\":\"" + key + "\"";
    return b + "}";
  };
  // Keyed submits land in their key's partition, whoever owns it: every
  // coordinator gets some, none is refused, and a retry with the same key
  // finds the same job.
  std::vector<std::string> jobs;
  std::set<std::string> owners;
  std::map<std::string, std::string> by_key;
  auto run_id = std::to_string(rng());
  submit_when_served(http, body(50, "probe-" + run_id));
  // 18 at least; more while a coordinator got none (18 random keys miss
  // one of three once in ~500 runs).
  for (int i = 0; i < 60 && (i < 18 || owners.size() < 3); ++i) {
    auto key = "k" + std::to_string(i) + "-" + run_id;
    auto id = submit(http, body(300, key));
    by_key[key] = id;
    jobs.push_back(id);
    owners.insert(s.owner_of(id));
  }
  CHECK(owners.size() == 3);
  for (const auto& [key, id] : by_key)
    CHECK(submit(http, body(300, key)) == id);
  // Keyless submits spread over the coordinators too; reads and cancels go
  // to the owner (no 503 not_owner for another coordinator's job).
  std::set<std::string> keyless_owners;
  for (int i = 0; i < 9; ++i) {
    auto id = submit(http, body(300, ""));
    jobs.push_back(id);
    keyless_owners.insert(s.owner_of(id));
    CHECK(get_job(http, id)["job_id"].str() == id);
  }
  CHECK(keyless_owners.size() >= 2);
  std::set<std::string> cancelled_at;
  std::vector<std::string> cancelled;
  // Six at least, more while they all landed on one owner (six random
  // keys do once in 243 runs).
  for (int i = 0; i < 12 && (i < 6 || cancelled_at.size() < 2); ++i) {
    auto id = submit(http, body(20000, "long-" + std::to_string(i) + run_id));
    auto res = http.post("/api/jobs/" + id + "/cancel", "{}");
    INFO(id << ": " << res.body);
    CHECK(res.status < 300);
    cancelled_at.insert(s.owner_of(id));
    cancelled.push_back(id);
  }
  CHECK(cancelled_at.size() >= 2);

  // kill -9 of c1 in the middle of the workload: submits through the
  // gateway succeed again after a short delay, keyed ones included.
  for (int i = 0; i < 12; ++i)
    jobs.push_back(submit(http, body(400, "")));
  s.nodes["c1"]->signal(SIGKILL);
  auto killed = std::chrono::steady_clock::now();
  int refused = 0;
  for (int i = 0; i < 30; ++i) {
    auto key = "after-" + std::to_string(i) + "-" + run_id;
    std::string id;
    REQUIRE(poll_until(
        [&] {
          auto res = http.post("/api/jobs", body(100, key));
          if (res.status == 202) {
            id = body_of(res)["job_id"].str();
            return true;
          }
          INFO(res.body);
          // A delay, never another answer: 503 while the partition has no
          // owner, 504 outcome_unknown for a submit its coordinator took to
          // its death (the same key finds out).
          CHECK((res.status == 503 || res.status == 504));
          ++refused;
          return false;
        },
        30s, 100ms));
    jobs.push_back(id);
  }
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - killed);
  std::cout << "share_gateway_test: 30 keyed submits through the gateway "
               "after the kill took "
            << took.count() << " ms (" << refused
            << " answered 503 and retried; lease TTL 2000 ms)\n";
  REQUIRE(poll_until([&] { return s.spread_over({"c2", "c3"}); }, 30s));
  // Every acknowledged job ends exactly once; the cancelled ones were
  // cancelled, not run to their end.
  c.check_all_done_once(jobs, 120s);

  // The gateway's queue figures are the survivors' added up (not one
  // coordinator's, in turn), and its tree holds both.
  auto completed_at = [&](const std::string& name) {
    auto [rc, out]
        = droverctl({"queues", "--port", s.admin.at(name), "--json"});
    INFO(out);
    REQUIRE(rc == 0);
    return parse_json(out)["completed_total"].num();
  };
  double via_gateway = -1, direct = -2;
  CHECK(poll_until(
      [&] {
        via_gateway
            = body_of(http.get("/api/admin/queues"))["completed_total"].num();
        direct = completed_at("c2") + completed_at("c3");
        return via_gateway == direct;
      },
      10s, 200ms));
  INFO("completed: " << via_gateway << " through the gateway, " << direct
                     << " at c2 and c3");
  CHECK(via_gateway == direct);
  CHECK(direct > 0);
  auto tree = body_of(http.get("/api/admin/tree"));
  CHECK(tree["name"].str() == "coordinators");
  CHECK(tree["children"].size() == 2);
  // The nodes view: every surviving coordinator's, each node entry naming
  // its coordinator (before: one coordinator's view in turn).
  std::map<std::string, std::set<std::string>> workers_at;
  CHECK(poll_until(
      [&] {
        auto res = http.get("/api/admin/nodes");
        if (res.status != 200)
          return false;
        workers_at.clear();
        for (const auto& n : body_of(res)["nodes"].items())
          if (n["role"].str() == "worker")
            workers_at[n["coordinator"].str()].insert(
                n["node"].str().substr(0, 2));
        return workers_at.size() == 2;
      },
      10s, 200ms));
  for (const auto* name : {"c2", "c3"})
    CHECK(workers_at["127.0.0.1:" + std::to_string(s.ports.at(name))]
          == std::set<std::string>{"w1", "w2"});
  auto flow = http.get("/api/admin/flow");
  INFO(flow.body);
  CHECK(flow.status == 200);
  CHECK(body_of(flow)["breakers"].is_array());
  constexpr int cancelled_kind = 11;
  for (const auto& id : cancelled) {
    auto conn = must(drover::pg::connection::open(c.url()));
    auto kinds = run(conn, "SELECT coalesce(string_agg(kind::text || '@' || "
                           "attempt::text, ',' ORDER BY seq), '') FROM "
                           "drover.events WHERE job_id = '"
                               + id + "'");
    INFO(id << " events (kind@attempt): " << kinds.value(0, 0));
    CHECK(c.events(id, completed_kind) == 0);
    CHECK(c.events(id, cancelled_kind) == 1);
  }
}

TEST_CASE("a sharing gateway with a paused coordinator in its list serves the "
          "others and stops at once",
          "[pg][cluster][process][share]") {
  // c3 accepts connections (the kernel does) but never answers CAF's
  // handshake: joining it must give up at its timeout and try again, and
  // never hold the gateway's stop.
  cluster c;
  sharing s{c};
  for (const auto* name : {"c1", "c2", "c3"})
    s.start(name, false, {"--gateway-join-secret", gateway_secret});
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2", "c3"}); }, 20s));
  s.nodes["c3"]->signal(SIGSTOP);
  process gw{
      gateway_argv(s.coordinator_list({"c1", "c2", "c3"}), gateway_secret),
      c.logs.path() + "/gw.log"};
  auto ready = gw.wait_for_line("node: ready", 30s);
  INFO(s.logs_of({"gw", "c1", "c2"}));
  REQUIRE(ready);
  REQUIRE(poll_until(
      [&] {
        return c.log_count("gw", "the gateway joined a coordinator") >= 2;
      },
      20s));
  // Its join of c3 timed out and is tried again (with backoff).
  auto c3 = "127.0.0.1:" + std::to_string(s.ports.at("c3"));
  REQUIRE(poll_until(
      [&] {
        return c.log_count("gw", "cannot join a coordinator; retrying with "
                                 "backoff coordinator="
                                     + c3)
               > 0;
      },
      30s));
  // Its merged views say they lack c3's part (before: the same answer as
  // a whole view).
  http_client http{http_port_of(*ready)};
  for (const auto* view : {"/api/admin/nodes", "/api/admin/flow"}) {
    auto res = http.get(view);
    INFO(view << ": " << res.body);
    REQUIRE(res.status == 200);
    auto unreached = body_of(res)["unreached_coordinators"];
    REQUIRE(unreached.size() == 1);
    CHECK(unreached[0].str() == c3);
  }
  auto metrics = http.get("/metrics");
  INFO(metrics.body);
  CHECK(metrics.body.find("\ndrover_gateway_unreached_coordinators 1\n")
        != std::string::npos);
  // droverctl in front of the three coordinators merges their nodes views
  // as the gateway does, and names the paused one (it accepts the
  // connection and never answers) under its table.
  std::string list;
  for (const auto& a : s.admin_addresses({"c1", "c2", "c3"}))
    list += (list.empty() ? "" : ",") + a;
  auto [ctl_rc, table]
      = droverctl({"nodes", "--nodes", list, "--timeout-ms", "2000"});
  INFO(table);
  CHECK(ctl_rc == 0);
  size_t gw_rows = 0;
  for (auto at = table.find("\ngw "); at != std::string::npos;
       at = table.find("\ngw ", at + 1))
    ++gw_rows;
  CHECK(gw_rows == 2); // the gateway, joined to c1 and to c2
  CHECK(table.find("\ncoordinators not reached (their nodes are missing "
                   "above): 127.0.0.1:"
                   + s.admin.at("c3") + "\n")
        != std::string::npos);
  // So does `queues`: the figures of c1 and c2 added up (each coordinator
  // has its own admission bound: the sum is the two), c3 named.
  auto [q_rc, q_text]
      = droverctl({"queues", "--nodes", list, "--timeout-ms", "2000"});
  INFO(q_text);
  CHECK(q_rc == 0);
  CHECK(q_text.find("\ncoordinators not reached (their figures are missing "
                    "above): 127.0.0.1:"
                    + s.admin.at("c3") + "\n")
        != std::string::npos);
  auto bound = [](const std::string& json) {
    return parse_json(json)["admission"]["queued_memory_limit_bytes"];
  };
  auto [q1_rc, q1]
      = droverctl({"queues", "--port", s.admin.at("c1"), "--json"});
  auto [q2_rc, q2]
      = droverctl({"queues", "--port", s.admin.at("c2"), "--json"});
  auto [qa_rc, qa] = droverctl(
      {"queues", "--nodes", list, "--timeout-ms", "2000", "--json"});
  INFO(q1 << q2 << qa);
  REQUIRE(q1_rc == 0);
  REQUIRE(q2_rc == 0);
  REQUIRE(qa_rc == 0);
  REQUIRE(bound(q1).is_number());
  CHECK(bound(qa).integer() == bound(q1).integer() + bound(q2).integer());
  auto missing = parse_json(qa)["unreached_coordinators"];
  REQUIRE(missing.size() == 1);
  CHECK(missing[0].str() == "127.0.0.1:" + s.admin.at("c3"));
  // And `tree`: c1's and c2's trees under one root, c3 named.
  auto [t_rc, tree]
      = droverctl({"tree", "--nodes", list, "--timeout-ms", "2000"});
  INFO(tree);
  CHECK(t_rc == 0);
  for (const auto* name : {"c1", "c2"})
    CHECK(tree.find("127.0.0.1:" + s.admin.at(name) + " ")
          != std::string::npos);
  CHECK(tree.find("\ncoordinators not reached (their trees are missing "
                  "above): 127.0.0.1:"
                  + s.admin.at("c3") + "\n")
        != std::string::npos);
  gw.signal(SIGTERM);
  auto st = gw.wait_exit(15s);
  s.nodes["c3"]->signal(SIGCONT);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("a progress stream through a sharing gateway follows its job to "
          "its partition's next owner after a kill -9",
          "[pg][cluster][process][share]") {
  // The stream is subscribed at the owner's progress publisher; when the
  // owner dies the router subscribes again at the coordinator that took
  // the partition and tells the stream to read the log: the progress bar
  // moves on and the stream ends with the job (it hung before, fed only
  // keep-alives).
  auto seed = std::random_device{}();
  std::cout << "share_gateway_test (stream): seed " << seed << "\n";
  std::mt19937 rng{seed};
  gateway_cluster g;
  auto& c = g.c;
  auto& s = g.s;
  INFO(s.logs_of({"gw", "c1", "c2", "c3", "w1", "w2"}));
  auto port = g.port;
  http_client http{port};

  // A job in c1's partitions: 16 s in 32 steps of progress.
  auto run_id = std::to_string(rng());
  std::string id;
  for (int i = 0; i < 60 && id.empty(); ++i) {
    auto got = submit_when_served(
        http, "{\"type\":\"sleep\",\"input\":{\"ms\":"
                  + std::to_string(16000 * time_scale())
                  + ",\"steps\":32},\"idempotency_key\":\"s" + std::to_string(i)
                  + "-" + run_id + "\"}");
    if (s.owner_of(got) == "c1")
      id = got;
  }
  REQUIRE(!id.empty());
  INFO("job " << id);
  stream_across stream{port, id};
  auto before = stream.first(30s);
  s.nodes["c1"]->signal(SIGKILL);
  // After the kill: progress again (from the new owner: c1 sent at most an
  // update or two past `before` before it died), then the end.
  auto rest = stream.rest(90s);
  std::cout << "share_gateway_test (stream): progress " << before
            << " % before the kill, live up to " << rest.live_top
            << " % after it\n";
  CHECK(rest.errors == 0);
  CHECK(rest.last == "completed");
  // Live progress after the kill, well past what the killed coordinator
  // could have sent (an update or two past `before`): from the new owner.
  CHECK(rest.live >= 2);
  CHECK(rest.live_top >= before + 20);
  c.check_all_done_once({id}, 60s);
}

TEST_CASE("a rate limit or breaker set at run time through a sharing gateway "
          "applies at every coordinator",
          "[pg][cluster][process][share][flow]") {
  // The setting's control-log entry is written by the owner of its key's
  // partition (the gateway routes it there); the other coordinators read
  // it from the log (--share-partitions: every second). Before, the
  // gateway sent it to the next coordinator in turn (refused `not_owner`
  // unless that one owned the key's partition), and only that coordinator
  // applied it until the others restarted.
  cluster c;
  sharing s{c};
  auto own = start_with_own_ports(s, {"--roles", "coordinator,gateway",
                                      "--gateway-join-secret", gateway_secret});
  process gw{
      gateway_argv(s.coordinator_list({"c1", "c2", "c3"}), gateway_secret),
      c.logs.path() + "/gw.log"};
  auto ready = gw.wait_for_line("node: ready", 30s);
  INFO(s.logs_of({"gw", "c1", "c2", "c3"}));
  REQUIRE(ready);
  http_client http{http_port_of(*ready)};
  REQUIRE(poll_until(
      [&] {
        return c.log_count("gw", "the gateway joined a coordinator") >= 3;
      },
      20s));

  // The first PUT waits (503) until the gateway's map names every owner;
  // each later one must be taken at once, by its key's partition's owner
  // (a gateway sending them to the coordinators in turn would be refused
  // not_owner by two of three).
  bool served = false;
  auto put = [&](const std::string& path, const std::string& spec) {
    http_response res;
    auto once = [&] {
      res = http.call(drover::testing::http_detail::bhttp::verb::put, path,
                      "{\"spec\":\"" + spec + "\"}",
                      {{"Content-Type", "application/json"}});
      return res.status != 503;
    };
    if (!served)
      CHECK(poll_until(once, 10s, 100ms));
    else
      once();
    served = true;
    INFO(path << " -> " << res.body);
    REQUIRE(res.status == 200);
  };
  // `field` of `key`'s entry in `list` of coordinator `name`'s own flow
  // view (-1: not there).
  auto seen = [&](const char* name, const std::string& list,
                  const std::string& key, const std::string& field) {
    auto res = own.at(name).get("/api/admin/flow");
    if (res.status != 200)
      return -1.0;
    for (const auto& x : body_of(res)[list].items())
      if (x["key"].str() == key)
        return x[field].num();
    return -1.0;
  };
  auto everywhere = [&](const std::string& list, const std::string& key,
                        const std::string& field, double value) {
    auto t0 = std::chrono::steady_clock::now();
    for (const auto* name : {"c1", "c2", "c3"}) {
      INFO(name << ": " << list << " " << key << "." << field << " = "
                << value);
      CHECK(poll_until([&] { return seen(name, list, key, field) == value; },
                       15s));
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - t0)
        .count();
  };
  // Keys in several partitions: a new limiter, changed; a new breaker.
  int64_t slowest = 0;
  for (const auto* key : {"mail", "sms", "push", "fax"}) {
    put(std::string{"/api/admin/rate-limits/"} + key, "rate=7,burst=3");
    slowest = std::max(slowest,
                       everywhere("rate_limits", key, "rate_per_second", 7));
    put(std::string{"/api/admin/rate-limits/"} + key, "rate=11,burst=3");
    slowest = std::max(slowest,
                       everywhere("rate_limits", key, "rate_per_second", 11));
    put(std::string{"/api/admin/breakers/"} + key, "failures=4,cooldown=10");
    slowest
        = std::max(slowest, everywhere("breakers", key, "failures_to_open", 4));
  }
  std::cout << "share_gateway_test: run-time settings through the gateway "
               "reached every coordinator within "
            << slowest << " ms (slowest of 12)\n";
  for (const auto* name : {"c1", "c2", "c3"})
    CHECK(c.log_count(name, "a run-time setting in the control log is skipped")
          == 0);
}

TEST_CASE("a breaker that opens at one sharing coordinator opens at the "
          "others within their settings poll",
          "[pg][cluster][process][share][flow]") {
  // Each coordinator keeps its own breakers (it dispatches its own
  // partitions' jobs); one that opens records it in the control log under
  // a partition it holds, and the others, reading the log every second,
  // open theirs, their cooldown counting from that opening. Before, the
  // others stayed closed (and only the owner of the key's partition could
  // record a change at all).
  cluster c;
  sharing s{c};
  auto own = start_with_own_ports(
      s, {"--roles", "coordinator,worker,gateway", "--slots", "cpu=2",
          "--exec-allow", "false", "--exec-allow", "true", "--circuit-breaker",
          "dl:failures=1,cooldown=300"});
  INFO(s.logs_of({"c1", "c2", "c3"}));
  auto field_at = [&](const char* name, const char* field) {
    auto res = own.at(name).get("/api/admin/flow");
    if (res.status == 200)
      for (const auto& x : body_of(res)["breakers"].items())
        if (x["key"].str() == "dl")
          return x[field];
    return json_value{};
  };
  auto state_at = [&](const char* name) {
    auto state = field_at(name, "state");
    return state.is_string() ? state.str() : std::string{};
  };
  for (const auto* name : {"c1", "c2", "c3"})
    REQUIRE(poll_until([&] { return state_at(name) == "closed"; }, 10s));
  // One failing job at c2's own port: it goes into c2's partitions and
  // runs on its slots.
  auto job = [](const char* program) {
    return std::string{R"({"type":"exec","input":{"argv":[")"} + program
           + R"("]},"breaker_key":"dl","max_attempts":1})";
  };
  auto failing = own.at("c2").post("/api/jobs", job("false"));
  INFO(failing.body);
  REQUIRE(failing.status == 202);
  REQUIRE(poll_until([&] { return state_at("c2") == "open"; }, 30s));
  auto opened = std::chrono::steady_clock::now();
  for (const auto* name : {"c1", "c3"}) {
    INFO(name);
    CHECK(poll_until([&] { return state_at(name) == "open"; }, 10s));
  }
  std::cout << "share_gateway_test: a breaker opened at c2 was open at c1 "
               "and c3 after "
            << std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - opened)
                   .count()
            << " ms\n";
  // Opened on its own failure at c2, following it at c1 and c3.
  CHECK(field_at("c2", "times_opened").num() == 1);
  CHECK(field_at("c2", "times_followed").num() == 0);
  for (const auto* name : {"c1", "c3"}) {
    INFO(name);
    CHECK(field_at(name, "times_opened").num() == 0);
    CHECK(field_at(name, "times_followed").num() == 1);
  }
  // Each one's opening is in the log, fenced by a partition it held.
  auto conn = must(drover::pg::connection::open(c.url()));
  auto nodes = run(conn, "SELECT string_agg(DISTINCT owner_node, ',') FROM "
                         "drover.control_log WHERE kind = 'breaker' AND key "
                         "= 'dl' AND state = 'open' AND epoch > 0");
  CHECK(std::string{nodes.value(0, 0)} == "c1,c2,c3");
  // A job of the breaker submitted at c1 waits behind it there.
  auto waiting = own.at("c1").post("/api/jobs", job("true"));
  REQUIRE(waiting.status == 202);
  auto id = body_of(waiting)["job_id"].str();
  std::string why;
  CHECK(poll_until(
      [&] {
        why = body_of(own.at("c1").get("/api/jobs/" + id))["waiting_for"].str();
        return why.rfind("its circuit breaker 'dl' is open", 0) == 0;
      },
      10s));
  INFO(why);
  CHECK(body_of(own.at("c1").get("/api/jobs/" + id))["status"].str()
        == "queued");
  // By now every coordinator has read the others' copies: none was followed
  // back (an echo would add openings at every poll).
  auto count = run(conn, "SELECT count(*) FROM drover.control_log WHERE kind "
                         "= 'breaker' AND key = 'dl' AND state = 'open'");
  CHECK(std::string{count.value(0, 0)} == "3");
}
