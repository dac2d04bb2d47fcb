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
  CHECK(picker.of("acme", "", "", 9) == 9);
  CHECK(picker.of("acme", "order-42", "", 9) == 44);
  partition_picker none;
  CHECK(none.next_keyless() == 0);
  CHECK(none.of("acme", "order-42", "", 0) == 0);
  // A concurrency key places the job, whatever its idempotency key: every
  // job of the key in one partition, on one coordinator.
  auto by_key = partition_of_submission("acme", "", "user:42", 64);
  REQUIRE(by_key >= 0);
  CHECK(partition_of_submission("acme", "order-1", "user:42", 64) == by_key);
  CHECK(partition_of_submission("acme", "order-2", "user:42", 64) == by_key);
  CHECK(picker.of("acme", "order-42", "user:42", 9) == by_key);
  CHECK(picker.of("acme", "", "user:42", 9) == by_key);
  CHECK(partition_of_submission("acme", "order-42", "", 64) == 44);
  CHECK(partition_of_submission("acme", "", "", 64) == -1);
  CHECK(partition_of_submission("acme", "order-42", "user:42", 0) == -1);
  CHECK_THROWS(partition_picker{{1}, 0});
  // A coordinator sharing the partitions may own none for a while.
  partition_picker empty{{}, 64};
  CHECK(empty.next_keyless() == -1);
  CHECK_FALSE(empty.owns(0));
  empty.set_owned({5, 7});
  CHECK(empty.owns(7));
  CHECK_FALSE(empty.owns(6));
  CHECK(empty.next_keyless() == 5);
}

TEST_CASE("rendezvous shares spread the partitions evenly and move little",
          "[partition]") {
  std::vector<std::string> three{"c1@h:1:aa", "c2@h:2:bb", "c3@h:3:cc"};
  auto shares = rendezvous_shares(three, 64);
  REQUIRE(shares.size() == 3);
  std::set<int32_t> all;
  for (auto& s : shares) {
    // 64 / 3: 21 or 22 each.
    CHECK(s.size() >= 21);
    CHECK(s.size() <= 22);
    CHECK(std::is_sorted(s.begin(), s.end()));
    all.insert(s.begin(), s.end());
  }
  CHECK(all.size() == 64);
  CHECK(*all.begin() == 0);
  CHECK(*all.rbegin() == 63);
  // The order the members are listed in does not matter.
  std::vector<std::string> reversed{three[2], three[1], three[0]};
  auto again = rendezvous_shares(reversed, 64);
  CHECK(again[0] == shares[2]);
  CHECK(again[2] == shares[0]);
  // One leaves: the two survivors keep most of what they had (bounded
  // load moves some besides the leaver's 21 or 22, far from all 64).
  auto two = rendezvous_shares({three[0], three[1]}, 64);
  size_t kept = 0;
  for (size_t m = 0; m < 2; ++m)
    for (auto p : shares[m])
      kept += std::binary_search(two[m].begin(), two[m].end(), p) ? 1 : 0;
  CHECK(kept >= 30);
  CHECK(two[0].size() == 32);
  CHECK(two[1].size() == 32);
  // Alone, a member owns everything; nobody, nothing.
  auto one = rendezvous_shares({three[1]}, 64);
  CHECK(one[0].size() == 64);
  CHECK(rendezvous_shares({}, 64).empty());
}

TEST_CASE("a worker node's slots split over sharing coordinators, each slot "
          "in one share",
          "[partition][share]") {
  std::map<std::string, uint32_t> slots{{"cpu", 7}, {"gpu", 1}, {"io", 3}};
  for (size_t k : {1u, 2u, 3u, 5u}) {
    for (const auto* node : {"w1", "w2", "worker-a", "x"}) {
      auto shares = slot_shares(slots, k, node);
      REQUIRE(shares.size() == k);
      for (const auto& [cls, n] : slots) {
        uint32_t sum = 0, lo = n, hi = 0;
        for (auto& s : shares) {
          auto i = s.find(cls);
          auto got = i == s.end() ? 0u : i->second;
          CHECK((i == s.end() || i->second > 0)); // no zero entries
          sum += got;
          lo = std::min(lo, got);
          hi = std::max(hi, got);
        }
        INFO(cls << " over " << k << " for " << node);
        CHECK(sum == n);     // every slot once
        CHECK(hi - lo <= 1); // evenly
      }
      CHECK(slot_shares(slots, k, node) == shares); // the same every time
    }
  }
  // Few slots: nodes do not all pick the first coordinator, and one node's
  // classes spread over the coordinators.
  std::set<size_t> first;
  for (int i = 0; i < 40; ++i) {
    auto shares = slot_shares({{"cpu", 1}}, 3, "node-" + std::to_string(i));
    for (size_t c = 0; c < shares.size(); ++c)
      if (!shares[c].empty())
        first.insert(c);
  }
  CHECK(first.size() == 3);
  auto spread = slot_shares({{"a", 1}, {"b", 1}, {"c", 1}}, 3, "w1");
  for (auto& s : spread)
    CHECK(s.size() == 1);
  CHECK(slot_shares(slots, 0, "w1").empty());
}
