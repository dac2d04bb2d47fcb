#include "runtime/ids.hpp"

#include <algorithm>
#include <string>

namespace drover {

namespace {

constexpr uint32_t counter_bits = 20;
constexpr uint32_t counter_mask = (1u << counter_bits) - 1;

} // namespace

job_id_generator::job_id_generator(uint64_t seed)
    : counter_(static_cast<uint32_t>(seed * 0x9E3779B97F4A7C15ull >> 45)
               & (counter_mask >> 1)) {
  // The counter starts in the lower half so a burst rarely moves the time
  // part ahead of the clock.
}

std::string job_id_generator::next(int64_t now_ms, int32_t partition) {
  if (now_ms > last_ms_) {
    last_ms_ = now_ms;
  } else if (++counter_ > counter_mask) {
    counter_ = 0;
    ++last_ms_;
  }
  auto value
      = (static_cast<uint64_t>(std::max<int64_t>(last_ms_, 0)) << counter_bits)
        | (counter_ & counter_mask);
  static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuv";
  std::string id(14, '0');
  id[0] = 'j';
  for (int i = 13; i >= 1; --i) {
    id[static_cast<size_t>(i)] = digits[value & 31];
    value >>= 5;
  }
  id += '-';
  id += std::to_string(partition);
  return id;
}

bool plausible_job_id(std::string_view id) {
  if (id.empty() || id.size() > 64)
    return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z')
           || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
  });
}

} // namespace drover
