#pragma once

// Concurrency limits (issue 15 item 3, docs/jobs.md "Concurrency limits"):
// at most N attempts of a job type running at once, across the cluster or
// per tenant ("at most 3 exports per tenant at once"), declared in the
// coordinator's configuration (--concurrency-limit TYPE=N[/tenant]).
//
// The queue asks for a slot before it hands a job to a worker; a job whose
// key has no free slot waits in the queue (parked behind its key, in order)
// without holding a worker. A slot is freed when the queue learns the
// attempt's outcome was committed (its job supervisor finished), or when an
// attempt that ran before a restart was not reported within its lease
// (the adoption grace): never by a worker's disconnect alone. The overlap
// with a zombie attempt (a worker cut off, still running after its lease
// expired and its job ran elsewhere) is bounded by the attempt lease TTL,
// as for every job.
//
// One coordinator holds every partition today, so its queue is the one
// authority per key. One instance belongs to one queue actor: not
// thread-safe.

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

namespace drover {

struct concurrency_limit {
  /// Attempts running at once (at least 1).
  uint32_t limit = 1;
  /// Per tenant (each tenant has `limit`) instead of across all tenants.
  bool per_tenant = false;

  bool operator==(const concurrency_limit& other) const {
    return limit == other.limit && per_tenant == other.per_tenant;
  }
};

/// Limits by job type.
using concurrency_limits = std::map<std::string, concurrency_limit>;

class concurrency_slots {
public:
  explicit concurrency_slots(concurrency_limits limits = {});

  /// The key a job of `type` for `tenant` counts against; "" = no limit.
  std::string key_of(const std::string& type, const std::string& tenant) const;

  /// Takes a slot of `key` ("" always succeeds) if one is free.
  bool take(const std::string& key);
  /// Counts an attempt that already runs (found at recovery), even past
  /// the limit: it exists whatever the limit says.
  void force(const std::string& key);
  /// Frees a slot of `key` ("" does nothing).
  void release(const std::string& key);

  /// Attempts counted against `key`.
  uint32_t running(const std::string& key) const;

  /// The limit of `key`.
  uint32_t limit_of(const std::string& key) const;

  bool empty() const {
    return limits_.empty();
  }

private:
  concurrency_limits limits_;
  std::unordered_map<std::string, uint32_t> running_;
};

} // namespace drover
