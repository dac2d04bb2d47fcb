#include "runtime/admission.hpp"

#include "runtime/errors.hpp"
#include "runtime/model.hpp"

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
  t.cap = limits_.tenant_waiting;
  if (auto c = limits_.tenant_waiting_caps.find(key);
      c != limits_.tenant_waiting_caps.end())
    t.cap = c->second;
  tenants_.push_back(std::move(t));
  tenant_index_.emplace(std::move(key), ref);
  return ref;
}

void admission_control::entered(tenant_ref t, int32_t partition) {
  ++tenants_[t].count;
  ++partition_count(partition);
  ++waiting_;
}

void admission_control::left(tenant_ref t, int32_t partition) {
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
         + spec.breaker_key.size();
}

caf::expected<admission_control::ticket>
admission_control::admit(const job_spec& spec, int32_t partition) {
  auto t = tenant(spec.tenant);
  auto& tc = tenants_[t];
  auto bytes = submission_bytes(spec);
  auto refuse = [this](errc code, std::string why) -> caf::expected<ticket> {
    ++refused_;
    return make_error(code, std::move(why));
  };
  if (limits_.store_backlog > 0 && in_flight_ >= limits_.store_backlog)
    return refuse(errc::overloaded,
                  "overloaded: the store has " + std::to_string(in_flight_)
                      + " submissions to commit (admission-store-backlog); "
                        "retry later");
  if (limits_.memory_bytes > 0 && memory_bytes() + bytes > limits_.memory_bytes)
    return refuse(errc::overloaded,
                  "overloaded: queued work would pass this node's bound of "
                      + std::to_string(limits_.memory_bytes / (1024 * 1024))
                      + " MiB (admission-queue-memory-mb); retry later");
  auto& pc = partition_count(partition);
  if (limits_.partition_waiting > 0 && pc >= limits_.partition_waiting)
    return refuse(errc::overloaded,
                  "overloaded: partition " + std::to_string(partition) + " has "
                      + std::to_string(pc)
                      + " waiting jobs, its cap "
                        "(admission-partition-waiting); retry later");
  if (tc.cap > 0 && tc.count >= tc.cap)
    return refuse(errc::rate_limited,
                  "tenant '" + tc.name + "' has " + std::to_string(tc.count)
                      + " waiting jobs, its cap (admission-tenant-waiting); "
                        "retry when some have started");
  ++tc.count;
  ++pc;
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
