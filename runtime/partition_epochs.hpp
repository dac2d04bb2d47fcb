#pragma once

// The epochs of partition leases one process knows, shared by its actors
// and threads (docs/cluster.md, "Epochs on worker leases").
//
// A coordinator records the epoch of every partition it takes (hold()) and
// its node links stamp each lease they send to a worker node with the
// epoch of the job's partition (of()). A worker node records the newest
// epoch it was sent per partition, over all its agents, and refuses a
// lease stamped with an older one (admit()): that lease comes from a
// coordinator that has been deposed (paused, cut off) and has not noticed
// yet, while its successor already leases that partition's jobs. The
// stamp is a fence the worker can check only after it saw the newer
// epoch; PostgreSQL's fence (pg::write_fence) and the coordinator's own
// self-fencing stay the main defence.
//
// Epoch 0 means "no epoch": a coordinator without partition leases (the
// memory store) or a build from before the stamp. Such leases are
// admitted and change nothing.

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

namespace drover {

class partition_epochs {
public:
  partition_epochs();

  /// Coordinator: it holds `partitions` at `epochs` (parallel; a grant of
  /// the lease table). An epoch never goes down here: a lower one than
  /// known is ignored, as are partitions outside [0, max_partitions).
  void hold(const std::vector<int32_t>& partitions,
            const std::vector<int64_t>& epochs);

  /// The newest epoch known for `partition`; 0 = none (or out of range).
  int64_t of(int32_t partition) const;

  /// Worker: a lease of `partition` stamped `epoch` arrived. True (and the
  /// epoch recorded as the newest) unless a lease of that partition with a
  /// newer epoch arrived before; then false and `newest` says which. Epoch
  /// 0 and partitions out of range are admitted without a record.
  bool admit(int32_t partition, int64_t epoch, int64_t& newest);

private:
  /// Raises the partition's epoch to at least `epoch`; the one before.
  int64_t raise(int32_t partition, int64_t epoch);

  std::unique_ptr<std::atomic<int64_t>[]> epochs_;
};

} // namespace drover
