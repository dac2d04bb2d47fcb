// The client API (include/drover/client.hpp) in front of coordinators that
// share the partitions (--share-partitions): given every coordinator's
// admin port, it sends each keyed submission, each cancel and each wait to
// the owner of the job's partition (client/routes.hpp), splits a batch by
// owner, and follows a kill -9 of a coordinator by itself: a short delay,
// never an error, and never a second job for a key. Real processes on
// loopback, a real PostgreSQL.

#include "drover/client.hpp"

#include "runtime/errors.hpp"
#include "runtime/model.hpp"
#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <csignal>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace drover;
using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

namespace {

submit_request sleep_job(int ms, const std::string& key) {
  submit_request r;
  r.type = "sleep";
  r.input = "{\"ms\":" + std::to_string(ms * time_scale()) + ",\"steps\":4}";
  r.idempotency_key = key;
  return r;
}

} // namespace

TEST_CASE("client: with sharing coordinators each write goes to its "
          "partition's owner and a kill -9 is a short delay",
          "[pg][cluster][process][share][client]") {
  auto seed = std::random_device{}();
  std::cout << "share_client_test: seed " << seed << "\n";
  std::mt19937 rng{seed};
  auto run_id = std::to_string(rng());
  cluster c;
  sharing s{c};
  s.start_three();
  auto cl = s.client_of({"c1", "c2", "c3"});
  INFO(s.logs_of({"c1", "c2", "c3"}));

  // Keyed submissions land in their key's partition, whoever owns it:
  // each coordinator gets some, none is refused.
  std::vector<std::string> done_jobs;
  std::set<std::string> owners;
  // 24 at least; more while some coordinator got none (random keys miss
  // one of three once in ~500 runs of 24, never in practice by 80).
  for (int i = 0; i < 80 && (i < 24 || owners.size() < 3); ++i) {
    auto sub = cl->submit(sleep_job(50, run_id + "-one-" + std::to_string(i)));
    INFO((sub ? "" : describe(sub.error())));
    REQUIRE(sub);
    done_jobs.push_back(sub->job.job_id);
    owners.insert(s.owner_of(sub->job.job_id));
  }
  CHECK(owners == std::set<std::string>{"c1", "c2", "c3"});
  // The same key again finds the same job, through whichever owner.
  auto again = cl->submit(sleep_job(50, run_id + "-one-0"));
  REQUIRE(again);
  CHECK(again->job.job_id == done_jobs.front());

  // A batch is split by owner: one record per item, in order, none
  // refused.
  std::vector<submit_request> batch;
  for (int i = 0; i < 48; ++i)
    batch.push_back(sleep_job(50, run_id + "-batch-" + std::to_string(i)));
  auto subs = cl->submit(batch);
  INFO((subs ? "" : describe(subs.error())));
  REQUIRE(subs);
  REQUIRE(subs->size() == batch.size());
  std::set<std::string> batch_owners;
  for (size_t i = 0; i < subs->size(); ++i) {
    INFO(i << ": " << (*subs)[i].job.error.code << " "
           << (*subs)[i].job.error.message);
    REQUIRE_FALSE((*subs)[i].job.job_id.empty());
    CHECK((*subs)[i].idempotency_key == batch[i].idempotency_key);
    batch_owners.insert(s.owner_of((*subs)[i].job.job_id));
    done_jobs.push_back((*subs)[i].job.job_id);
  }
  CHECK(batch_owners.size() == 3);

  // Cancels go to the owner (another coordinator refuses them).
  std::vector<std::string> long_jobs;
  for (int i = 0; i < 6; ++i) {
    auto sub
        = cl->submit(sleep_job(60000, run_id + "-long-" + std::to_string(i)));
    REQUIRE(sub);
    long_jobs.push_back(sub->job.job_id);
  }
  for (const auto& id : long_jobs) {
    auto r = cl->cancel(id, "share_client_test");
    INFO(id << ": " << (r ? "" : describe(r.error())));
    REQUIRE(r);
    auto end = cl->wait(id, 30s);
    REQUIRE(end);
    CHECK(end->status == job_status::cancelled);
  }

  // droverctl --nodes does the same for one command: keyed submits and
  // cancels reach their owners.
  std::string nodes;
  for (const auto& a : s.admin_addresses({"c1", "c2", "c3"}))
    nodes += (nodes.empty() ? "" : ",") + a;
  std::set<std::string> ctl_owners;
  for (int i = 0; i < 40 && (i < 6 || ctl_owners.size() < 3); ++i) {
    auto [rc, out] = droverctl(
        {"submit", "sleep", "--nodes", nodes, "--input",
         "{\"ms\":" + std::to_string(60000 * time_scale()) + "}",
         "--idempotency-key", run_id + "-ctl-" + std::to_string(i)});
    INFO(out);
    REQUIRE(rc == 0);
    auto id = job_id_of(out);
    ctl_owners.insert(s.owner_of(id));
    auto [crc, cout_] = droverctl({"cancel", id, "--nodes", nodes, "--json"});
    INFO(cout_);
    CHECK(crc == 0);
    auto end = cl->wait(id, 30s);
    REQUIRE(end);
    CHECK(end->status == job_status::cancelled);
    long_jobs.push_back(id);
  }
  CHECK(ctl_owners.size() == 3);
  {
    auto [rc, out] = droverctl({"get", "x", "--nodes", nodes, "--port", "1"});
    CHECK(rc == 2); // --nodes replaces --host and --port
  }

  // c2 dies: its keys' submissions wait for the survivors' takeover
  // (unavailable, not_owner: retried, then routed again), none fails.
  s.nodes["c2"]->signal(SIGKILL);
  for (int i = 0; i < 12; ++i) {
    auto sub
        = cl->submit(sleep_job(50, run_id + "-after-" + std::to_string(i)));
    INFO(i << ": " << (sub ? "" : describe(sub.error())));
    REQUIRE(sub);
    done_jobs.push_back(sub->job.job_id);
  }
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c3"}); }, 30s));
  c.check_all_done_once(done_jobs, 90s);
  // One job per key: nothing the client did not see acknowledged.
  CHECK(scalar(c.url(), "SELECT count(*) FROM drover.jobs")
        == static_cast<int64_t>(done_jobs.size() + long_jobs.size()));
}

TEST_CASE("client: a wait follows its job to the coordinator its partition "
          "is handed to when another joins",
          "[pg][cluster][process][share][client]") {
  auto seed = std::random_device{}();
  std::cout << "share_client_test (hand-off): seed " << seed << "\n";
  std::mt19937 rng{seed};
  auto run_id = std::to_string(rng());
  cluster c;
  sharing s{c};
  s.start("c1");
  s.start("c2");
  INFO(s.logs_of({"c1", "c2"}));
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2"}); }, 20s));
  // The client knows c3's address before c3 runs: its map (read at the
  // first keyed submit) has c1 and c2 own everything.
  auto c3_admin = free_port();
  drover::client_options o;
  o.nodes = s.admin_addresses({"c1", "c2"});
  o.nodes.push_back("127.0.0.1:" + std::to_string(c3_admin));
  o.timeout = 30s;
  o.reconnect_max = 500ms;
  auto made = drover::client::make(o);
  REQUIRE(made);
  auto& cl = *made;
  std::vector<std::string> jobs;
  for (int i = 0; i < 24; ++i) {
    // Long enough to run on c3 after the wait noticed the move (it asks
    // every third quiet second).
    auto req = sleep_job(8000, run_id + "-moved-" + std::to_string(i));
    req.input
        = "{\"ms\":" + std::to_string(8000 * time_scale()) + ",\"steps\":40}";
    auto sub = cl->submit(req);
    INFO((sub ? "" : describe(sub.error())));
    REQUIRE(sub);
    jobs.push_back(sub->job.job_id);
  }
  // c3 joins and takes its share by hand-off.
  s.start("c3", true, {"--admin-port", std::to_string(c3_admin)});
  INFO(s.logs_of({"c1", "c2", "c3"}));
  REQUIRE(poll_until([&] { return s.spread_over({"c1", "c2", "c3"}); }, 20s));
  // A job of c3's share that has not ended: the client's map still names
  // its old owner. (24 jobs miss c3's third of the partitions once in
  // ~14,000 runs.)
  std::string moved;
  for (const auto& j : jobs)
    if (s.owner_of(j) == "c3"
        && scalar(c.url(), "SELECT count(*) FROM drover.jobs WHERE job_id = '"
                               + j + "' AND final_status IS NULL")
               == 1) {
      moved = j;
      break;
    }
  REQUIRE_FALSE(moved.empty());
  // Its live progress comes from c3 once the wait found the move: the
  // progress of the attempt that completed there. (c1 or c2 may publish
  // some of the attempt it abandoned, whose handler runs on a while.)
  std::map<uint32_t, int> progress; // per attempt
  auto end = cl->wait(moved, 60s,
                      [&](const progress_update& u) { ++progress[u.attempt]; });
  INFO((end ? "" : describe(end.error())));
  REQUIRE(end);
  CHECK(end->status == job_status::completed);
  std::string seen;
  for (const auto& [attempt, n] : progress)
    seen += "attempt " + std::to_string(attempt) + ": " + std::to_string(n)
            + " progress updates; ";
  INFO(seen << "completed by attempt " << end->attempt);
  CHECK(progress[end->attempt] > 0);
  c.check_all_done_once(jobs, 60s);
}
