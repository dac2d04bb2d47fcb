#include "runtime/partition.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace drover {

int32_t partition_of_id(std::string_view job_id) {
  auto dash = job_id.rfind('-');
  if (dash == std::string_view::npos)
    return 0;
  auto digits = job_id.substr(dash + 1);
  if (digits.empty() || digits.size() > 4)
    return 0;
  int32_t p = 0;
  for (char c : digits) {
    if (c < '0' || c > '9')
      return 0;
    p = p * 10 + (c - '0');
  }
  return p < max_partitions ? p : 0;
}

int32_t partition_of_key(std::string_view tenant, std::string_view key,
                         int32_t partitions) {
  uint64_t h = 14695981039346656037ull;
  auto mix = [&h](unsigned char c) {
    h ^= c;
    h *= 1099511628211ull;
  };
  for (char c : tenant)
    mix(static_cast<unsigned char>(c));
  mix(0);
  for (char c : key)
    mix(static_cast<unsigned char>(c));
  auto n = static_cast<uint64_t>(partitions > 0 ? partitions : 1);
  return static_cast<int32_t>(h % n);
}

namespace {

/// splitmix64's finalizer: spreads FNV's low-entropy high bits.
uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

uint64_t fnv1a(std::string_view text) {
  uint64_t h = 14695981039346656037ull;
  for (char c : text) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

} // namespace

std::vector<std::vector<int32_t>>
rendezvous_shares(const std::vector<std::string>& members, int32_t count) {
  std::vector<std::vector<int32_t>> out(members.size());
  if (members.empty() || count < 1)
    return out;
  std::vector<uint64_t> seeds;
  for (const auto& m : members)
    seeds.push_back(fnv1a(m));
  auto n = static_cast<int32_t>(members.size());
  // count / n each, and r of them one more: a member may take a partition
  // while it holds fewer than count / n, or exactly that while fewer than r
  // hold one more. The capacities add up to count, so someone always may.
  auto low = static_cast<size_t>(count / n);
  auto r = static_cast<size_t>(count % n);
  size_t at_high = 0;
  for (int32_t p = 0; p < count; ++p) {
    size_t best = members.size();
    uint64_t best_w = 0;
    for (size_t m = 0; m < members.size(); ++m) {
      auto held = out[m].size();
      if (held > low || (held == low && at_high >= r))
        continue;
      auto w = mix64(seeds[m] ^ mix64(static_cast<uint64_t>(p) + 1));
      // Ties (practically never) go to the smaller instance id, so that
      // every coordinator decides alike whatever the members' order.
      if (best == members.size() || w > best_w
          || (w == best_w && members[m] < members[best])) {
        best = m;
        best_w = w;
      }
    }
    out[best].push_back(p);
    if (out[best].size() == low + 1)
      ++at_high;
  }
  return out;
}

partition_picker::partition_picker(std::vector<int32_t> owned, int32_t count)
    : owned_(std::move(owned)), count_(count) {
  if (count_ < 1 || count_ > max_partitions)
    throw std::invalid_argument{"partition_picker: no partitions"};
}

bool partition_picker::owns(int32_t partition) const {
  return std::binary_search(owned_.begin(), owned_.end(), partition);
}

void partition_picker::set_owned(std::vector<int32_t> owned) {
  owned_ = std::move(owned);
}

int32_t partition_picker::next_keyless() {
  if (owned_.empty())
    return -1;
  auto p = owned_[turn_ % owned_.size()];
  ++turn_;
  return p;
}

int32_t partition_picker::of(std::string_view tenant, std::string_view key,
                             std::string_view concurrency_key,
                             int32_t keyless) const {
  auto p = partition_of_submission(tenant, key, concurrency_key, count_);
  return p < 0 ? keyless : p;
}

int32_t partition_of_submission(std::string_view tenant,
                                std::string_view idempotency_key,
                                std::string_view concurrency_key,
                                int32_t partitions) {
  if (partitions < 1)
    return -1;
  if (!concurrency_key.empty()) {
    // A leading byte no idempotency key has (keys refuse control
    // characters): the two kinds of key hash apart.
    std::string k{"\x01"};
    k += concurrency_key;
    return partition_of_key(tenant, k, partitions);
  }
  if (!idempotency_key.empty())
    return partition_of_key(tenant, idempotency_key, partitions);
  return -1;
}

std::vector<std::map<std::string, uint32_t>>
slot_shares(const std::map<std::string, uint32_t>& slots, size_t coordinators,
            std::string_view node_id) {
  std::vector<std::map<std::string, uint32_t>> out(coordinators);
  if (coordinators == 0)
    return out;
  // The running offset goes on from class to class: a node with one slot
  // in each of three classes serves three coordinators, not one.
  auto start = static_cast<size_t>(mix64(fnv1a(node_id)) % coordinators);
  for (const auto& [cls, n] : slots) {
    auto base = n / coordinators;
    auto extra = n % coordinators;
    for (size_t i = 0; i < coordinators; ++i) {
      auto k = (i + coordinators - start) % coordinators;
      auto share = static_cast<uint32_t>(base + (k < extra ? 1 : 0));
      if (share > 0)
        out[i][cls] = share;
    }
    start = (start + extra) % coordinators;
  }
  return out;
}

} // namespace drover
