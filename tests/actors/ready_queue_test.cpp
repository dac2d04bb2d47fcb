#include "actors/detail/ready_queue.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

using drover::detail::ready_entry;
using drover::detail::ready_queue;

namespace {

ready_entry job(uint32_t tenant, int64_t key) {
  ready_entry e;
  e.job_id = "j" + std::to_string(tenant) + "-" + std::to_string(key);
  e.key = key;
  e.tenant = tenant;
  return e;
}

/// Tenants of the next `n` jobs taken.
std::vector<uint32_t> take(ready_queue& q, size_t n) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < n && !q.empty(); ++i)
    out.push_back(q.pop_front().tenant);
  return out;
}

/// $DROVER_TEST_SEED (to replay a run) or a random one; the caller
/// prints it.
uint64_t test_seed() {
  if (const char* env = std::getenv("DROVER_TEST_SEED"); env && *env)
    return std::strtoull(env, nullptr, 10);
  return std::random_device{}();
}

/// `n` jobs of `tenants` tenants, keys with many repeats (jobs submitted in
/// the same millisecond), numbered in the order they will be inserted: the
/// id is that number, so equal keys can be told apart.
std::vector<ready_entry> shuffled_jobs(std::mt19937_64& rng, size_t n,
                                       uint32_t tenants) {
  std::uniform_int_distribution<int64_t> key{0, static_cast<int64_t>(n / 4)};
  std::uniform_int_distribution<uint32_t> tenant{1, tenants};
  std::vector<ready_entry> out;
  for (size_t i = 0; i < n; ++i) {
    ready_entry e;
    e.job_id = std::to_string(i);
    e.key = key(rng);
    e.tenant = tenant(rng);
    out.push_back(std::move(e));
  }
  return out;
}

/// Ids of `jobs` in the order a FIFO by key takes them: by key, equal keys
/// in the order they were inserted (their ids count up).
std::vector<std::string> by_key_then_arrival(std::vector<ready_entry> jobs) {
  std::stable_sort(
      jobs.begin(), jobs.end(),
      [](const ready_entry& x, const ready_entry& y) { return x.key < y.key; });
  std::vector<std::string> out;
  for (auto& e : jobs)
    out.push_back(e.job_id);
  return out;
}

} // namespace

TEST_CASE("ready queue: one tenant is a FIFO by key, a recovered job goes "
          "where its age puts it",
          "[ready_queue]") {
  ready_queue q;
  q.insert(job(1, 10), 1);
  q.insert(job(1, 30), 1);
  q.insert(job(1, 20), 1); // older: recovered
  CHECK(q.size() == 3);
  CHECK(q.oldest_key() == 10);
  CHECK(q.front().key == 10);
  CHECK(q.pop_front().key == 10);
  CHECK(q.pop_front().key == 20);
  CHECK(q.pop_front().key == 30);
  CHECK(q.empty());
}

TEST_CASE("ready queue: a tenant with a 100:1 backlog does not starve the "
          "other, and weights set the shares",
          "[ready_queue]") {
  ready_queue q;
  for (int i = 0; i < 100; ++i)
    q.insert(job(1, i), 1); // tenant 1 submitted a big batch first
  for (int i = 0; i < 10; ++i)
    q.insert(job(2, 1000 + i), 1);
  // Equal weights: they alternate while both have jobs.
  auto first = take(q, 20);
  std::map<uint32_t, int> n;
  for (auto t : first)
    ++n[t];
  CHECK(n[1] == 10);
  CHECK(n[2] == 10);
  CHECK(take(q, 90) == std::vector<uint32_t>(90, 1));

  // Weights 3:1: three jobs of tenant 3 for each of tenant 4, within one.
  ready_queue w;
  for (int i = 0; i < 100; ++i) {
    w.insert(job(3, i), 3);
    w.insert(job(4, i), 1);
  }
  n.clear();
  for (size_t k = 1; k <= 80; ++k) {
    ++n[w.pop_front().tenant];
    CHECK(std::abs(n[3] - 3 * n[4]) <= 3);
  }
  CHECK(std::abs(n[3] - 60) <= 1);
  CHECK(n[3] + n[4] == 80);
}

TEST_CASE("ready queue: idle time earns no credit, and erase keeps the order",
          "[ready_queue]") {
  ready_queue q;
  for (int i = 0; i < 60; ++i)
    q.insert(job(1, i), 1);
  take(q, 50); // tenant 2 had nothing ready meanwhile
  for (int i = 0; i < 10; ++i)
    q.insert(job(2, 100 + i), 1);
  // Tenant 2 starts where tenant 1 is: they alternate, no burst of 2s.
  auto next = take(q, 4);
  CHECK(std::count(next.begin(), next.end(), 2u) == 2);

  ready_queue e;
  e.insert(job(1, 1), 1);
  e.insert(job(2, 2), 1);
  e.insert(job(1, 3), 1);
  ready_entry out;
  CHECK(e.erase("j1-1", out));
  CHECK(out.key == 1);
  CHECK_FALSE(e.erase("j1-1", out));
  CHECK(e.oldest_key() == 2);
  CHECK(e.size() == 2);
  CHECK(e.erase("j2-2", out));
  CHECK(e.pop_front().job_id == "j1-3");
  CHECK(e.empty());
}

TEST_CASE("ready queue: a tenant that keeps one job ready at every turn is "
          "held to its weight",
          "[ready_queue]") {
  ready_queue q;
  for (int i = 0; i < 1000; ++i)
    q.insert(job(1, i), 1);
  // Tenant 2 weighs 0.1 and submits its next job whenever one is taken,
  // so its FIFO empties at every turn.
  int key = 5000;
  q.insert(job(2, key++), 0.1);
  int twos = 0;
  for (int i = 0; i < 220; ++i) {
    if (q.pop_front().tenant == 2) {
      ++twos;
      q.insert(job(2, key++), 0.1);
    }
  }
  // One in eleven: 20 of 220, within one.
  CHECK(twos >= 19);
  CHECK(twos <= 21);
}

TEST_CASE("ready queue: jobs inserted in any key order come out by key, "
          "equal keys in arrival order",
          "[ready_queue]") {
  auto seed = test_seed();
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  // A partition recovered after another: keys all over the range.
  for (int round = 0; round < 20; ++round) {
    auto jobs = shuffled_jobs(rng, 5000, 1);
    auto expected = by_key_then_arrival(jobs);
    ready_queue q;
    for (auto& e : jobs)
      q.insert(e, 1);
    REQUIRE(q.size() == jobs.size());
    CHECK(q.oldest_key() == q.front().key);
    std::vector<std::string> taken;
    bool heads_agree = true; // front, oldest_key and pop_front
    while (!q.empty()) {
      auto head_key = q.front().key;
      heads_agree = heads_agree && q.oldest_key() == head_key;
      auto e = q.pop_front();
      heads_agree = heads_agree && e.key == head_key;
      taken.push_back(e.job_id);
    }
    CHECK(heads_agree);
    REQUIRE(taken == expected);
  }
}

TEST_CASE("ready queue: with several tenants, each tenant's jobs come out by "
          "key whatever the insert order, and extract_if and erase keep it",
          "[ready_queue]") {
  auto seed = test_seed();
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  std::mt19937_64 rng{seed};
  auto jobs = shuffled_jobs(rng, 20000, 5);
  ready_queue q;
  for (auto& e : jobs)
    q.insert(e, static_cast<double>(e.tenant)); // weights 1 to 5
  // A partition leaves (every third job), and a few jobs are cancelled.
  auto leaving
      = [](const ready_entry& e) { return std::stoul(e.job_id) % 3 == 0; };
  std::vector<ready_entry> left;
  q.extract_if(leaving, left);
  CHECK(left.size() == (jobs.size() + 2) / 3);
  CHECK(std::all_of(left.begin(), left.end(), leaving));
  std::vector<ready_entry> stay;
  for (auto& e : jobs)
    if (!leaving(e))
      stay.push_back(e);
  std::shuffle(stay.begin(), stay.end(), rng);
  ready_entry out;
  for (size_t i = 0; i < 100; ++i)
    REQUIRE(q.erase(stay[i].job_id, out));
  stay.erase(stay.begin(), stay.begin() + 100);
  std::sort(stay.begin(), stay.end(), [](const auto& x, const auto& y) {
    return std::stoul(x.job_id) < std::stoul(y.job_id); // arrival order
  });
  REQUIRE(q.size() == stay.size());
  std::map<uint32_t, std::vector<ready_entry>> expected_of;
  for (auto& e : stay)
    expected_of[e.tenant].push_back(e);
  std::map<uint32_t, std::vector<std::string>> taken;
  while (!q.empty()) {
    auto e = q.pop_front();
    taken[e.tenant].push_back(e.job_id);
  }
  for (auto& [tenant, expected] : expected_of) {
    INFO("tenant " << tenant);
    CHECK(taken[tenant] == by_key_then_arrival(expected));
  }
}
