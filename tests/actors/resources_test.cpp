// Routing by resources on one node (runtime/resources.hpp, issue 15 item
// 5): the pools of the node's workers bound what runs at once, a large job
// is not starved by smaller ones, jobs needing none of a pool still start,
// and a job no worker could ever run says why.

#include "actors/lifecycle_fixture.hpp"

#include "runtime/scaling.hpp"

#include <cmath>
#include <tuple>

using namespace drover::testing::lifecycle;

namespace {

/// A "blocker" job (its body runs when the test says) needing `pools`
/// ("" = none) beside one cpu slot.
submit_request needing(const std::string& input,
                       std::vector<resource_request> pools) {
  submit_request r;
  r.type = "blocker";
  r.input = "\"" + input + "\"";
  if (!pools.empty()) {
    r.resources = {{"cpu", 1}};
    r.resources.insert(r.resources.end(), pools.begin(), pools.end());
  }
  return r;
}

std::function<void(queue_options&)> pools(std::map<std::string, uint32_t> p) {
  return [p](queue_options& q) { q.local_resources = p; };
}

} // namespace

TEST_CASE("resources: a pool bounds the jobs that draw from it, and jobs "
          "needing none of it still start",
          "[lifecycle][resources]") {
  fixture fx{{{"cpu", 4}}, 10s, pools({{"memory_gb", 4}})};
  for (auto name : {"m0", "m1", "m2"}) {
    fx.submit(needing(name, {{"memory_gb", 2}}));
    fx.advance(1ms);
  }
  fx.submit(needing("plain", {}));
  // Two of 2 GB fill the 4 GB; the third waits; the plain job takes a slot.
  REQUIRE(fx.exec->bodies.size() == 3);
  auto flow = fx.ask<std::string>(fx.handles->queue(), flow_atom::value);
  REQUIRE(flow);
  CHECK(
      flow->find(R"("resource_pools":{"":{"memory_gb":{"total":4,"used":4}}})")
      != std::string::npos);
  while (fx.exec->bodies.size() > 0 && fx.j->ran.size() < 3)
    fx.run_body();
  CHECK(fx.j->ran == std::vector<std::string>{"\"m0\"", "\"m1\"", "\"plain\""});
  // m0's outcome gave its 2 GB back: m2 ran.
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.run_body();
  CHECK(fx.j->ran.back() == "\"m2\"");
  auto s = fx.stats();
  CHECK(s.running == 0);
}

TEST_CASE("resources: the oldest job that does not fit reserves what it "
          "lacks, so smaller jobs do not starve it",
          "[lifecycle][resources]") {
  fixture fx{{{"cpu", 4}}, 10s, pools({{"memory_gb", 4}})};
  // One ms apart: the order of their ready times is the order of age.
  for (auto [name, pool, amount] :
       {std::tuple{"small1", "memory_gb", 2},
        {"small2", "memory_gb", 2},
        {"big", "memory_gb", 4},
        {"small3", "memory_gb", 2},
        {"other", "licenses", 1}}) { // no such pool: never here
    fx.submit(needing(name, {{pool, static_cast<uint32_t>(amount)}}));
    fx.advance(1ms);
  }
  REQUIRE(fx.exec->bodies.size() == 2);
  fx.run_body(); // small1 ends: 2 GB free, but big waits for 4 and small3
                 // must not take them
  CHECK(fx.exec->bodies.size() == 1);
  fx.run_body(); // small2 ends: big runs
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.run_body();
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.run_body();
  CHECK(fx.j->ran
        == std::vector<std::string>{"\"small1\"", "\"small2\"", "\"big\"",
                                    "\"small3\""});
  // The job needing a pool this node lacks waits, and says why.
  CHECK(fx.stats().depth[1] == 1);
  auto spec_of = [](std::vector<resource_request> pools) {
    job_spec spec;
    spec.type = "blocker";
    spec.resources = {{"cpu", 1}};
    spec.resources.insert(spec.resources.end(), pools.begin(), pools.end());
    return spec;
  };
  auto why = fx.ask<std::string>(fx.handles->queue(), nodes_atom::value,
                                 spec_of({{"licenses", 1}}));
  REQUIRE(why);
  CHECK(why->find("lacks licenses=1 (it has 0)") != std::string::npos);
  auto fits = fx.ask<std::string>(fx.handles->queue(), nodes_atom::value,
                                  spec_of({{"memory_gb", 4}}));
  REQUIRE(fits);
  CHECK(fits->empty());
  auto listing = fx.ask<std::string>(fx.handles->queue(), nodes_atom::value);
  REQUIRE(listing);
  CHECK(listing->find("\"resources\":\"licenses=1\"") != std::string::npos);
}

TEST_CASE("resources: a cancelled waiting job leaves no lane behind and a "
          "pool is given back when an attempt fails",
          "[lifecycle][resources]") {
  fixture fx{{{"cpu", 2}}, 10s, pools({{"memory_gb", 2}})};
  auto first = fx.submit(needing("first", {{"memory_gb", 2}}));
  auto waiting = fx.submit(needing("waiting", {{"memory_gb", 2}}));
  REQUIRE(fx.exec->bodies.size() == 1);
  REQUIRE_FALSE(fx.cancel(waiting.job_id));
  CHECK(fx.get(waiting.job_id).status == job_status::cancelled);
  // The running one is cancelled too: its body sees the flag, and its
  // 2 GB come back for the next job.
  REQUIRE_FALSE(fx.cancel(first.job_id));
  fx.run_body();
  fx.advance(1s);
  CHECK(fx.get(first.job_id).status == job_status::cancelled);
  fx.submit(needing("next", {{"memory_gb", 2}}));
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.run_body();
  CHECK(fx.j->ran.back() == "\"next\"");
}

TEST_CASE("resources: an attempt given up on keeps its amounts while its "
          "handler still runs",
          "[lifecycle][resources]") {
  fixture fx{{{"cpu", 2}}, 10s, pools({{"memory_gb", 4}})};
  auto stuck = needing("stuck", {{"memory_gb", 4}});
  stuck.timeout_ms = 1000;
  stuck.max_attempts = 1;
  auto first = fx.submit(stuck);
  fx.advance(1ms);
  fx.submit(needing("next", {{"memory_gb", 4}}));
  REQUIRE(fx.exec->bodies.size() == 1); // the stuck one's body never runs yet
  // Past its timeout and the cancel grace: the attempt is given up (the job
  // fails), but its handler has not returned: the 4 GB stay taken.
  for (int i = 0; i < 5; ++i)
    fx.advance(1s);
  CHECK(fx.get(first.job_id).status == job_status::failed);
  CHECK(fx.exec->bodies.size() == 1);
  // The handler returns: the worker offers itself, the amounts come back.
  fx.run_body();
  REQUIRE(fx.exec->bodies.size() == 1);
  fx.run_body();
  CHECK(fx.j->ran.back() == "\"next\"");
}

TEST_CASE("resources: cancelling the job that reserved a pool lets the "
          "jobs it held back start",
          "[lifecycle][resources]") {
  fixture fx{{{"cpu", 3}}, 10s, pools({{"memory_gb", 8}})};
  fx.submit(needing("running", {{"memory_gb", 4}}));
  fx.advance(1ms);
  auto big = fx.submit(needing("big", {{"memory_gb", 8}}));
  fx.advance(1ms);
  fx.submit(needing("small", {{"memory_gb", 2}}));
  REQUIRE(fx.exec->bodies.size() == 1); // big reserves; small waits
  REQUIRE_FALSE(fx.cancel(big.job_id));
  CHECK(fx.exec->bodies.size() == 2); // small starts at once
  while (fx.run_body()) {
  }
  CHECK(fx.j->ran == std::vector<std::string>{"\"running\"", "\"small\""});
}

TEST_CASE("scaling signals: arrival and completion rates, run time and "
          "recommended slots per type",
          "[lifecycle][scaling]") {
  fixture fx{{{"cpu", 1}}};
  for (int i = 0; i < 120; ++i)
    fx.submit(needing("j" + std::to_string(i), {}));
  // One attempt of 2 s ends.
  fx.advance(2s);
  REQUIRE(fx.run_body());
  auto figs = fx.stats().by_type;
  REQUIRE(figs.size() == 1);
  auto& f = figs[0];
  CHECK(f.job_type == "blocker");
  CHECK(f.mean_run_ms == Approx(2000));
  // 120 arrivals read as 2/s, decayed over the 2 s since.
  CHECK(f.arrivals_per_second == Approx(2 * std::exp(-2.0 / 60)).epsilon(0.01));
  CHECK(f.completions_per_second == Approx(1.0 / 60).epsilon(0.01));
  CHECK(f.ready == 118);
  CHECK(f.running == 1);
  // 1.25 * 1.93/s * 2 s + 118 * 2 s / 60 s = 4.8 + 3.9: 9 slots.
  CHECK(f.recommended_slots == 9);
}
