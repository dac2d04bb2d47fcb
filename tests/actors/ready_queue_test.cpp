#include "actors/detail/ready_queue.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

using drover::detail::ready_entry;
using drover::detail::ready_queue;

namespace {

ready_entry job(uint32_t tenant, int64_t key) {
  return {"j" + std::to_string(tenant) + "-" + std::to_string(key), key,
          tenant};
}

/// Tenants of the next `n` jobs taken.
std::vector<uint32_t> take(ready_queue& q, size_t n) {
  std::vector<uint32_t> out;
  for (size_t i = 0; i < n && !q.empty(); ++i)
    out.push_back(q.pop_front().tenant);
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
