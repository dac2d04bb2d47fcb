// The partition epochs a process knows (runtime/partition_epochs.hpp): the
// coordinator's stamp on leases and the worker node's check of it.

#include "runtime/partition.hpp"
#include "runtime/partition_epochs.hpp"

#include <catch2/catch.hpp>

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
  int64_t newest = -1;
  CHECK(e.admit(7, 5, newest));
  CHECK(newest == 5);
  // The same epoch again (another job of the same owner): admitted.
  CHECK(e.admit(7, 5, newest));
  // A deposed owner's lease after its successor's: refused, naming it.
  CHECK_FALSE(e.admit(7, 4, newest));
  CHECK(newest == 5);
  // Another partition is another fence.
  CHECK(e.admit(8, 1, newest));
  // A newer owner raises the fence for its predecessor.
  CHECK(e.admit(7, 6, newest));
  CHECK_FALSE(e.admit(7, 5, newest));
  CHECK(newest == 6);
  // No epoch (memory store, an older coordinator): admitted, recorded
  // nowhere; so are partitions out of range.
  CHECK(e.admit(7, 0, newest));
  CHECK(e.of(7) == 6);
  CHECK(e.admit(max_partitions + 1, 3, newest));
  CHECK(e.admit(-2, 3, newest));
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
        if (!e.admit(11, epoch, newest)) {
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
