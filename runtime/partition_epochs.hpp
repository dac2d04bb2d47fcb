#pragma once

// The epochs of partition leases one process knows, shared by its actors
// and threads (docs/cluster.md, "Epochs on leases").
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
// The worker's fence lapses: an epoch holds for `fence_window` after the
// last lease that carried it. A database recreated or restored while
// worker nodes stay up starts its epochs again from 1; without the lapse
// those nodes would refuse its leases until they restart. A lease of an
// older epoch arriving after the lapse is admitted and its epoch becomes
// the partition's newest.
//
// Epoch 0 means "no epoch": a coordinator without partition leases (the
// memory store) or a build from before the stamp. Such leases (and any
// epoch below 0) are admitted and change nothing.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace drover {

class partition_epochs {
public:
  /// How long a worker node holds a partition's newest epoch after the
  /// last lease that carried it.
  static constexpr std::chrono::milliseconds fence_window{30000};

  partition_epochs();

  /// Coordinator: it holds `partitions` at `epochs` (parallel; a grant of
  /// the lease table). An epoch never goes down here: a lower one than
  /// known is ignored, as are partitions outside [0, max_partitions).
  void hold(const std::vector<int32_t>& partitions,
            const std::vector<int64_t>& epochs);

  /// The newest epoch known for `partition`; 0 = none (or out of range).
  int64_t of(int32_t partition) const;

  /// Worker: a lease of `partition` stamped `epoch` arrived at `now`
  /// (steady clock). True, and the epoch recorded as the partition's
  /// newest (seen now), unless a newer epoch of it was seen within
  /// fence_window; then false and `newest` says which.
  bool admit(int32_t partition, int64_t epoch,
             std::chrono::steady_clock::time_point now, int64_t& newest);

  /// Worker: whether a lease stamped `epoch` would be refused now (a lease
  /// buffered before the newer epoch came); changes nothing.
  bool stale(int32_t partition, int64_t epoch,
             std::chrono::steady_clock::time_point now) const;

private:
  bool fenced(int32_t partition, int64_t epoch,
              std::chrono::steady_clock::time_point now) const;

  mutable std::mutex mx_;
  std::unique_ptr<int64_t[]> epochs_;
  std::unique_ptr<std::chrono::steady_clock::time_point[]> seen_;
};

} // namespace drover
