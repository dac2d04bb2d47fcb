#include "runtime/partition_epochs.hpp"

#include "runtime/partition.hpp"

namespace drover {

namespace {

bool in_range(int32_t partition) {
  return partition >= 0 && partition < max_partitions;
}

} // namespace

partition_epochs::partition_epochs()
    : epochs_(new int64_t[max_partitions]()),
      seen_(new std::chrono::steady_clock::time_point[max_partitions]()) {}

void partition_epochs::hold(const std::vector<int32_t>& partitions,
                            const std::vector<int64_t>& epochs) {
  std::lock_guard<std::mutex> guard{mx_};
  for (size_t i = 0; i < partitions.size() && i < epochs.size(); ++i)
    if (in_range(partitions[i]) && epochs[i] > epochs_[partitions[i]])
      epochs_[partitions[i]] = epochs[i];
}

int64_t partition_epochs::of(int32_t partition) const {
  if (!in_range(partition))
    return 0;
  std::lock_guard<std::mutex> guard{mx_};
  return epochs_[partition];
}

bool partition_epochs::fenced(int32_t partition, int64_t epoch,
                              std::chrono::steady_clock::time_point now) const {
  return epoch > 0 && in_range(partition) && epoch < epochs_[partition]
         && now - seen_[partition] <= fence_window;
}

bool partition_epochs::admit(int32_t partition, int64_t epoch,
                             std::chrono::steady_clock::time_point now,
                             int64_t& newest) {
  newest = epoch;
  if (epoch <= 0 || !in_range(partition))
    return true;
  std::lock_guard<std::mutex> guard{mx_};
  if (fenced(partition, epoch, now)) {
    newest = epochs_[partition];
    return false;
  }
  // Newer, the same, or older after the fence lapsed: the newest now.
  if (epoch >= epochs_[partition] || now - seen_[partition] > fence_window) {
    epochs_[partition] = epoch;
    seen_[partition] = now;
  }
  return true;
}

bool partition_epochs::stale(int32_t partition, int64_t epoch,
                             std::chrono::steady_clock::time_point now) const {
  std::lock_guard<std::mutex> guard{mx_};
  return fenced(partition, epoch, now);
}

} // namespace drover
