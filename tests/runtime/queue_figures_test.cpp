// Queue figures of several coordinators added up (add_figures,
// runtime/job_api.hpp): what a gateway node in front of coordinators that
// share the partitions answers for the queues view and /metrics.

#include "runtime/job_api.hpp"

#include <catch2/catch.hpp>

using namespace drover;

namespace {

type_figures type_of(const std::string& cls, const std::string& type,
                     uint64_t completed, double mean_run_ms) {
  type_figures t;
  t.resource_class = cls;
  t.job_type = type;
  t.ready = 2;
  t.running = 1;
  t.oldest_age_ms = static_cast<int64_t>(completed);
  t.completed = completed;
  t.mean_run_ms = mean_run_ms;
  t.arrivals_per_second = 1.5;
  t.recommended_slots = 3;
  return t;
}

} // namespace

TEST_CASE("the figures of several coordinators add up", "[figures]") {
  queue_stats a;
  a.depth = {1, 2, 3};
  a.oldest_age_ms = {100, 0, 50};
  a.dispatched = {10, 20, 30};
  a.completed = 7;
  a.failed = 1;
  a.idle_workers = 4;
  a.since_ms = 2000;
  a.admission_memory_limit_bytes = 1000;
  a.start_latency.observe(3);
  a.start_latency.observe(700);
  a.by_type
      = {type_of("cpu", "export", 10, 100), type_of("cpu", "sleep", 0, 0)};
  a.by_partition = {{3, 5, 1}, {9, 1, 0}};

  queue_stats b;
  b.depth = {4, 0, 1};
  b.oldest_age_ms = {20, 300, 0};
  b.dispatched = {1, 1, 1};
  b.completed = 5;
  b.idle_workers = 2;
  b.since_ms = 1000;
  b.admission_memory_limit_bytes = 500;
  b.start_latency.observe(700);
  b.by_type
      = {type_of("cpu", "export", 30, 200), type_of("gpu", "render", 1, 50)};
  b.by_partition = {{1, 2, 2}, {9, 3, 1}};

  add_figures(a, b);
  CHECK(a.depth == std::array<uint64_t, 3>{5, 2, 4});
  CHECK(a.oldest_age_ms == std::array<int64_t, 3>{100, 300, 50});
  CHECK(a.dispatched == std::array<uint64_t, 3>{11, 21, 31});
  CHECK(a.completed == 12);
  CHECK(a.failed == 1);
  CHECK(a.idle_workers == 6);
  CHECK(a.since_ms == 1000); // the older start
  CHECK(a.admission_memory_limit_bytes == 1500);
  CHECK(a.start_latency.count() == 3);
  CHECK(a.start_latency.sum_ms == 1403);

  REQUIRE(a.by_type.size() == 3);
  const auto& exp = a.by_type[0];
  CHECK(exp.job_type == "export");
  CHECK(exp.completed == 40);
  CHECK(exp.ready == 4);
  CHECK(exp.oldest_age_ms == 30);
  CHECK(exp.arrivals_per_second == Approx(3.0));
  CHECK(exp.recommended_slots == 6);
  // Weighted by completions: (10 x 100 + 30 x 200) / 40.
  CHECK(exp.mean_run_ms == Approx(175.0));
  CHECK(a.by_type[1].job_type == "sleep");
  CHECK(a.by_type[2].resource_class == "gpu");

  REQUIRE(a.by_partition.size() == 3);
  CHECK(a.by_partition[0].partition == 1);
  CHECK(a.by_partition[1].partition == 3);
  CHECK(a.by_partition[2].partition == 9);
  CHECK(a.by_partition[2].waiting == 4);
  CHECK(a.by_partition[2].running == 1);
}

TEST_CASE("adding empty figures changes nothing", "[figures]") {
  queue_stats a;
  a.depth = {1, 2, 3};
  a.since_ms = 5;
  a.run_time.observe(40);
  a.by_partition = {{2, 1, 1}};
  auto before = a;
  add_figures(a, queue_stats{});
  CHECK(a == before);
}
