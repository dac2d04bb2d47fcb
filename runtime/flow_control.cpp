// Flow control's limiters and breakers (runtime/flow_control.hpp): token
// buckets, the gate a job passes before dispatch, takes mid-attempt and
// outcomes. Its options' text is read in flow_settings.cpp; its run-time
// settings and views are in flow_control_views.cpp.

#include "runtime/flow_control.hpp"

#include "runtime/detail/flow_format.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace drover {

using flow_detail::format_number;

// -- token_bucket ---------------------------------------------------------

token_bucket::token_bucket(rate_limit limit, int64_t now_ms)
    : limit_(limit), last_ms_(now_ms) {}

void token_bucket::refill(int64_t now_ms) {
  if (now_ms <= last_ms_)
    return; // the clock stood still or stepped back: no tokens from it
  tokens_ = std::min(cap(), tokens_ + (now_ms - last_ms_) * rate() / 1000.0);
  last_ms_ = now_ms;
}

bool token_bucket::take(int64_t now_ms) {
  refill(now_ms);
  if (tokens_ < 1.0)
    return false;
  tokens_ -= 1.0;
  ++granted_;
  return true;
}

uint32_t token_bucket::take_up_to(uint32_t n, int64_t now_ms) {
  refill(now_ms);
  auto whole = static_cast<uint32_t>(
      std::min(std::floor(tokens_), static_cast<double>(n)));
  tokens_ -= whole;
  granted_ += whole;
  return whole;
}

void token_bucket::reconfigure(rate_limit limit, int64_t now_ms) {
  refill(now_ms);
  limit_ = std::move(limit);
  tokens_ = std::min(tokens_, cap());
}

void token_bucket::set_share(double share, int64_t now_ms) {
  refill(now_ms); // what accrued so far, at the old share
  share_ = std::clamp(share, 0.0, 1.0);
  tokens_ = std::min(tokens_, cap());
}

double token_bucket::tokens(int64_t now_ms) {
  refill(now_ms);
  return tokens_;
}

int64_t token_bucket::next_token_ms(int64_t now_ms) {
  refill(now_ms);
  if (tokens_ >= 1.0)
    return now_ms;
  if (rate() <= 0)
    return now_ms + 1000; // no share (no partition): look again later
  auto ms = (1.0 - tokens_) * 1000.0 / rate();
  return now_ms + static_cast<int64_t>(std::ceil(ms));
}

// -- flow_control -----------------------------------------------------------

flow_control::flow_control(flow_limits limits, int64_t now_ms)
    : started_ms_(now_ms) {
  for (auto& [key, r] : limits.rates) {
    buckets_.emplace(key, token_bucket{r, now_ms});
    changes_.push_back({now_ms, "rate_limit", key, "active",
                        format_number(r.per_second) + "/s, burst "
                            + format_number(r.burst)
                            + "; the bucket starts empty"});
  }
  // A breaker's start is recorded once its last state is known
  // (restore_breakers).
  for (auto& [key, b] : limits.breakers)
    breakers_.emplace(key, circuit_breaker{b});
}

caf::error flow_control::check(const std::vector<std::string>& rate_keys,
                               const std::string& breaker_key,
                               const std::string& tenant) const {
  auto allowed = [&](const std::vector<std::string>& tenants) {
    return tenants.empty()
           || std::find(tenants.begin(), tenants.end(), tenant)
                  != tenants.end();
  };
  // Undeclared and not allowed read the same: a tenant learns nothing of
  // other tenants' keys.
  for (const auto& rate_key : rate_keys) {
    auto i = buckets_.find(rate_key);
    if (i == buckets_.end() || !allowed(i->second.limit().tenants))
      return make_error(errc::invalid_request,
                        "rate_limit_key '" + rate_key.substr(0, 128)
                            + "' is not declared on the coordinator for this "
                              "tenant (--rate-limit NAME:rate=R)");
  }
  if (!breaker_key.empty()) {
    auto i = breakers_.find(breaker_key);
    if (i == breakers_.end() || !allowed(i->second.config().tenants))
      return make_error(errc::invalid_request,
                        "breaker_key '" + breaker_key.substr(0, 128)
                            + "' is not declared on the coordinator for this "
                              "tenant (--circuit-breaker NAME:failures=N or "
                              "NAME:ratio=R,window=S)");
  }
  if (flows_.size() >= max_flows
      && (!rate_keys.empty() || !breaker_key.empty())) {
    if (numbers_.count({key_set(rate_keys), breaker_key}) == 0)
      return make_error(errc::conflict,
                        "too many distinct sets of rate limits and breakers "
                        "named by jobs (at most "
                            + std::to_string(max_flows) + "); name one in use");
  }
  return caf::none;
}

uint32_t flow_control::intern(const std::vector<std::string>& rate_keys,
                              const std::string& breaker_key) {
  // A key no longer declared (a recovered job, the configuration changed)
  // limits nothing: said once per key.
  auto say = [&](const std::string& key, const char* kind) {
    if (undeclared_.size() < 1000 && undeclared_.insert(key).second)
      log::warn("flow",
                "a queued job names a key no longer declared: it is "
                "not limited",
                {{"key", key}, {"kind", kind}});
  };
  flow_keys k;
  for (const auto& r : key_set(rate_keys)) {
    if (buckets_.count(r) == 0)
      say(r, "rate_limit");
    else
      k.rates.push_back(r);
  }
  if (!breaker_key.empty()) {
    if (breakers_.count(breaker_key) == 0)
      say(breaker_key, "breaker");
    else
      k.breaker = breaker_key;
  }
  if (k.rates.empty() && k.breaker.empty())
    return 0;
  auto id = std::make_pair(k.rates, k.breaker);
  auto i = numbers_.find(id);
  if (i != numbers_.end())
    return i->second;
  flows_.push_back(std::move(k));
  auto n = static_cast<uint32_t>(flows_.size());
  numbers_.emplace(std::move(id), n);
  return n;
}

std::optional<flow_wait> flow_control::gate(uint32_t flow, int64_t now_ms,
                                            size_t taken) {
  if (flow == 0 || flow > flows_.size())
    return std::nullopt;
  const auto& bk = flows_[flow - 1].breaker;
  if (!bk.empty()) {
    if (breakers_held_)
      return flow_wait{"b" + bk, 0}; // until its state is restored
    auto& b = breakers_.at(bk);
    if (!b.may_run(now_ms, changes_, bk))
      return flow_wait{"b" + bk, b.half_open_at()};
    // A half-open breaker's probes promised to jobs woken for them.
    if (b.state() == breaker_state::half_open
        && b.probes_running() + pending("b" + bk) >= b.config().probes)
      return flow_wait{"b" + bk, 0};
  }
  // A token of each of its rate limits it does not hold yet, in order.
  const auto& rates = flows_[flow - 1].rates;
  for (size_t i = taken; i < rates.size(); ++i) {
    auto& bucket = buckets_.at(rates[i]);
    // Tokens promised to jobs woken for them are not for this one.
    auto promised = static_cast<double>(pending("r" + rates[i]));
    if (bucket.tokens(now_ms) - promised < 1.0)
      return flow_wait{"r" + rates[i], bucket.next_token_ms(now_ms), i + 1};
  }
  return std::nullopt;
}

void flow_control::take_rates(uint32_t flow, int64_t now_ms, size_t from,
                              size_t to) {
  if (flow == 0 || flow > flows_.size())
    return;
  const auto& rates = flows_[flow - 1].rates;
  for (size_t i = from; i < to && i < rates.size(); ++i)
    buckets_.at(rates[i]).take(now_ms);
}

std::optional<flow_wait> flow_control::queued_gate(
    uint32_t flow, size_t taken,
    const std::function<bool(const std::string&)>& has_line) const {
  if (flow == 0 || flow > flows_.size())
    return std::nullopt;
  const auto& f = flows_[flow - 1];
  if (!f.breaker.empty() && has_line("b" + f.breaker))
    return flow_wait{"b" + f.breaker, 0};
  for (size_t i = taken; i < f.rates.size(); ++i)
    if (has_line("r" + f.rates[i]))
      return flow_wait{"r" + f.rates[i], 0, i + 1};
  return std::nullopt;
}

std::vector<std::string> flow_control::key_set(std::vector<std::string> keys) {
  keys.erase(std::remove(keys.begin(), keys.end(), std::string{}), keys.end());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

uint64_t flow_control::take(uint32_t flow, int64_t now_ms, size_t taken) {
  if (flow == 0 || flow > flows_.size())
    return 0;
  const auto& f = flows_[flow - 1];
  take_rates(flow, now_ms, taken, f.rates.size());
  return f.breaker.empty() ? 0 : breakers_.at(f.breaker).admit();
}

void flow_control::set_share(double share, int64_t now_ms) {
  share_ = std::clamp(share, 0.0, 1.0);
  for (auto& [key, b] : buckets_)
    b.set_share(share_, now_ms);
}

caf::error flow_control::set_rate(const std::string& key, rate_limit r,
                                  int64_t now_ms) {
  auto i = buckets_.find(key);
  if (i != buckets_.end()) {
    i->second.reconfigure(std::move(r), now_ms);
    return caf::none;
  }
  if (buckets_.size() >= max_keys)
    return make_error(errc::conflict,
                      "at most " + std::to_string(max_keys) + " rate limits");
  buckets_.emplace(key, token_bucket{std::move(r), now_ms})
      .first->second.set_share(share_, now_ms);
  undeclared_.erase(key);
  return caf::none;
}

caf::error flow_control::set_breaker(const std::string& key, breaker_config b) {
  auto i = breakers_.find(key);
  if (i != breakers_.end()) {
    i->second.reconfigure(std::move(b));
    return caf::none;
  }
  if (breakers_.size() >= max_keys)
    return make_error(errc::conflict,
                      "at most " + std::to_string(max_keys) + " breakers");
  breakers_.emplace(key, circuit_breaker{std::move(b)});
  undeclared_.erase(key);
  return caf::none;
}

caf::expected<token_grant>
flow_control::take_tokens(uint32_t flow, uint32_t wanted, int64_t now_ms) {
  if (flow == 0 || flow > flows_.size() || flows_[flow - 1].rates.empty())
    return make_error(errc::invalid_request,
                      "the job names no rate limit (rate_limit_key) to take "
                      "tokens of");
  const auto& keys = flows_[flow - 1].rates;
  token_grant g;
  if (now_ms < started_ms_ + token_block_ms) {
    g.retry_ms = started_ms_ + token_block_ms - now_ms;
    return g;
  }
  // A token of each of its limits per token taken: as many as the
  // scarcest allows, at most one block of the slowest.
  auto most = static_cast<double>(std::max<uint32_t>(wanted, 1));
  for (const auto& key : keys) {
    auto& bucket = buckets_.at(key);
    auto block = std::max<double>(
        1.0, std::floor(bucket.rate() * token_block_ms / 1000.0));
    // Tokens promised to parked jobs woken for them are theirs: a running
    // job asking at each next token must not starve dispatch.
    auto promised = static_cast<double>(pending("r" + key));
    auto spare = std::max(0.0, std::floor(bucket.tokens(now_ms) - promised));
    most = std::min({most, block, spare});
  }
  auto n = wanted == 0 ? 0u : static_cast<uint32_t>(most);
  for (const auto& key : keys)
    buckets_.at(key).take_up_to(n, now_ms); // each has n spare (above)
  g.granted = n;
  if (g.granted < wanted) {
    // When a token beyond the promised ones is there in every bucket
    // (now, if the block's cap cut this answer short).
    for (const auto& key : keys) {
      auto& bucket = buckets_.at(key);
      auto need = static_cast<double>(pending("r" + key)) + 1.0
                  - bucket.tokens(now_ms);
      g.retry_ms = std::max<int64_t>(
          {g.retry_ms, 1,
           static_cast<int64_t>(
               std::ceil(need * 1000.0 / std::max(bucket.rate(), 0.001)))});
    }
  }
  return g;
}

void flow_control::outcome(uint32_t flow, uint64_t probe, bool success,
                           const std::string& code, int64_t now_ms) {
  if (flow == 0 || flow > flows_.size())
    return;
  const auto& bk = flows_[flow - 1].breaker;
  if (bk.empty())
    return;
  auto& b = breakers_.at(bk);
  bool counted = !success && b.counts(code);
  b.outcome(probe, success, counted, now_ms, changes_, bk, code);
}

std::vector<std::string> flow_control::gates_of(uint32_t flow) const {
  std::vector<std::string> out;
  if (flow == 0 || flow > flows_.size())
    return out;
  const auto& f = flows_[flow - 1];
  if (!f.breaker.empty())
    out.push_back("b" + f.breaker);
  for (const auto& rk : f.rates)
    out.push_back("r" + rk);
  return out;
}

size_t flow_control::pending(const std::string& gate) const {
  auto i = woken_.find(gate);
  return i == woken_.end() ? 0 : i->second;
}

void flow_control::woke(const std::string& gate, size_t n) {
  if (n > 0)
    woken_[gate] += n;
}

void flow_control::unwoke(const std::string& gate) {
  auto i = woken_.find(gate);
  if (i == woken_.end())
    return;
  if (i->second <= 1)
    woken_.erase(i);
  else
    --i->second;
}

size_t flow_control::wakeable(const std::string& gate, int64_t now_ms) {
  if (gate.size() < 2)
    return 0;
  auto key = gate.substr(1);
  auto w = woken_.find(gate);
  size_t pending = w == woken_.end() ? 0 : w->second;
  size_t room = 0;
  if (gate[0] == 'r') {
    auto i = buckets_.find(key);
    if (i == buckets_.end())
      return std::numeric_limits<size_t>::max();
    room = static_cast<size_t>(std::floor(i->second.tokens(now_ms)));
  } else {
    auto i = breakers_.find(key);
    if (i == breakers_.end())
      return std::numeric_limits<size_t>::max();
    auto& b = i->second;
    if (breakers_held_ || !b.may_run(now_ms, changes_, key))
      return 0;
    if (b.state() == breaker_state::closed)
      return std::numeric_limits<size_t>::max();
    room = b.config().probes - b.probes_running();
  }
  return room > pending ? room - pending : 0;
}

int64_t flow_control::next_check_ms(const std::string& gate, int64_t now_ms) {
  if (gate.size() < 2)
    return 0;
  if (wakeable(gate, now_ms) > 0)
    return now_ms;
  auto key = gate.substr(1);
  auto w = woken_.find(gate);
  double pending = w == woken_.end() ? 0 : static_cast<double>(w->second);
  if (gate[0] == 'r') {
    auto i = buckets_.find(key);
    if (i == buckets_.end())
      return now_ms;
    auto& b = i->second;
    // The token after those the woken jobs will take; none while they hold
    // the whole burst (each one re-arms when it leaves).
    auto need = pending + 1;
    if (need > b.cap())
      return 0;
    auto ms = (need - b.tokens(now_ms)) * 1000.0 / std::max(b.rate(), 0.001);
    return now_ms + std::max<int64_t>(1, static_cast<int64_t>(std::ceil(ms)));
  }
  auto i = breakers_.find(key);
  if (breakers_held_ || i == breakers_.end())
    return 0;
  return i->second.half_open_at(); // 0 unless open
}

} // namespace drover
