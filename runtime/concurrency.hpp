#pragma once

// Concurrency limits (issue 15 item 3, docs/jobs.md "Concurrency limits"):
// at most N attempts of a job type running at once, across the cluster or
// per tenant ("at most 3 exports per tenant at once"), declared in the
// coordinator's configuration (--concurrency-limit TYPE=N[/tenant]); and
// at most N attempts of the jobs naming one key of their own ("at most 1
// job per user id": job_spec::concurrency_key, per tenant, each job
// carrying its limit).
//
// A job under both takes its own key's slot first, then its type's: it
// waits behind its own key holding nothing, then behind its type's key
// holding its own key's slot (only jobs of the same key wait for that
// one). One order for every job, so two jobs never wait for each other.
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
// authority per key. A job's limit is its own: jobs naming one key with
// different limits each start while fewer than their limit run. One instance
// belongs to one queue actor: not thread-safe.

#include <array>
#include <cstdint>
#include <map>
#include <memory>
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

/// A job's own concurrency key as its queue entry keeps it: the slot key
/// (apart from every type's key and every other tenant's) and the job's
/// limit. Shared by the entries of one job; null = the job names none.
struct own_concurrency_key {
  std::string key;
  uint32_t limit = 1;
};
using own_key_ref = std::shared_ptr<const own_concurrency_key>;

/// The own key of a job of `tenant` naming `key` with `limit` (null when
/// `key` is empty).
own_key_ref own_key_of(const std::string& tenant, const std::string& key,
                       uint32_t limit);

/// A type's key (concurrency_slots::key_of: the type, or the type, a NUL
/// and the tenant) as (type, tenant; "" for a limit across tenants); false
/// for an own key (a leading NUL), an empty key or one with two NULs.
bool split_type_key(const std::string& key, std::string& type,
                    std::string& tenant);

/// The slots one attempt takes, in the order it takes them: its own key's,
/// then its type's. `limit` 0 = the type's configured limit.
struct slot_keys {
  /// release_slots' count for every slot.
  static constexpr size_t all = 2;
  std::array<std::string, 2> key;
  std::array<uint32_t, 2> limit{};
  uint8_t size = 0;

  void add(std::string k, uint32_t l) {
    if (k.empty())
      return;
    key[size] = std::move(k);
    limit[size] = l;
    ++size;
  }
};

class concurrency_slots {
public:
  explicit concurrency_slots(concurrency_limits limits = {});

  /// The key a job of `type` for `tenant` counts against; "" = no limit.
  std::string key_of(const std::string& type, const std::string& tenant) const;

  /// The slots an attempt of a job of `type` for `tenant` with its own
  /// key `own` takes, in order.
  slot_keys keys_of(const std::string& type, const std::string& tenant,
                    const own_key_ref& own) const;

  /// Takes a slot of `key` ("" always succeeds) if one is free: fewer than
  /// `limit` are taken (0 = the configured limit of its type).
  bool take(const std::string& key, uint32_t limit = 0);
  /// Counts an attempt that already runs (found at recovery), even past
  /// the limit: it exists whatever the limit says.
  void force(const std::string& key);
  /// Frees a slot of `key` ("" does nothing).
  void release(const std::string& key);

  /// Attempts counted against `key`.
  uint32_t running(const std::string& key) const;

  /// The configured limit of a type's `key` (0 for an own key).
  uint32_t limit_of(const std::string& key) const;

private:
  concurrency_limits limits_;
  std::unordered_map<std::string, uint32_t> running_;
};

} // namespace drover
