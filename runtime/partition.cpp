#include "runtime/partition.hpp"

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

partition_picker::partition_picker(std::vector<int32_t> owned, int32_t count)
    : owned_(std::move(owned)), count_(count) {
  if (count_ < 1 || count_ > max_partitions || owned_.empty())
    throw std::invalid_argument{"partition_picker: no partitions"};
}

int32_t partition_picker::next_keyless() {
  auto p = owned_[turn_ % owned_.size()];
  ++turn_;
  return p;
}

int32_t partition_picker::of(std::string_view tenant, std::string_view key,
                             int32_t keyless) const {
  return key.empty() ? keyless : partition_of_key(tenant, key, count_);
}

} // namespace drover
