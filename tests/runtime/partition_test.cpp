// Partitions of the job space (runtime/partition.hpp) and the job ids that
// show them (runtime/ids.hpp): both are part of the data format.

#include "runtime/ids.hpp"
#include "runtime/partition.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace drover;

TEST_CASE("a job id shows its partition and sorts by creation time",
          "[partition]") {
  job_id_generator gen{7};
  auto a = gen.next(1'700'000'000'000, 5);
  auto b = gen.next(1'700'000'000'000, 63);
  auto c = gen.next(1'700'000'000'001, 0);
  CHECK(a.size() == 16);
  CHECK(a.substr(14) == "-5");
  CHECK(b.substr(14) == "-63");
  CHECK(partition_of_id(a) == 5);
  CHECK(partition_of_id(b) == 63);
  CHECK(partition_of_id(c) == 0);
  CHECK(plausible_job_id(b));
  // The 14 time-ordered characters come first: ids sort by creation.
  CHECK(a < b);
  CHECK(b < c);
  CHECK(partition_of_id(gen.next(1'700'000'000'002, 4095)) == 4095);
}

TEST_CASE("ids from before partitioning, and odd suffixes, are partition 0",
          "[partition]") {
  CHECK(partition_of_id("j0123456789abc") == 0);
  CHECK(partition_of_id("j0123456789abc-") == 0);
  CHECK(partition_of_id("j0123456789abc-x1") == 0);
  CHECK(partition_of_id("j0123456789abc-12345") == 0);
  CHECK(partition_of_id("j0123456789abc-4096") == 0);
  CHECK(partition_of_id("j0123456789abc-0007") == 7);
  CHECK(partition_of_id("") == 0);
}

TEST_CASE("a keyed submission has one partition, the same everywhere",
          "[partition]") {
  // Pinned: FNV-1a 64 of "acme\0order-42" is 44 modulo 64. A change here
  // would move keyed jobs between partitions of existing databases.
  CHECK(partition_of_key("acme", "order-42", 64) == 44);
  CHECK(partition_of_key("acme", "order-43", 64) == 31);
  CHECK(partition_of_key("", "", 64) == 31);
  // Tenant and key are separated: ("ab", "c") is not ("a", "bc").
  std::set<int32_t> seen;
  for (int p : {64, 61, 4096})
    seen.insert(partition_of_key("ab", "c", p)
                - partition_of_key("a", "bc", p));
  CHECK(seen != std::set<int32_t>{0});
  CHECK(partition_of_key("acme", "order-42", 1) == 0);
  // Spread: 64,000 keys over 64 partitions, each within 15 % of 1,000.
  std::map<int32_t, int> per;
  for (int i = 0; i < 64'000; ++i)
    ++per[partition_of_key("t", "key-" + std::to_string(i), 64)];
  REQUIRE(per.size() == 64);
  for (auto& [p, n] : per) {
    INFO("partition " << p);
    CHECK(n > 850);
    CHECK(n < 1150);
  }
}

TEST_CASE("keyless submissions take the owned partitions in turn",
          "[partition]") {
  partition_picker picker{{3, 9, 40}, 64};
  std::vector<int32_t> got;
  for (int i = 0; i < 6; ++i)
    got.push_back(picker.next_keyless());
  CHECK(got == std::vector<int32_t>{3, 9, 40, 3, 9, 40});
  CHECK(picker.of("acme", "", 9) == 9);
  CHECK(picker.of("acme", "order-42", 9) == 44);
  partition_picker none;
  CHECK(none.next_keyless() == 0);
  CHECK(none.of("acme", "order-42", 0) == 0);
  CHECK_THROWS(partition_picker{{}, 64});
  CHECK_THROWS(partition_picker{{1}, 0});
}
