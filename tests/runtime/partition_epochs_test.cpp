// The partition epochs a process knows (runtime/partition_epochs.hpp): the
// coordinator's stamp on leases and the worker node's check of it.

#include "runtime/partition.hpp"
#include "runtime/partition_epochs.hpp"

#include <catch2/catch.hpp>

#include <chrono>

#include <cstdint>
#include <thread>
#include <vector>

using namespace drover;

TEST_CASE("a coordinator's epochs follow its grants and never go down",
          "[partition][epoch]") {
  partition_epochs e;
  CHECK(e.of(3) == 0);
  e.hold({1, 3}, {4, 9});
  CHECK(e.of(1) == 4);
  CHECK(e.of(3) == 9);
  CHECK(e.of(2) == 0);
  // A later grant raises; an older epoch (a stale grant) changes nothing.
  e.hold({3}, {11});
  e.hold({1}, {2});
  CHECK(e.of(3) == 11);
  CHECK(e.of(1) == 4);
  // Out of range or unequal lengths: ignored, nothing read out of bounds.
  e.hold({-1, max_partitions, 5}, {7, 7});
  e.hold({5}, {});
  CHECK(e.of(-1) == 0);
  CHECK(e.of(max_partitions) == 0);
  CHECK(e.of(5) == 0);
}

TEST_CASE("a worker node refuses a lease older than one it was sent for the "
          "same partition",
          "[partition][epoch]") {
  partition_epochs e;
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours{1};
  int64_t newest = -1;
  CHECK(e.admit(7, 5, t, newest));
  CHECK(newest == 5);
  // The same epoch again (another job of the same owner): admitted.
  CHECK(e.admit(7, 5, t, newest));
  // A deposed owner's lease after its successor's: refused, naming it.
  CHECK_FALSE(e.admit(7, 4, t, newest));
  CHECK(newest == 5);
  CHECK(e.stale(7, 4, t));
  CHECK_FALSE(e.stale(7, 5, t));
  // Another partition is another fence.
  CHECK(e.admit(8, 1, t, newest));
  // A newer owner raises the fence for its predecessor.
  CHECK(e.admit(7, 6, t, newest));
  CHECK_FALSE(e.admit(7, 5, t, newest));
  CHECK(newest == 6);
  // No epoch (memory store, an older coordinator) or a negative one:
  // admitted, recorded nowhere; so are partitions out of range.
  CHECK(e.admit(7, 0, t, newest));
  CHECK(e.admit(7, -3, t, newest));
  CHECK(e.of(7) == 6);
  CHECK(e.admit(max_partitions + 1, 3, t, newest));
  CHECK(e.admit(-2, 3, t, newest));
  CHECK_FALSE(e.stale(-2, 1, t));
}

TEST_CASE("a worker node's fence lapses a while after the last lease of the "
          "newest epoch: a recreated database's leases run",
          "[partition][epoch]") {
  partition_epochs e;
  auto t = std::chrono::steady_clock::time_point{} + std::chrono::hours{1};
  auto w = partition_epochs::fence_window;
  int64_t newest = 0;
  REQUIRE(e.admit(3, 9, t, newest));
  // Each lease of the newest epoch keeps the fence up.
  REQUIRE(e.admit(3, 9, t + w / 2, newest));
  CHECK_FALSE(e.admit(3, 2, t + w, newest));
  CHECK(e.stale(3, 2, t + w / 2 + w));
  // A window after the last one, an older epoch is taken as the newest
  // (epochs started again): its own later leases run, and the old epoch is
  // no fence any more... until a lease of a newer one comes again.
  CHECK_FALSE(e.stale(3, 2, t + w / 2 + w + std::chrono::milliseconds{1}));
  CHECK(e.admit(3, 1, t + 2 * w, newest));
  CHECK(e.admit(3, 2, t + 2 * w, newest));
  CHECK_FALSE(e.admit(3, 1, t + 2 * w, newest));
  CHECK(newest == 2);
  CHECK(e.admit(3, 9, t + 2 * w, newest));
  CHECK_FALSE(e.admit(3, 2, t + 2 * w, newest));
}

TEST_CASE("racing admissions of one partition leave the newest epoch and "
          "refuse only older ones",
          "[partition][epoch]") {
  partition_epochs e;
  constexpr int threads = 4;
  constexpr int64_t top = 2000;
  std::vector<std::vector<int64_t>> refused(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t)
    ts.emplace_back([&, t] {
      for (int64_t epoch = 1 + t; epoch <= top; epoch += threads) {
        int64_t newest = 0;
        if (!e.admit(11, epoch, std::chrono::steady_clock::now(), newest)) {
          // Refused only for an epoch really newer than its own.
          if (newest <= epoch)
            refused[t].push_back(epoch);
        }
      }
    });
  for (auto& t : ts)
    t.join();
  CHECK(e.of(11) == top);
  for (auto& r : refused)
    CHECK(r.empty());
}
