#include "runtime/detail/config_admission.hpp"

#include "runtime/errors.hpp"

#include <cstdlib>

#include <boost/program_options.hpp>

namespace po = boost::program_options;

namespace drover::detail {

namespace {

constexpr int64_t max_count = int64_t{1} << 40;

caf::error bad(std::string what) {
  return make_error(errc::bad_config, std::move(what));
}

} // namespace

po::options_description admission_options(admission_raw& raw) {
  po::options_description d{
      "admission control and concurrency limits (coordinators, docs/jobs.md)"};
  d.add_options()("admission-queue-memory-mb", po::value(&raw.memory_mb),
                  "bound on the estimated memory of queued work (waiting "
                  "jobs and submissions in flight), MiB; beyond it submits "
                  "get 503 with Retry-After. 0 = no bound (default 1024)")(
      "admission-store-backlog", po::value(&raw.store_backlog),
      "most submissions sent to the store and not answered yet; beyond it "
      "(the store lags) submits get 503 with Retry-After. 0 = no bound "
      "(default 50000)")(
      "admission-tenant-waiting", po::value(&raw.tenant_waiting),
      "most waiting jobs (queued, scheduled, retrying) per tenant; beyond "
      "it the tenant's submits get 429. 0 = no cap (default)")(
      "admission-tenant-cap", po::value(&raw.tenant_caps)->composing(),
      "a tenant's own cap, tenant=N (0 = none for it), replacing "
      "--admission-tenant-waiting (repeatable)")(
      "admission-partition-waiting", po::value(&raw.partition_waiting),
      "most waiting jobs per partition; beyond it submits into that "
      "partition get 503. 0 = no cap (default)")(
      "concurrency-limit", po::value(&raw.concurrency)->composing(),
      "at most N attempts of a job type running at once: TYPE=N across the "
      "cluster, TYPE=N/tenant per tenant (repeatable)")(
      "rate-limit", po::value(&raw.rate_limits)->composing(),
      "a token bucket jobs name as rate_limit_key: NAME:rate=R[,burst=B], R "
      "tokens per second, B at most (default max(1, R)); a job waits queued "
      "for its token (repeatable)")(
      "circuit-breaker", po::value(&raw.breakers)->composing(),
      "a breaker jobs name as breaker_key: NAME:failures=N and/or "
      "ratio=R,window=W[,min_calls=M], then [,cooldown=S][,probes=P]"
      "[,codes=a|b]; open after N failed attempts in a row (of those codes; "
      "default any) or when a share R of the attempts that ended in the "
      "last W seconds failed (once M ended, default 10), S seconds open "
      "(default 30), then P probe jobs (default 1) (repeatable)")(
      "tenant-weight", po::value(&raw.tenant_weights)->composing(),
      "a tenant's fair share, tenant=W (0.01 to 1000; default 1): while "
      "tenants have ready jobs of one type and priority, each gets them "
      "taken in proportion to its weight (repeatable)");
  return d;
}

caf::error apply_admission_options(const admission_raw& raw, node_config& cfg) {
  constexpr auto unset = admission_raw::unset;
  bool given = raw.memory_mb != unset || raw.store_backlog != unset
               || raw.tenant_waiting != unset || raw.partition_waiting != unset
               || !raw.tenant_caps.empty();
  if (given && !roles_of(cfg).coordinator)
    return bad("admission options are for coordinators (the queue that "
               "admits submissions runs there)");
  if (!raw.concurrency.empty() && !roles_of(cfg).coordinator)
    return bad("--concurrency-limit is for coordinators (the queue that "
               "dispatches runs there)");
  if ((!raw.rate_limits.empty() || !raw.breakers.empty())
      && !roles_of(cfg).coordinator)
    return bad("--rate-limit and --circuit-breaker are for coordinators (the "
               "queue that dispatches runs there)");
  if (!raw.tenant_weights.empty() && !roles_of(cfg).coordinator)
    return bad("--tenant-weight is for coordinators (the queue that "
               "dispatches runs there)");
  for (const auto& item : raw.tenant_weights) {
    auto eq = item.find('=');
    auto tenant = item.substr(0, eq);
    auto w = eq == std::string::npos ? std::string{} : item.substr(eq + 1);
    if (eq == std::string::npos || tenant.size() > 128)
      return bad("tenant-weight must be tenant=W, got '" + item + "'");
    char* end = nullptr;
    double weight
        = w.empty() || w.size() > 12
                  || w.find_first_not_of("0123456789.") != std::string::npos
              ? -1
              : std::strtod(w.c_str(), &end);
    if (weight < 0.01 || weight > 1000 || end == nullptr || *end != '\0')
      return bad("tenant-weight: '" + w
                 + "' is not a weight within [0.01, 1000] (in '" + item + "')");
    if (!cfg.tenant_weights.emplace(tenant, weight).second)
      return bad("tenant-weight: tenant '" + tenant + "' is given twice");
  }
  for (const auto& item : raw.rate_limits) {
    auto r = parse_rate_limit(item);
    if (!r)
      return std::move(r.error());
    if (!cfg.flow.rates.emplace(r->first, r->second).second)
      return bad("rate-limit: '" + r->first + "' is given twice");
  }
  for (const auto& item : raw.breakers) {
    auto b = parse_breaker(item);
    if (!b)
      return std::move(b.error());
    if (!cfg.flow.breakers.emplace(b->first, b->second).second)
      return bad("circuit-breaker: '" + b->first + "' is given twice");
  }
  for (const auto& item : raw.concurrency) {
    auto eq = item.find('=');
    auto type = item.substr(0, eq);
    if (eq == std::string::npos || type.empty() || type.size() > 128)
      return bad("concurrency-limit must be TYPE=N or TYPE=N/tenant, got '"
                 + item + "'");
    auto rest = item.substr(eq + 1);
    concurrency_limit limit;
    if (auto slash = rest.find('/'); slash != std::string::npos) {
      if (rest.substr(slash + 1) != "tenant")
        return bad("concurrency-limit: '" + rest.substr(slash + 1)
                   + "' is not a scope (only /tenant), in '" + item + "'");
      limit.per_tenant = true;
      rest = rest.substr(0, slash);
    }
    if (rest.empty() || rest.size() > 7
        || rest.find_first_not_of("0123456789") != std::string::npos
        || std::stol(rest) < 1 || std::stol(rest) > 1000000)
      return bad("concurrency-limit: '" + rest
                 + "' is not a count within [1, 1000000] (in '" + item + "')");
    limit.limit = static_cast<uint32_t>(std::stol(rest));
    if (!cfg.concurrency.emplace(type, limit).second)
      return bad("concurrency-limit: job type '" + type + "' is given twice");
  }
  auto count = [](int64_t v, const char* name, uint64_t& out) -> caf::error {
    if (v == unset)
      return caf::none; // not given: the default stays
    if (v < 0 || v > max_count)
      return bad(std::string{name} + " must be within [0, 1099511627776]");
    out = static_cast<uint64_t>(v);
    return caf::none;
  };
  auto& a = cfg.admission;
  if (raw.memory_mb != unset
      && (raw.memory_mb < 0 || raw.memory_mb > 1024 * 1024))
    return bad("admission-queue-memory-mb must be within [0, 1048576]");
  if (raw.memory_mb != unset)
    a.memory_bytes = static_cast<uint64_t>(raw.memory_mb) * 1024 * 1024;
  if (auto err
      = count(raw.store_backlog, "admission-store-backlog", a.store_backlog))
    return err;
  if (auto err
      = count(raw.tenant_waiting, "admission-tenant-waiting", a.tenant_waiting))
    return err;
  if (auto err = count(raw.partition_waiting, "admission-partition-waiting",
                       a.partition_waiting))
    return err;
  for (const auto& item : raw.tenant_caps) {
    auto eq = item.find('=');
    auto tenant = item.substr(0, eq);
    if (eq == std::string::npos || tenant.empty() || tenant.size() > 128)
      return bad("admission-tenant-cap must be tenant=N, got '" + item + "'");
    auto digits = item.substr(eq + 1);
    if (digits.empty() || digits.size() > 13
        || digits.find_first_not_of("0123456789") != std::string::npos)
      return bad("admission-tenant-cap: '" + digits
                 + "' is not a count within [0, 1099511627776] (in '" + item
                 + "')");
    auto n = std::stoll(digits);
    if (n > max_count)
      return bad("admission-tenant-cap: " + digits + " is above 1099511627776");
    if (!a.tenant_waiting_caps.emplace(tenant, static_cast<uint64_t>(n)).second)
      return bad("admission-tenant-cap: tenant '" + tenant
                 + "' is given twice");
  }
  return caf::none;
}

} // namespace drover::detail
