#pragma once

// Job ids: "j" + 13 base-32 digits of (Unix ms << 20 | counter), then "-"
// and the job's partition in decimal (runtime/partition.hpp). The digits
// have a fixed width and an alphabet in ASCII order, so ids sort by
// creation time (the store pages by id). The counter starts at a random
// value and ids stay unique within a generator even past 2^20 ids in one
// ms (the time part then runs ahead of the clock); generators of different
// coordinators never share a partition, so their ids differ in the suffix
// even when the digits collide.

#include <cstdint>
#include <string>
#include <string_view>

namespace drover {

class job_id_generator {
public:
  explicit job_id_generator(uint64_t seed);

  /// A new id in `partition` (0 to max_partitions - 1).
  std::string next(int64_t now_ms, int32_t partition);

private:
  int64_t last_ms_ = 0;
  uint32_t counter_ = 0;
};

/// Whether `id` can name a job: 1 to 64 ASCII letters, digits, '-' or '_'
/// (the generator's ids and nothing that could upset a query). Every
/// boundary checks ids with this before they reach the store.
bool plausible_job_id(std::string_view id);

} // namespace drover
