#pragma once

// Admission control (issue 15, docs/jobs.md "Admission control"): what a
// coordinator's queue accepts before it hands a submission to the store.
//
// The queue keeps an entry in memory for every waiting job (ready,
// scheduled or retrying) and a job event for every submission sent to the
// store and not answered yet. Without a bound, an open-loop overload (more
// submissions per second than the node drains) grows both until the
// process runs out of memory. This class counts them and refuses a
// submission, before anything is created, when it would pass:
//
//   - its tenant's cap on waiting jobs          -> errc::rate_limited (429)
//   - its partition's cap on waiting jobs       -> errc::overloaded (503)
//   - the node's bound on memory for queued work -> errc::overloaded (503)
//   - the store's backlog (submissions sent and
//     not answered: the store lags)              -> errc::overloaded (503)
//
// Both are definite: nothing was created (unlike `unavailable`, which may
// come from a store that failed in the middle of a commit).
//
// Waiting jobs count from when the store commits them (an entry enters the
// queue) until they leave it (dispatched, cancelled); submissions count from
// admit() until settled(), so a burst of concurrent submits cannot overshoot
// a cap: each is reserved before it is sent.
//
// Memory is an estimate, not a measurement of the heap: each waiting entry
// costs `entry_bytes` (B4 measured 170 B per queued job; the estimate rounds
// up for the tenant and partition counters), each submission in flight its
// input, its strings and `event_overhead_bytes`.
//
// One instance belongs to one queue actor: not thread-safe.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace drover {

struct job_spec;

struct admission_limits {
  /// Waiting jobs per tenant; 0 = no cap.
  uint64_t tenant_waiting = 0;
  /// Per-tenant caps that replace tenant_waiting (0 = no cap for it).
  std::map<std::string, uint64_t> tenant_waiting_caps;
  /// Waiting jobs per partition; 0 = no cap.
  uint64_t partition_waiting = 0;
  /// The node's memory for queued work (waiting entries and submissions in
  /// flight, estimated), bytes; 0 = no bound.
  uint64_t memory_bytes = 0;
  /// Submissions sent to the store and not answered yet; 0 = no bound.
  uint64_t store_backlog = 0;
};

class admission_control {
public:
  using tenant_ref = uint32_t;

  /// Estimated bytes of one waiting entry (see above).
  static constexpr uint64_t entry_bytes = 256;
  /// Estimated bytes of a submission in flight beyond its strings.
  static constexpr uint64_t event_overhead_bytes = 512;

  explicit admission_control(admission_limits limits = {});

  /// The number standing for `tenant` (interned: entries keep 4 bytes).
  tenant_ref tenant(std::string_view name);
  const std::string& tenant_name(tenant_ref t) const {
    return tenants_[t].name;
  }

  /// A waiting entry of tenant `t` in `partition` entered / left the queue.
  /// `extra`: its estimated bytes beyond entry_bytes (a key of its own:
  /// keyed_entry_bytes), the same on entering and leaving.
  void entered(tenant_ref t, int32_t partition, uint64_t extra = 0);
  void left(tenant_ref t, int32_t partition, uint64_t extra = 0);
  /// The extra bytes of a waiting entry whose job names a concurrency key
  /// of its own, the key being `key_bytes` long: the key's copy, its
  /// shared block and a share of a parked line per key.
  static uint64_t keyed_entry_bytes(size_t key_bytes) {
    return key_bytes + 640;
  }

  /// Room reserved for one submission until the store answers it.
  struct ticket {
    tenant_ref tenant = 0;
    int32_t partition = 0;
    uint64_t bytes = 0;
  };

  /// Reserves room for one submission of `spec` in `partition`, or says why
  /// there is none: errc::rate_limited (its tenant's cap) or
  /// errc::overloaded (the node's bounds), with a message naming the
  /// bound. Every ticket must be given back to settled() once the store
  /// answered (whether it created the job or not).
  caf::expected<ticket> admit(const job_spec& spec, int32_t partition);
  void settled(const ticket& t);

  /// What the last refusal was about: the node (its memory bound, the
  /// store's backlog: a batch is refused whole), a partition or a tenant
  /// (that item is refused, the others may pass).
  enum class scope { node, partition, tenant };
  scope last_refusal() const {
    return last_refusal_;
  }

  /// Estimated bytes of one submission of `spec` while in flight.
  static uint64_t submission_bytes(const job_spec& spec);

  // -- figures (stats, tests) -------------------------------------------------

  uint64_t waiting() const {
    return waiting_;
  }
  /// A tenant's waiting jobs and submissions in flight.
  uint64_t waiting(std::string_view tenant) const;
  uint64_t in_flight() const {
    return in_flight_;
  }
  /// Estimated bytes of queued work.
  uint64_t memory_bytes() const {
    return waiting_ * entry_bytes + extra_bytes_ + in_flight_bytes_;
  }
  /// Submissions refused so far (all reasons).
  uint64_t refused() const {
    return refused_;
  }
  const admission_limits& limits() const {
    return limits_;
  }
  /// Waiting entries plus submissions in flight, per partition (entries
  /// may be 0).
  const std::unordered_map<int32_t, uint64_t>& partitions() const {
    return partitions_;
  }

private:
  struct tenant_count {
    std::string name;
    uint64_t cap = 0;
    /// Waiting entries plus submissions in flight.
    uint64_t count = 0;
  };

  uint64_t& partition_count(int32_t partition) {
    return partitions_[partition];
  }

  /// The cap of waiting jobs of `tenant` (0 = none).
  uint64_t cap_of(const std::string& tenant) const;

  admission_limits limits_;
  std::vector<tenant_count> tenants_;
  std::unordered_map<std::string, tenant_ref> tenant_index_;
  /// Waiting entries plus submissions in flight, per partition.
  std::unordered_map<int32_t, uint64_t> partitions_;
  uint64_t waiting_ = 0;
  /// Waiting entries' bytes beyond entry_bytes.
  uint64_t extra_bytes_ = 0;
  uint64_t in_flight_ = 0;
  uint64_t in_flight_bytes_ = 0;
  uint64_t refused_ = 0;
  scope last_refusal_ = scope::node;
};

} // namespace drover
