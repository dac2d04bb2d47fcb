#pragma once

// Partitions of the job space (docs/storage.md, decision 0006, issue 13).
// A database has P partitions, fixed when it is created
// (drover.partitioning); every job belongs to exactly one, for good, and
// its id shows which: the generator's ids are "j<13 digits>-<partition>".
// A job written before ids carried a partition (an id without the suffix)
// is in partition 0.
//
// A submission with an idempotency key belongs to the partition of (tenant,
// key), so a retried submit finds its job whichever coordinator takes it;
// one without a key may go to any partition its coordinator owns. Both
// functions are part of the data format: changing them would move jobs.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace drover {

/// The most partitions a database can have (drover.partitioning's check).
constexpr int32_t max_partitions = 4096;

/// The partition `job_id` names: the decimal after its last '-' when that
/// is 1 to 4 digits below max_partitions, else 0 (ids from before
/// partitioning). Whether the partition exists in a database is the lease
/// table's business.
int32_t partition_of_id(std::string_view job_id);

/// The partition of the submission keyed (tenant, key) among `partitions`
/// (1 to max_partitions): FNV-1a (64 bit) of tenant, a NUL byte and key,
/// modulo `partitions`.
int32_t partition_of_key(std::string_view tenant, std::string_view key,
                         int32_t partitions);

/// The partition of a submission whoever receives it: its concurrency
/// key's when it names one (every job of a concurrency key in one partition,
/// so that the one coordinator owning it counts all of them running: the
/// limit holds across coordinators that share a database), else its
/// idempotency key's (partition_of_key); -1 for neither (any partition).
int32_t partition_of_submission(std::string_view tenant,
                                std::string_view idempotency_key,
                                std::string_view concurrency_key,
                                int32_t partitions);

/// Which partitions each of `members` (coordinator instance ids, each once)
/// should own of `count`: rendezvous hashing with bounded load. Partition p
/// goes to the member with the highest weight(member, p) among those that
/// may still take one (count / members each, and count % members of them
/// one more), p taken in ascending order; so every member gets count /
/// members or one more, and every
/// coordinator that sees the same members computes the same answer. A
/// member joining or leaving moves about its share (bounded load moves a
/// few more than plain rendezvous would). Returns, per member (in the order
/// given), its partitions ascending; empty members -> empty.
std::vector<std::vector<int32_t>>
rendezvous_shares(const std::vector<std::string>& members, int32_t count);

/// A worker node that joins `coordinators` sharing the partitions
/// (--share-partitions): its slots split into one share per coordinator,
/// each slot in exactly one share (no coordinator can book a slot another
/// holds). Per class, every share gets n / coordinators and n %
/// coordinators of them one more: the shares that get one more start at
/// an offset derived from `node_id` (FNV-1a), moved on by each class, so that
/// worker nodes with few slots do not all serve the first coordinator. Returns
/// `coordinators` maps (a class whose share is 0 is left out; a share may
/// be empty).
std::vector<std::map<std::string, uint32_t>>
slot_shares(const std::map<std::string, uint32_t>& slots, size_t coordinators,
            std::string_view node_id);

/// Where a coordinator puts new jobs: it owns `owned` (ascending; empty
/// while it owns none) of `count` partitions. Keyed submissions go to
/// partition_of_key; the others take the owned partitions in turn, one per call
/// of next_keyless(), so a batch submitted in one call shares a partition (its
/// write locks one lease row) and consecutive calls spread evenly.
class partition_picker {
public:
  partition_picker() = default;
  partition_picker(std::vector<int32_t> owned, int32_t count);

  int32_t count() const {
    return count_;
  }

  const std::vector<int32_t>& owned() const {
    return owned_;
  }

  /// Whether `partition` is owned.
  bool owns(int32_t partition) const;

  /// The partitions owned from now on (ascending).
  void set_owned(std::vector<int32_t> owned);

  /// The partition for the next call's keyless submissions; -1 while none
  /// is owned.
  int32_t next_keyless();

  /// The partition of one submission (partition_of_submission), or
  /// `keyless` (from next_keyless()) for one without keys.
  int32_t of(std::string_view tenant, std::string_view key,
             std::string_view concurrency_key, int32_t keyless) const;

private:
  std::vector<int32_t> owned_{0};
  int32_t count_ = 1;
  size_t turn_ = 0;
};

} // namespace drover
