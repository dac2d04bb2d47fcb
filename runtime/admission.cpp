#include "runtime/admission.hpp"

#include "runtime/errors.hpp"
#include "runtime/model.hpp"

#include <algorithm>

namespace drover {

admission_control::admission_control(admission_limits limits)
    : limits_(std::move(limits)) {}

admission_control::tenant_ref admission_control::tenant(std::string_view name) {
  std::string key{name};
  if (auto i = tenant_index_.find(key); i != tenant_index_.end())
    return i->second;
  auto ref = static_cast<tenant_ref>(tenants_.size());
  tenant_count t;
  t.name = key;
  t.cap = cap_of(key);
  tenants_.push_back(std::move(t));
  tenant_index_.emplace(std::move(key), ref);
  return ref;
}

uint64_t admission_control::cap_of(const std::string& tenant) const {
  auto c = limits_.tenant_waiting_caps.find(tenant);
  return c != limits_.tenant_waiting_caps.end() ? c->second
                                                : limits_.tenant_waiting;
}

void admission_control::entered(tenant_ref t, int32_t partition,
                                uint64_t extra) {
  ++tenants_[t].count;
  ++partition_count(partition);
  ++waiting_;
  extra_bytes_ += extra;
}

void admission_control::left(tenant_ref t, int32_t partition, uint64_t extra) {
  extra_bytes_ -= std::min(extra, extra_bytes_);
  auto& tc = tenants_[t].count;
  if (tc > 0)
    --tc;
  auto& pc = partition_count(partition);
  if (pc > 0)
    --pc;
  if (waiting_ > 0)
    --waiting_;
}

uint64_t admission_control::submission_bytes(const job_spec& spec) {
  return event_overhead_bytes + spec.type.size() + spec.input.size()
         + spec.tenant.size() + spec.idempotency_key.size()
         + spec.callback_url.size() + spec.rate_limit_key.size()
         + spec.breaker_key.size() + spec.concurrency_key.size()
         + (spec.concurrency_key.empty()
                ? 0
                : keyed_entry_bytes(spec.tenant.size()
                                    + spec.concurrency_key.size()))
         + 32 * spec.extra_rate_limit_keys.size();
}

caf::expected<admission_control::ticket>
admission_control::admit(const job_spec& spec, int32_t partition) {
  // A tenant is interned only once admitted: refused requests naming new
  // tenants leave nothing behind.
  auto known = tenant_index_.find(spec.tenant);
  uint64_t count = 0;
  uint64_t cap = 0;
  if (known != tenant_index_.end()) {
    count = tenants_[known->second].count;
    cap = tenants_[known->second].cap;
  } else {
    cap = cap_of(spec.tenant);
  }
  auto bytes = submission_bytes(spec);
  auto refuse
      = [this](scope s, errc code, std::string why) -> caf::expected<ticket> {
    ++refused_;
    last_refusal_ = s;
    return make_error(code, std::move(why));
  };
  if (limits_.store_backlog > 0 && in_flight_ >= limits_.store_backlog)
    return refuse(scope::node, errc::overloaded,
                  "overloaded: the store has " + std::to_string(in_flight_)
                      + " submissions to commit (admission-store-backlog); "
                        "retry later");
  if (limits_.memory_bytes > 0 && memory_bytes() + bytes > limits_.memory_bytes)
    return refuse(scope::node, errc::overloaded,
                  "overloaded: queued work would pass this node's bound of "
                      + std::to_string(limits_.memory_bytes / (1024 * 1024))
                      + " MiB (admission-queue-memory-mb); retry later");
  auto pi = partitions_.find(partition);
  auto pc = pi == partitions_.end() ? 0 : pi->second;
  if (limits_.partition_waiting > 0 && pc >= limits_.partition_waiting)
    return refuse(scope::partition, errc::overloaded,
                  "overloaded: partition " + std::to_string(partition) + " has "
                      + std::to_string(pc)
                      + " waiting jobs, its cap "
                        "(admission-partition-waiting); retry later");
  if (cap > 0 && count >= cap)
    return refuse(scope::tenant, errc::rate_limited,
                  "tenant '" + spec.tenant + "' has " + std::to_string(count)
                      + " waiting jobs, its cap (admission-tenant-waiting); "
                        "retry when some have started");
  auto t = known != tenant_index_.end() ? known->second : tenant(spec.tenant);
  ++tenants_[t].count;
  ++partition_count(partition);
  ++in_flight_;
  in_flight_bytes_ += bytes;
  return ticket{t, partition, bytes};
}

void admission_control::settled(const ticket& t) {
  auto& tc = tenants_[t.tenant].count;
  if (tc > 0)
    --tc;
  auto& pc = partition_count(t.partition);
  if (pc > 0)
    --pc;
  if (in_flight_ > 0)
    --in_flight_;
  in_flight_bytes_
      = in_flight_bytes_ >= t.bytes ? in_flight_bytes_ - t.bytes : 0;
}

uint64_t admission_control::waiting(std::string_view tenant) const {
  auto i = tenant_index_.find(std::string{tenant});
  return i == tenant_index_.end() ? 0 : tenants_[i->second].count;
}

} // namespace drover
