// The client API (include/drover/client.hpp, docs/client.md) against real
// node processes: a wait that outlives its coordinator (kill -9, restart)
// delivers every audit event once and in order; a submission whose answer
// never comes (the node is SIGSTOPped) is outcome_unknown with its key, and
// sending it again with that key finds the one job; a cluster nobody
// answers for is unavailable, not a guess.

#include "drover/client.hpp"

#include "runtime/errors.hpp"
#include "support/cluster.hpp"
#include "support/process.hpp"
#include "support/time_scale.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <future>
#include <string>
#include <vector>

using namespace drover;
using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<client> client_for(uint16_t port,
                                   std::chrono::milliseconds timeout) {
  client_options o;
  o.nodes = {"127.0.0.1:" + std::to_string(port)};
  o.timeout = timeout;
  o.reconnect_max = 500ms;
  auto c = client::make(o);
  REQUIRE(c);
  return std::move(*c);
}

} // namespace

TEST_CASE("client: a wait outlives its coordinator's kill -9 and restart, "
          "and sees every event once, in order",
          "[client][cluster]") {
  cluster c;
  auto admin = free_port();
  std::vector<std::string> fixed{"--admin-port", std::to_string(admin)};
  c.start_coordinator(fixed);
  c.start_worker("w1", {"--slots", "cpu=1"});
  auto cl = client_for(admin, 60s);
  submit_request req;
  req.type = "sleep";
  req.input
      = "{\"ms\":" + std::to_string(4000 * time_scale()) + ",\"steps\":8}";
  auto sub = cl->submit(req);
  INFO((sub ? "" : describe(sub.error())));
  REQUIRE(sub);
  CHECK(sub->idempotency_key.rfind("drover-client-", 0) == 0);
  auto job = sub->job.job_id;
  std::vector<uint64_t> seen;
  auto waiter = std::async(std::launch::async, [&] {
    return cl->wait(job, 120s, {},
                    [&](const job_event& e) { seen.push_back(e.sequence); });
  });
  // Running on the worker, not only started on the coordinator: a lease
  // still on its way when the coordinator dies is lost with it, and the
  // job then rightly runs again (seen in CI, killed 19 ms after the start).
  REQUIRE(poll_until(
      [&] {
        auto j = cl->get(job);
        return j && j->progress > 0;
      },
      20s));
  c.coordinator->signal(SIGKILL);
  REQUIRE(c.coordinator->wait_exit(10s));
  c.start_coordinator(fixed); // same admin port, once the leases lapse
  REQUIRE(waiter.wait_for(scaled(60s)) == std::future_status::ready);
  auto done = waiter.get();
  INFO((done ? "" : describe(done.error())));
  REQUIRE(done);
  CHECK(done->status == job_status::completed);
  // The attempt ran on; its whole history arrived once, in order.
  CHECK(c.events(job, started_kind) == 1);
  auto total = scalar(c.url(), "SELECT count(*) FROM drover.events WHERE "
                               "job_id = '"
                                   + job + "'");
  REQUIRE(static_cast<int64_t>(seen.size()) == total);
  for (size_t i = 0; i < seen.size(); ++i)
    CHECK(seen[i] == i + 1);
  // A resumed watch gets only what came after the sequence it names.
  std::vector<uint64_t> rest;
  auto again = cl->wait(
      job, 10s, {}, [&](const job_event& e) { rest.push_back(e.sequence); },
      seen.size() - 2);
  REQUIRE(again);
  CHECK(rest == std::vector<uint64_t>{seen.size() - 1, seen.size()});
}

TEST_CASE(
    "client: an unanswered submission is outcome_unknown with its key, and "
    "sent again with it, it makes one job",
    "[client]") {
  auto port = free_port();
  process node{{DROVER_NODE_BIN, "--node-id", "paused", "--admin-port",
                std::to_string(port), "--http-port", "0"}};
  REQUIRE(node.wait_for_line("ready", 30s));
  auto cl = client_for(port, 2s);
  // Connected: an answer (not_found) proves it.
  auto none = cl->get("j0000000000000-0");
  REQUIRE_FALSE(none);
  CHECK(is(none.error(), errc::not_found));

  node.signal(SIGSTOP);
  submit_request req;
  req.type = "sleep";
  req.input = R"({"ms": 1})";
  auto lost = cl->submit(req);
  node.signal(SIGCONT);
  REQUIRE_FALSE(lost);
  INFO(describe(lost.error()));
  CHECK(is(lost.error(), errc::outcome_unknown));
  auto text = describe(lost.error());
  auto at = text.find("idempotency key '");
  REQUIRE(at != std::string::npos);
  auto key = text.substr(at + 17, text.find('\'', at + 17) - at - 17);
  CHECK(key.rfind("drover-client-", 0) == 0);

  auto cl2 = client_for(port, 30s);
  req.idempotency_key = key;
  auto first = cl2->submit(req);
  REQUIRE(first);
  auto second = cl2->submit(req);
  REQUIRE(second);
  CHECK(first->job.job_id == second->job.job_id);
  job_query q;
  q.limit = 10;
  auto page = cl2->list(q);
  REQUIRE(page);
  CHECK(page->jobs.size() == 1); // the paused submission, made once
  CHECK(page->next_cursor.empty());
  auto done = cl2->wait(first->job.job_id, 30s);
  REQUIRE(done);
  CHECK(done->status == job_status::completed);
  auto result = cl2->result(first->job.job_id);
  REQUIRE(result);
  CHECK(*result == R"({"slept_ms":1})");
  node.signal(SIGTERM);
  REQUIRE(node.wait_exit(30s));
}

TEST_CASE("client: no node answering is unavailable, and bad options are "
          "refused",
          "[client]") {
  auto cl = client_for(free_port(), 1500ms); // nobody listens there
  submit_request req;
  req.type = "sleep";
  auto start = std::chrono::steady_clock::now();
  auto r = cl->submit(req);
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::unavailable)); // never sent: nothing was made
  CHECK(std::chrono::steady_clock::now() - start < 10s);
  for (auto bad :
       {std::vector<std::string>{}, std::vector<std::string>{"localhost"},
        std::vector<std::string>{"localhost:0"},
        std::vector<std::string>{"localhost:http"},
        std::vector<std::string>{":7411"}}) {
    client_options o;
    o.nodes = bad;
    auto made = client::make(o);
    CHECK_FALSE(made);
    if (!made)
      CHECK(is(made.error(), errc::bad_config));
  }
}

TEST_CASE("client: a call made before its node listens is answered once the "
          "node is up, however short the reconnect delay",
          "[client]") {
  // A reconnect delay of 0 ms: the draw full jitter makes about once in a
  // hundred at the first retry. It once ended the call as "no node
  // answered" with nearly all of its time left (a wait lost across a
  // coordinator's restart in CI); only the deadline may end it.
  auto port = free_port();
  client_options o;
  o.nodes = {"127.0.0.1:" + std::to_string(port)};
  o.timeout = 60s;
  o.reconnect_initial = 0ms;
  o.reconnect_max = 0ms;
  auto made = client::make(o);
  REQUIRE(made);
  auto cl = std::move(*made);
  auto early = std::async(std::launch::async,
                          [&] { return cl->get("j0000000000000-0"); });
  process node{{DROVER_NODE_BIN, "--node-id", "late", "--admin-port",
                std::to_string(port), "--http-port", "0"}};
  REQUIRE(node.wait_for_line("ready", 30s));
  REQUIRE(early.wait_for(scaled(60s)) == std::future_status::ready);
  auto got = early.get();
  REQUIRE_FALSE(got);
  INFO(describe(got.error()));
  CHECK(is(got.error(), errc::not_found)); // answered by the node
  node.signal(SIGTERM);
  REQUIRE(node.wait_exit(30s));
}

TEST_CASE("client: a node over its bound on queued work answers overloaded, "
          "a definite refusal that created nothing, not outcome_unknown",
          "[client]") {
  auto port = free_port();
  process node{{DROVER_NODE_BIN, "--node-id", "full", "--admin-port",
                std::to_string(port), "--http-port", "0",
                "--admission-queue-memory-mb", "1"}};
  REQUIRE(node.wait_for_line("ready", 30s));
  auto cl = client_for(port, 1s);
  submit_request req;
  req.type = "sleep";
  req.input = R"({"ms": 0})";
  req.delay_ms = 3600 * 1000; // waits an hour: stays in the queue
  // 1 MiB holds 4,096 waiting jobs at 256 bytes: fill it 500 at a time.
  std::vector<submit_request> batch(500, req);
  size_t made = 0;
  caf::error refusal;
  for (int i = 0; i < 20 && !refusal; ++i) {
    auto res = cl->submit(batch);
    if (res)
      made += res->size();
    else
      refusal = std::move(res.error());
  }
  INFO(describe(refusal));
  CHECK(is(refusal, errc::overloaded));
  CHECK(describe(refusal).find("admission-queue-memory-mb")
        != std::string::npos);
  // The refused batch made nothing: exactly what was acknowledged exists.
  size_t listed = 0;
  job_query q;
  q.limit = 1000;
  for (;;) {
    auto page = cl->list(q);
    REQUIRE(page);
    listed += page->jobs.size();
    if (page->next_cursor.empty())
      break;
    q.after = page->next_cursor;
  }
  CHECK(listed == made);
  // Whole batches only; how many fit depends on the bytes of each item in
  // flight (the client adds an idempotency key to each): 6 or 7.
  CHECK(made % 500 == 0);
  CHECK(made >= 3000);
  CHECK(made <= 3500);
  node.signal(SIGTERM);
  REQUIRE(node.wait_exit(30s));
}
