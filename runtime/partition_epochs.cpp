#include "runtime/partition_epochs.hpp"

#include "runtime/partition.hpp"

namespace drover {

partition_epochs::partition_epochs()
    : epochs_(new std::atomic<int64_t>[max_partitions]) {
  for (int32_t p = 0; p < max_partitions; ++p)
    epochs_[p].store(0, std::memory_order_relaxed);
}

int64_t partition_epochs::raise(int32_t partition, int64_t epoch) {
  auto& slot = epochs_[partition];
  auto known = slot.load(std::memory_order_acquire);
  while (known < epoch
         && !slot.compare_exchange_weak(known, epoch, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
  }
  return known;
}

void partition_epochs::hold(const std::vector<int32_t>& partitions,
                            const std::vector<int64_t>& epochs) {
  for (size_t i = 0; i < partitions.size() && i < epochs.size(); ++i)
    if (partitions[i] >= 0 && partitions[i] < max_partitions && epochs[i] > 0)
      raise(partitions[i], epochs[i]);
}

int64_t partition_epochs::of(int32_t partition) const {
  if (partition < 0 || partition >= max_partitions)
    return 0;
  return epochs_[partition].load(std::memory_order_acquire);
}

bool partition_epochs::admit(int32_t partition, int64_t epoch,
                             int64_t& newest) {
  newest = epoch;
  if (epoch <= 0 || partition < 0 || partition >= max_partitions)
    return true;
  auto before = raise(partition, epoch);
  if (before <= epoch)
    return true;
  newest = before;
  return false;
}

} // namespace drover
