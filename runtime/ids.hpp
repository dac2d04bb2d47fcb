#pragma once

// Job ids: "j" + 13 base-32 digits of (Unix ms << 20 | counter). Fixed width
// and an alphabet in ASCII order, so ids sort by creation time (the store
// pages by id); 14 characters, so they fit std::string's small buffer and a
// queued job's id costs no allocation. The counter starts at a random value
// and ids stay unique within a generator even past 2^20 ids in one ms (the
// time part then runs ahead of the clock).

#include <cstdint>
#include <string>
#include <string_view>

namespace drover {

class job_id_generator {
public:
  explicit job_id_generator(uint64_t seed);

  std::string next(int64_t now_ms);

private:
  int64_t last_ms_ = 0;
  uint32_t counter_ = 0;
};

/// Whether `id` can name a job: 1 to 64 ASCII letters, digits, '-' or '_'
/// (the generator's ids and nothing that could upset a query). Every
/// boundary checks ids with this before they reach the store.
bool plausible_job_id(std::string_view id);

} // namespace drover
