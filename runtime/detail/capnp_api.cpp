// The Cap'n Proto codec of what clients read and send (declared in
// capnp_model.hpp): supervision-tree snapshots (schemas/admin.capnp),
// submissions, list queries and queue statistics (schemas/job_api.capnp).
// The job model they carry is in capnp_model.cpp.

#include "runtime/detail/capnp_model.hpp"

#include "runtime/detail/capnp_common.hpp"
#include "runtime/partition.hpp"

#include <array>
#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

namespace drover::detail {

namespace {

/// The raw value to write for an enum the model holds as a plain int32
/// (submit_request.priority, job_query.status): the value itself when a
/// uint16 can hold it, else 65535. No schema enum has that many enumerants,
/// so a value outside the enum is never written as one inside it; reading
/// it back fails with errc::invalid_value.
template <class Wire>
Wire int_to_wire(int32_t x) {
  static_assert(std::is_enum<Wire>::value, "Wire must be an enum");
  return static_cast<Wire>(x >= 0 && x <= 0xffff ? static_cast<uint16_t>(x)
                                                 : uint16_t{0xffff});
}

/// Reads an enum into the plain int32 the model holds it as.
template <class Model, class Wire>
caf::error read_int_enum(Wire in, int32_t& out, const char* where) {
  Model value{};
  if (auto err = read_enum(in, value, where))
    return err;
  out = static_cast<int32_t>(value);
  return {};
}

/// Reads an optional member, a group `union { unset @n :Void; value @m :T; }`
/// (schemas/job_api.capnp), into a caf::optional: unset leaves `out` empty,
/// value calls `read_value(in.getValue(), out)`. A union member this version
/// doesn't know is errc::invalid_value.
template <class Group, class Value, class ReadValue>
caf::error read_optional(Group in, caf::optional<Value>& out, const char* where,
                         ReadValue read_value) {
  out = caf::none;
  if (in.isUnset())
    return {};
  if (!in.isValue())
    return invalid(where, "unknown union member #"
                              + std::to_string(static_cast<int>(in.which())));
  Value value{};
  if (auto err = read_value(in.getValue(), value))
    return err;
  out = std::move(value);
  return {};
}

/// read_value for read_optional: a primitive taken as is.
struct plain {
  template <class In, class Out>
  caf::error operator()(In in, Out& out) const {
    out = static_cast<Out>(in);
    return {};
  }
};

} // namespace

// -- admin.capnp --------------------------------------------------------------

void write(schema::TreeNode::Builder out, const tree_node& x) {
  if (!x.name.empty())
    out.setName(as_text(x.name));
  out.setKind(to_wire<schema::ChildKind>(x.kind));
  out.setState(to_wire<schema::ChildState>(x.state));
  out.setRestart(to_wire<schema::RestartType>(x.restart));
  out.setStrategy(to_wire<schema::Strategy>(x.strat));
  out.setRestarts(x.restarts);
  out.setUptimeMs(x.uptime_ms);
  if (!x.last_exit.empty())
    out.setLastExit(as_text(x.last_exit));
  if (!x.children.empty())
    write_list(out.initChildren(x.children.size()), x.children);
}

// Recursion depth is bounded by the reader's nesting limit (bytes) or the
// JSON depth limit (JSON).
caf::error read(schema::TreeNode::Reader in, tree_node& x, read_context& ctx) {
  x.name = to_std(in.getName());
  DROVER_TRY(read_enum(in.getKind(), x.kind, "TreeNode.kind"));
  DROVER_TRY(read_enum(in.getState(), x.state, "TreeNode.state"));
  DROVER_TRY(read_enum(in.getRestart(), x.restart, "TreeNode.restart"));
  DROVER_TRY(read_enum(in.getStrategy(), x.strat, "TreeNode.strategy"));
  x.restarts = in.getRestarts();
  x.uptime_ms = in.getUptimeMs();
  x.last_exit = to_std(in.getLastExit());
  return read_list(in.getChildren(), x.children, "TreeNode.children", ctx);
}

void write(schema::TreeSnapshot::Builder out, const tree_snapshot& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  out.setTakenAtMs(x.taken_at_ms);
  write(out.initRoot(), x.root);
}

caf::error read(schema::TreeSnapshot::Reader in, tree_snapshot& x,
                read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.taken_at_ms = in.getTakenAtMs();
  return read(in.getRoot(), x.root, ctx);
}

// -- job_api.capnp ------------------------------------------------------------

void write(schema::SubmitRequest::Builder out, const submit_request& x) {
  if (!x.type.empty())
    out.setType(as_text(x.type));
  if (!x.input.empty())
    out.setInput(as_text(x.input));
  // Unset optional members stay as a zeroed message has them: `unset`.
  if (x.priority)
    out.getPriority().setValue(int_to_wire<schema::Priority>(*x.priority));
  if (x.run_at)
    out.getRunAt().setValue(as_text(*x.run_at));
  if (x.delay_ms)
    out.getDelayMs().setValue(*x.delay_ms);
  if (x.max_attempts)
    out.getMaxAttempts().setValue(*x.max_attempts);
  if (x.timeout_ms)
    out.getTimeoutMs().setValue(*x.timeout_ms);
  if (!x.idempotency_key.empty())
    out.setIdempotencyKey(as_text(x.idempotency_key));
  if (!x.tenant.empty())
    out.setTenant(as_text(x.tenant));
  if (!x.callback_url.empty())
    out.setCallbackUrl(as_text(x.callback_url));
  if (!x.resources.empty())
    write_list(out.initResources(x.resources.size()), x.resources);
  if (x.backoff)
    write(out.getBackoff().initValue(), *x.backoff);
  if (!x.rate_limit_key.empty())
    out.setRateLimitKey(as_text(x.rate_limit_key));
  if (!x.breaker_key.empty())
    out.setBreakerKey(as_text(x.breaker_key));
  if (!x.concurrency_key.empty())
    out.setConcurrencyKey(as_text(x.concurrency_key));
  if (x.concurrency_limit)
    out.getConcurrencyLimit().setValue(*x.concurrency_limit);
  write_texts(x.rate_limit_keys,
              [&](unsigned n) { return out.initRateLimitKeys(n); });
}

// Types and enum values only: ranges and consistency (max_attempts >= 1,
// run_at xor delay, key lengths) are prepare_spec's (runtime/submit.hpp),
// which answers the client with a specific error.
caf::error read(schema::SubmitRequest::Reader in, submit_request& x,
                read_context& ctx) {
  x.type = to_std(in.getType());
  x.input = to_std(in.getInput());
  DROVER_TRY(read_optional(
      in.getPriority(), x.priority, "SubmitRequest.priority",
      [](schema::Priority value, int32_t& out) {
        return read_int_enum<priority>(value, out, "SubmitRequest.priority");
      }));
  DROVER_TRY(read_optional(in.getRunAt(), x.run_at, "SubmitRequest.runAt",
                           [](capnp::Text::Reader value, std::string& out) {
                             out = to_std(value);
                             return caf::error{};
                           }));
  DROVER_TRY(read_optional(in.getDelayMs(), x.delay_ms, "SubmitRequest.delayMs",
                           plain{}));
  DROVER_TRY(read_optional(in.getMaxAttempts(), x.max_attempts,
                           "SubmitRequest.maxAttempts", plain{}));
  DROVER_TRY(read_optional(in.getTimeoutMs(), x.timeout_ms,
                           "SubmitRequest.timeoutMs", plain{}));
  x.idempotency_key = to_std(in.getIdempotencyKey());
  x.tenant = to_std(in.getTenant());
  x.callback_url = to_std(in.getCallbackUrl());
  DROVER_TRY(read_list(in.getResources(), x.resources,
                       "SubmitRequest.resources", ctx));
  DROVER_TRY(read_optional(
      in.getBackoff(), x.backoff, "SubmitRequest.backoff",
      [&ctx](schema::BackoffPolicy::Reader value, backoff_policy& out) {
        return read(value, out, ctx);
      }));
  x.rate_limit_key = to_std(in.getRateLimitKey());
  x.breaker_key = to_std(in.getBreakerKey());
  x.concurrency_key = to_std(in.getConcurrencyKey());
  DROVER_TRY(read_optional(in.getConcurrencyLimit(), x.concurrency_limit,
                           "SubmitRequest.concurrencyLimit", plain{}));
  // Counted here, checked (at most four) by prepare_spec.
  auto keys = in.getRateLimitKeys();
  DROVER_TRY(ctx.charge(keys.size(), "SubmitRequest.rateLimitKeys"));
  for (auto k : keys)
    x.rate_limit_keys.push_back(to_std(k));
  return {};
}

void write(schema::JobQuery::Builder out, const job_query& x) {
  // -1 = any status = unset; anything else is written as a value.
  if (x.status != -1)
    out.getStatus().setValue(int_to_wire<schema::JobStatus>(x.status));
  out.setDeadLettered(x.dead_lettered);
  if (!x.tenant.empty())
    out.setTenant(as_text(x.tenant));
  if (!x.type.empty())
    out.setType(as_text(x.type));
  if (!x.after.empty())
    out.setAfter(as_text(x.after));
  out.setLimit(x.limit);
}

// The page size is the store's to check (it answers with a specific error).
caf::error read(schema::JobQuery::Reader in, job_query& x, read_context&) {
  caf::optional<int32_t> status;
  DROVER_TRY(read_optional(in.getStatus(), status, "JobQuery.status",
                           [](schema::JobStatus value, int32_t& out) {
                             return read_int_enum<job_status>(
                                 value, out, "JobQuery.status");
                           }));
  x.status = status ? *status : -1;
  x.dead_lettered = in.getDeadLettered();
  x.tenant = to_std(in.getTenant());
  x.type = to_std(in.getType());
  x.after = to_std(in.getAfter());
  x.limit = in.getLimit();
  return {};
}

namespace {

// Per-priority arrays (index = Priority ordinal: high, normal, low).

template <class Builder, class T>
void write_per_priority(Builder out, const std::array<T, 3>& x) {
  out.setHigh(x[0]);
  out.setNormal(x[1]);
  out.setLow(x[2]);
}

template <class Reader, class T>
void read_per_priority(Reader in, std::array<T, 3>& x) {
  x = {in.getHigh(), in.getNormal(), in.getLow()};
}

} // namespace

void write(schema::QueueStats::Builder out, const queue_stats& x) {
  // All-zero arrays stay absent, which reads as all zeros.
  if (x.depth != std::array<uint64_t, 3>{})
    write_per_priority(out.initDepth(), x.depth);
  if (x.oldest_age_ms != std::array<int64_t, 3>{})
    write_per_priority(out.initOldestAgeMs(), x.oldest_age_ms);
  if (x.dispatched != std::array<uint64_t, 3>{})
    write_per_priority(out.initDispatched(), x.dispatched);
  out.setDelayed(x.delayed);
  out.setRunning(x.running);
  out.setIdleWorkers(x.idle_workers);
  out.setCompleted(x.completed);
  out.setFailed(x.failed);
  out.setCancelled(x.cancelled);
  out.setRetried(x.retried);
  out.setSinceMs(x.since_ms);
  out.setAdmissionInFlight(x.admission_in_flight);
  out.setAdmissionMemoryBytes(x.admission_memory_bytes);
  out.setAdmissionMemoryLimitBytes(x.admission_memory_limit_bytes);
  out.setAdmissionRefused(x.admission_refused);
  auto histogram = [](auto h, const latency_histogram& v) {
    auto counts = h.initCounts(static_cast<unsigned>(v.counts.size()));
    for (size_t i = 0; i < v.counts.size(); ++i)
      counts.set(static_cast<unsigned>(i), v.counts[i]);
    h.setSumMs(v.sum_ms);
  };
  if (!x.start_latency.counts.empty())
    histogram(out.initStartLatency(), x.start_latency);
  if (!x.run_time.counts.empty())
    histogram(out.initRunTime(), x.run_time);
  if (!x.by_type.empty()) {
    auto list = out.initByType(static_cast<unsigned>(x.by_type.size()));
    for (size_t i = 0; i < x.by_type.size(); ++i) {
      const auto& t = x.by_type[i];
      auto o = list[static_cast<unsigned>(i)];
      o.setResourceClass(as_text(t.resource_class));
      o.setJobType(as_text(t.job_type));
      o.setReady(t.ready);
      o.setDelayed(t.delayed);
      o.setRunning(t.running);
      o.setOldestAgeMs(t.oldest_age_ms);
      o.setDispatched(t.dispatched);
      o.setCompleted(t.completed);
      o.setArrivalsPerSecond(t.arrivals_per_second);
      o.setCompletionsPerSecond(t.completions_per_second);
      o.setMeanRunMs(t.mean_run_ms);
      o.setRecommendedSlots(t.recommended_slots);
    }
  }
  if (!x.by_partition.empty()) {
    auto list
        = out.initByPartition(static_cast<unsigned>(x.by_partition.size()));
    for (size_t i = 0; i < x.by_partition.size(); ++i) {
      auto o = list[static_cast<unsigned>(i)];
      o.setPartition(x.by_partition[i].partition);
      o.setWaiting(x.by_partition[i].waiting);
      o.setRunning(x.by_partition[i].running);
    }
  }
}

caf::error read(schema::QueueStats::Reader in, queue_stats& x,
                read_context& ctx) {
  read_per_priority(in.getDepth(), x.depth);
  read_per_priority(in.getOldestAgeMs(), x.oldest_age_ms);
  for (auto age : x.oldest_age_ms)
    DROVER_TRY(check_non_negative(age, "QueueStats.oldestAgeMs"));
  read_per_priority(in.getDispatched(), x.dispatched);
  x.delayed = in.getDelayed();
  x.running = in.getRunning();
  x.idle_workers = in.getIdleWorkers();
  x.completed = in.getCompleted();
  x.failed = in.getFailed();
  x.cancelled = in.getCancelled();
  x.retried = in.getRetried();
  x.since_ms = in.getSinceMs();
  DROVER_TRY(check_non_negative(x.since_ms, "QueueStats.sinceMs"));
  x.admission_in_flight = in.getAdmissionInFlight();
  x.admission_memory_bytes = in.getAdmissionMemoryBytes();
  x.admission_memory_limit_bytes = in.getAdmissionMemoryLimitBytes();
  x.admission_refused = in.getAdmissionRefused();
  auto histogram
      = [](auto h, latency_histogram& v, const char* what) -> caf::error {
    auto counts = h.getCounts();
    if (counts.size() != 0 && counts.size() != latency_bounds_ms.size() + 1)
      return invalid(what, "expected "
                               + std::to_string(latency_bounds_ms.size() + 1)
                               + " bucket counts");
    v.counts.clear();
    for (auto c : counts)
      v.counts.push_back(c);
    v.sum_ms = h.getSumMs();
    return {};
  };
  DROVER_TRY(histogram(in.getStartLatency(), x.start_latency,
                       "QueueStats.startLatency"));
  DROVER_TRY(histogram(in.getRunTime(), x.run_time, "QueueStats.runTime"));
  auto types = in.getByType();
  if (types.size() > 10000)
    return invalid("QueueStats.byType", "more than 10,000 entries");
  DROVER_TRY(ctx.charge(types.size(), "QueueStats.byType"));
  x.by_type.clear();
  x.by_type.reserve(types.size());
  for (auto t : types) {
    type_figures f;
    f.resource_class = to_std(t.getResourceClass());
    f.job_type = to_std(t.getJobType());
    f.ready = t.getReady();
    f.delayed = t.getDelayed();
    f.running = t.getRunning();
    f.oldest_age_ms = t.getOldestAgeMs();
    DROVER_TRY(check_non_negative(f.oldest_age_ms, "TypeFigures.oldestAgeMs"));
    f.dispatched = t.getDispatched();
    f.completed = t.getCompleted();
    f.arrivals_per_second = t.getArrivalsPerSecond();
    f.completions_per_second = t.getCompletionsPerSecond();
    f.mean_run_ms = t.getMeanRunMs();
    for (auto [v, what] :
         {std::pair{f.arrivals_per_second, "TypeFigures.arrivalsPerSecond"},
          {f.completions_per_second, "TypeFigures.completionsPerSecond"},
          {f.mean_run_ms, "TypeFigures.meanRunMs"}})
      if (!std::isfinite(v) || v < 0)
        return invalid(what, "must be a finite number >= 0");
    if (f.mean_run_ms > 1e12 || f.arrivals_per_second > 1e9
        || f.completions_per_second > 1e9)
      return invalid("TypeFigures", "a rate or run time out of range");
    f.recommended_slots = t.getRecommendedSlots();
    if (f.recommended_slots > 1'000'000)
      return invalid("TypeFigures.recommendedSlots", "more than 1,000,000");
    x.by_type.push_back(std::move(f));
  }
  auto parts = in.getByPartition();
  if (parts.size() > static_cast<unsigned>(max_partitions))
    return invalid("QueueStats.byPartition", "more entries than partitions");
  DROVER_TRY(ctx.charge(parts.size(), "QueueStats.byPartition"));
  x.by_partition.clear();
  x.by_partition.reserve(parts.size());
  for (auto p : parts) {
    if (p.getPartition() < 0 || p.getPartition() >= max_partitions)
      return invalid("PartitionFigures.partition", "out of range");
    x.by_partition.push_back(
        {p.getPartition(), p.getWaiting(), p.getRunning()});
  }
  return {};
}

} // namespace drover::detail
