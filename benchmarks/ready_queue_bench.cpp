// drover_bench_ready_queue: the cost of a ready queue insert when jobs
// arrive out of key order (a coordinator recovering partitions it took,
// docs/benchmarks.md "three coordinators sharing the partitions") against
// the same jobs arriving in key order (new submissions, or one partition
// recovered alone), in the same run.
//
//   drover_bench_ready_queue [--jobs 300000] [--tenants 1] [--rounds 3]
//
// Each round fills a fresh ready queue with --jobs entries (ids the size of
// the generator's, keys in milliseconds with a few repeats) once in key
// order and once shuffled, then takes them all (pop_front). The figures
// are the medians over the rounds; "shuffled_vs_in_order" is the ratio of
// the two insert rates (1 = an out-of-order insert costs no more), and
// the heap the full queue held per job (glibc mallinfo2; the ids fit the
// string's small buffer, so that is the structure's own cost). A queue
// whose out-of-order insert is O(n) shows a ratio that falls as --jobs
// grows; an O(log n) one stays within a small factor.
//
// One JSON line.

#include "actors/detail/ready_queue.hpp"

#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using drover::detail::ready_entry;
using drover::detail::ready_queue;
using steady = std::chrono::steady_clock;

struct options {
  size_t jobs = 300000;
  uint32_t tenants = 1;
  int rounds = 3;
};

double seconds_since(steady::time_point t0) {
  return std::chrono::duration<double>(steady::now() - t0).count();
}

double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 == 1 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

/// Heap in use (glibc, every arena), bytes.
double heap_bytes() {
  auto m = mallinfo2();
  return static_cast<double>(m.uordblks + m.hblkhd);
}

/// Inserts then takes `jobs` in their order: (inserts/s, pops/s); the heap
/// the full queue held, per job, into `bytes_per_job`.
std::pair<double, double> fill_and_drain(const std::vector<ready_entry>& jobs,
                                         double& bytes_per_job) {
  auto heap0 = heap_bytes();
  ready_queue q;
  auto t0 = steady::now();
  for (const auto& e : jobs)
    q.insert(e, 1);
  auto insert_s = seconds_since(t0);
  bytes_per_job = (heap_bytes() - heap0) / static_cast<double>(jobs.size());
  t0 = steady::now();
  size_t taken = 0;
  while (!q.empty()) {
    q.pop_front();
    ++taken;
  }
  auto pop_s = seconds_since(t0);
  if (taken != jobs.size())
    std::abort();
  auto n = static_cast<double>(jobs.size());
  return {n / insert_s, n / pop_s};
}

bool parse(int argc, char** argv, options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    auto v = std::strtoull(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--jobs") == 0 && v > 0)
      o.jobs = v;
    else if (std::strcmp(argv[i], "--tenants") == 0 && v > 0)
      o.tenants = static_cast<uint32_t>(v);
    else if (std::strcmp(argv[i], "--rounds") == 0 && v > 0)
      o.rounds = static_cast<int>(v);
    else
      return false;
  }
  return argc % 2 == 1;
}

} // namespace

int main(int argc, char** argv) {
  options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr, "usage: drover_bench_ready_queue [--jobs N] "
                         "[--tenants T] [--rounds R]\n");
    return 2;
  }
  std::mt19937_64 rng{42};
  std::vector<ready_entry> in_order;
  in_order.reserve(o.jobs);
  int64_t key = 1'780'000'000'000;
  for (size_t i = 0; i < o.jobs; ++i) {
    if (i % 3 == 0) // about three jobs a millisecond
      ++key;
    char id[32];
    std::snprintf(id, sizeof(id), "j%013zu-%zu", i, i % 64);
    ready_entry e;
    e.job_id = id;
    e.key = key;
    e.tenant = static_cast<uint32_t>(1 + i % o.tenants);
    in_order.push_back(std::move(e));
  }
  auto shuffled = in_order;
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  std::vector<double> ins_in, ins_sh, pop_in, pop_sh;
  double bytes_in = 0;
  double bytes_sh = 0;
  for (int r = 0; r < o.rounds; ++r) {
    auto [i1, p1] = fill_and_drain(in_order, bytes_in);
    auto [i2, p2] = fill_and_drain(shuffled, bytes_sh);
    ins_in.push_back(i1);
    pop_in.push_back(p1);
    ins_sh.push_back(i2);
    pop_sh.push_back(p2);
  }
  auto a = median(ins_in);
  auto b = median(ins_sh);
  std::printf("{\"bench\":\"ready_queue\",\"jobs\":%zu,\"tenants\":%u,"
              "\"rounds\":%d,\"in_order_inserts_per_s\":%.0f,"
              "\"shuffled_inserts_per_s\":%.0f,"
              "\"shuffled_vs_in_order\":%.3f,"
              "\"in_order_pops_per_s\":%.0f,\"shuffled_pops_per_s\":%.0f,"
              "\"heap_bytes_per_job_in_order\":%.1f,"
              "\"heap_bytes_per_job_shuffled\":%.1f}\n",
              o.jobs, o.tenants, o.rounds, a, b, b / a, median(pop_in),
              median(pop_sh), bytes_in, bytes_sh);
  return 0;
}
