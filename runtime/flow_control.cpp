#include "runtime/flow_control.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <stdexcept>

namespace drover {

namespace {

caf::error bad(const std::string& option, const std::string& item,
               const std::string& why) {
  return make_error(errc::bad_config,
                    option + ": " + why + " (in '" + item + "')");
}

/// `NAME:k=v,k=v` -> name and fields, in order.
caf::expected<
    std::pair<std::string, std::vector<std::pair<std::string, std::string>>>>
split_item(const std::string& option, const std::string& item,
           const char* usage) {
  auto colon = item.find(':');
  auto name = item.substr(0, colon);
  if (colon == std::string::npos || name.empty() || name.size() > 128
      || name.find_first_of(",=| \t") != std::string::npos)
    return bad(option, item, std::string{"expected "} + usage);
  // A name a job can give: no control characters, valid UTF-8.
  for (unsigned char ch : name)
    if (ch < 0x20 || ch == 0x7f)
      return bad(option, item, "the name holds a control character");
  if (valid_utf8(name) != name)
    return bad(option, item, "the name is not valid UTF-8");
  std::vector<std::pair<std::string, std::string>> fields;
  auto rest = item.substr(colon + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    auto comma = rest.find(',', pos);
    auto field = rest.substr(pos, comma == std::string::npos ? std::string::npos
                                                             : comma - pos);
    auto eq = field.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == field.size())
      return bad(option, item, std::string{"expected "} + usage);
    auto k = field.substr(0, eq);
    for (const auto& f : fields)
      if (f.first == k)
        return bad(option, item, "'" + k + "' is given twice");
    fields.emplace_back(k, field.substr(eq + 1));
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return std::make_pair(std::move(name), std::move(fields));
}

/// A plain decimal number within [lo, hi].
bool number_in(const std::string& text, double lo, double hi, double& out) {
  if (text.empty() || text.size() > 16
      || text.find_first_not_of("0123456789.") != std::string::npos
      || std::count(text.begin(), text.end(), '.') > 1 || text[0] == '.'
      || text.back() == '.')
    return false;
  out = std::strtod(text.c_str(), nullptr);
  return std::isfinite(out) && out >= lo && out <= hi;
}

bool count_in(const std::string& text, uint32_t lo, uint32_t hi,
              uint32_t& out) {
  double d = 0;
  if (text.find('.') != std::string::npos || !number_in(text, lo, hi, d))
    return false;
  out = static_cast<uint32_t>(d);
  return true;
}

std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

/// `a|b|c` into `out`: each non-empty, at most 128 bytes, UTF-8 without
/// control characters.
bool split_bars(const std::string& v, std::vector<std::string>& out) {
  size_t pos = 0;
  while (pos <= v.size()) {
    auto bar = v.find('|', pos);
    auto x = v.substr(pos,
                      bar == std::string::npos ? std::string::npos : bar - pos);
    if (x.empty() || x.size() > 128 || valid_utf8(x) != x)
      return false;
    for (unsigned char ch : x)
      if (ch < 0x20 || ch == 0x7f)
        return false;
    out.push_back(std::move(x));
    if (bar == std::string::npos)
      return true;
    pos = bar + 1;
  }
  return true;
}

} // namespace

caf::expected<std::pair<std::string, rate_limit>>
parse_rate_limit(const std::string& item) {
  static constexpr auto option = "rate-limit";
  auto parts = split_item(option, item, "NAME:rate=R[,burst=B][,tenants=a|b]");
  if (!parts)
    return std::move(parts.error());
  rate_limit out;
  bool have_rate = false;
  bool have_burst = false;
  for (const auto& [k, v] : parts->second) {
    if (k == "rate") {
      if (!number_in(v, 0.001, 1e6, out.per_second))
        return bad(option, item,
                   "rate must be a number of tokens per second within "
                   "[0.001, 1000000]");
      have_rate = true;
    } else if (k == "burst") {
      if (!number_in(v, 1, 1e6, out.burst))
        return bad(option, item, "burst must be a number within [1, 1000000]");
      have_burst = true;
    } else if (k == "tenants") {
      if (!split_bars(v, out.tenants))
        return bad(option, item, "tenants must be tenant names separated by |");
    } else {
      return bad(option, item,
                 "'" + k + "' is not a field (rate, burst, tenants)");
    }
  }
  if (!have_rate)
    return bad(option, item, "rate is required");
  if (!have_burst)
    out.burst = std::max(1.0, out.per_second);
  return std::make_pair(std::move(parts->first), out);
}

caf::expected<std::pair<std::string, breaker_config>>
parse_breaker(const std::string& item) {
  static constexpr auto option = "circuit-breaker";
  auto parts = split_item(option, item,
                          "NAME:failures=N and/or ratio=R,window=S"
                          "[,min_calls=M][,cooldown=S][,probes=P][,codes=a|b]"
                          "[,tenants=a|b]");
  if (!parts)
    return std::move(parts.error());
  breaker_config out;
  bool have_failures = false;
  bool have_ratio = false;
  bool have_window = false;
  bool have_min_calls = false;
  for (const auto& [k, v] : parts->second) {
    if (k == "failures") {
      if (!count_in(v, 1, 1000000, out.failures))
        return bad(option, item,
                   "failures must be a count within [1, 1000000]");
      have_failures = true;
    } else if (k == "ratio") {
      if (!number_in(v, 0, 1, out.ratio) || out.ratio <= 0)
        return bad(option, item,
                   "ratio must be the share of failed attempts that opens "
                   "it, a number within (0, 1]");
      have_ratio = true;
    } else if (k == "window") {
      double s = 0;
      if (!number_in(v, 1, 3600, s))
        return bad(option, item, "window must be seconds within [1, 3600]");
      out.window_ms = static_cast<int64_t>(std::llround(s * 1000));
      have_window = true;
    } else if (k == "min_calls") {
      if (!count_in(v, 1, 1000000, out.min_calls))
        return bad(option, item,
                   "min_calls must be a count within [1, 1000000]");
      have_min_calls = true;
    } else if (k == "cooldown") {
      double s = 0;
      if (!number_in(v, 0.1, 86400, s))
        return bad(option, item,
                   "cooldown must be seconds within [0.1, 86400]");
      out.cooldown_ms = static_cast<int64_t>(std::llround(s * 1000));
    } else if (k == "probes") {
      if (!count_in(v, 1, 1000, out.probes))
        return bad(option, item, "probes must be a count within [1, 1000]");
    } else if (k == "codes") {
      size_t pos = 0;
      while (pos <= v.size()) {
        auto bar = v.find('|', pos);
        auto code = v.substr(pos, bar == std::string::npos ? std::string::npos
                                                           : bar - pos);
        if (code.empty() || code.size() > 64
            || code.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
                   != std::string::npos)
          return bad(option, item,
                     "codes must be error codes ([A-Za-z0-9_.-], at most 64 "
                     "bytes) separated by |");
        if (never_counted(code))
          return bad(option, item,
                     "'" + code
                         + "' never counts: a cancel or a lost worker says "
                           "nothing about the downstream");
        out.codes.push_back(code);
        if (bar == std::string::npos)
          break;
        pos = bar + 1;
      }
    } else if (k == "tenants") {
      if (!split_bars(v, out.tenants))
        return bad(option, item, "tenants must be tenant names separated by |");
    } else {
      return bad(option, item,
                 "'" + k
                     + "' is not a field (failures, ratio, window, "
                       "min_calls, cooldown, probes, codes, tenants)");
    }
  }
  if (!have_failures && !have_ratio)
    return bad(option, item,
               "failures=N (in a row) or ratio=R,window=S (a share of "
               "failures over a window) is required");
  if (have_ratio && !have_window)
    return bad(option, item, "ratio needs window=S: the seconds it looks at");
  if (!have_ratio && (have_window || have_min_calls))
    return bad(option, item,
               std::string{have_window ? "window" : "min_calls"}
                   + " goes with ratio=R");
  if (!have_failures)
    out.failures = 0; // only the ratio opens it
  return std::make_pair(std::move(parts->first), std::move(out));
}

std::string control_entry_json(uint64_t sequence, const flow_change& c,
                               int32_t partition, int64_t epoch,
                               const std::string& node) {
  auto secs = static_cast<time_t>(c.at_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char at[40];
  std::snprintf(at, sizeof at, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(c.at_ms % 1000));
  return "{\"sequence\":" + std::to_string(sequence) + ",\"at\":\"" + at
         + "\",\"kind\":" + json_quote(c.kind) + ",\"key\":" + json_quote(c.key)
         + ",\"state\":" + json_quote(c.state) + ",\"detail\":"
         + json_quote(c.detail) + ",\"partition\":" + std::to_string(partition)
         + ",\"epoch\":" + std::to_string(epoch)
         + ",\"node\":" + json_quote(node) + "}";
}

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

void flow_control::apply_configured(const std::string& kind,
                                    const std::vector<std::string>& quads,
                                    int64_t now_ms) {
  for (size_t i = 0; i + 3 < quads.size(); i += 4) {
    if (quads[i + 1] != "configured")
      continue;
    const auto& key = quads[i];
    auto err = set_setting(kind, key, quads[i + 3], now_ms);
    if (err)
      log::warn("flow", "a run-time setting in the control log is skipped",
                {{"kind", kind}, {"key", key}, {"error", describe(err)}});
    else
      log::info("flow",
                "a run-time setting from the control log applies (it wins "
                "over the configuration until set again)",
                {{"kind", kind}, {"key", key}, {"spec", quads[i + 3]}});
  }
}

std::string flow_control::hold_reason(
    const std::vector<std::string>& rate_keys, const std::string& breaker_key,
    const std::vector<size_t>& waiting_at_rate, int64_t now_ms) const {
  if (auto b = breakers_.find(breaker_key); b != breakers_.end()) {
    const auto& br = b->second;
    if (breakers_held_)
      return "its circuit breaker '" + breaker_key
             + "' waits for its last state to be read back";
    if (br.state() == breaker_state::open)
      return "its circuit breaker '" + breaker_key + "' is open (half-opens in "
             + std::to_string(std::max<int64_t>(
                 0, (br.half_open_at() - now_ms + 999) / 1000))
             + " s)";
    if (br.state() == breaker_state::half_open)
      return "its circuit breaker '" + breaker_key
             + "' is half-open: its probe jobs run first";
  }
  for (size_t i = 0; i < rate_keys.size() && i < waiting_at_rate.size(); ++i)
    if (auto r = buckets_.find(rate_keys[i]);
        r != buckets_.end() && waiting_at_rate[i] > 0)
      return "a token of rate limit '" + rate_keys[i] + "' ("
             + format_number(r->second.limit().per_second) + "/s; "
             + std::to_string(waiting_at_rate[i]) + " job(s) wait for one)";
  return {};
}

caf::error flow_control::set_setting(const std::string& kind,
                                     const std::string& key,
                                     const std::string& spec, int64_t now_ms,
                                     bool check_only) {
  static const std::string bad_key
      = "key: 1-128 bytes without ':', ',', '=', '|' or blanks";
  if (key.find(':') != std::string::npos)
    return make_error(errc::invalid_request, bad_key);
  bool rate = kind == "rate_limit";
  if (!rate && kind != "breaker")
    return make_error(errc::invalid_request,
                      "kind must be rate_limit or breaker");
  // One home for the rules: the options' parsers.
  auto item = key + ":" + spec;
  std::optional<std::pair<std::string, rate_limit>> r;
  std::optional<std::pair<std::string, breaker_config>> b;
  caf::error bad;
  if (rate) {
    auto x = parse_rate_limit(item);
    if (x)
      r = std::move(*x);
    else
      bad = std::move(x.error());
  } else {
    auto x = parse_breaker(item);
    if (x)
      b = std::move(*x);
    else
      bad = std::move(x.error());
  }
  if (bad) {
    const auto& ctx = bad.context();
    return make_error(errc::invalid_request, ctx.match_elements<std::string>()
                                                 ? ctx.get_as<std::string>(0)
                                                 : describe(bad));
  }
  if ((rate ? r->first : b->first) != key)
    return make_error(errc::invalid_request, bad_key);
  auto have = rate ? buckets_.count(key) : breakers_.count(key);
  auto size = rate ? buckets_.size() : breakers_.size();
  if (have == 0 && size >= max_keys)
    return make_error(errc::conflict,
                      "at most " + std::to_string(max_keys)
                          + (rate ? " rate limits" : " breakers"));
  if (check_only)
    return caf::none;
  return rate ? set_rate(key, r->second, now_ms) : set_breaker(key, b->second);
}

void flow_control::restore_breakers(const std::vector<std::string>& quads,
                                    bool ok, int64_t wall_now_ms,
                                    int64_t now_ms) {
  breakers_held_ = false;
  if (!ok) {
    for (auto& [key, b] : breakers_)
      b.restore(breaker_state::half_open, now_ms, now_ms, changes_, key,
                "its last state could not be read: probing first");
    return;
  }
  for (size_t i = 0; i + 3 < quads.size(); i += 4) {
    auto b = breakers_.find(quads[i]);
    if (b == breakers_.end())
      continue;
    const auto& state = quads[i + 1];
    int64_t at = 0;
    try {
      at = std::stoll(quads[i + 2]);
    } catch (const std::exception&) {
      continue;
    }
    // Its time on this instance's clock.
    auto local_at = now_ms - std::max<int64_t>(0, wall_now_ms - at);
    auto before = changes_.size();
    if (state == "open")
      b->second.restore(breaker_state::open, local_at, now_ms, changes_,
                        b->first, "open when the last authority stopped");
    else if (state == "half_open")
      b->second.restore(breaker_state::half_open, local_at, now_ms, changes_,
                        b->first,
                        "half-open when the last authority stopped: probing "
                        "again");
    // Recorded with the time it began: restarts more often than the
    // cooldown must not keep a breaker open for good.
    if (changes_.size() > before)
      changes_.back().wall_ms = at;
  }
  for (auto& [key, b] : breakers_)
    if (b.state() == breaker_state::closed)
      changes_.push_back({now_ms, "breaker", key, "closed",
                          "active: " + opening_rule(b.config())});
}

std::vector<flow_change> flow_control::drain_changes() {
  std::vector<flow_change> out;
  out.swap(changes_);
  return out;
}

std::string
flow_control::to_json(int64_t now_ms,
                      const std::map<std::string, size_t>& waiting) {
  auto waiting_at = [&](const std::string& gate) {
    auto i = waiting.find(gate);
    return std::to_string(i == waiting.end() ? 0 : i->second);
  };
  std::string out = "{\"rate_limits\":[";
  bool first = true;
  for (auto& [key, b] : buckets_) {
    out += first ? "" : ",";
    first = false;
    out += "{\"key\":" + json_quote(key)
           + ",\"rate_per_second\":" + format_number(b.limit().per_second)
           + ",\"burst\":" + format_number(b.limit().burst) + ",\"share\":"
           + format_number(std::floor(b.rate() / b.limit().per_second * 1000)
                           / 1000)
           + ",\"tokens\":"
           + format_number(std::floor(b.tokens(now_ms) * 100) / 100)
           + ",\"granted\":" + std::to_string(b.granted())
           + ",\"waiting\":" + waiting_at("r" + key) + "}";
  }
  out += "],\"breakers\":[";
  first = true;
  for (auto& [key, b] : breakers_) {
    out += first ? "" : ",";
    first = false;
    std::string codes = "[";
    for (const auto& c : b.config().codes)
      codes += (codes.size() > 1 ? "," : "") + json_quote(c);
    codes += "]";
    // The ratio rule's settings and the window's figures now: null without
    // that rule.
    const auto& cfg = b.config();
    auto w = b.window(now_ms);
    auto ratio = [&](const std::string& x) {
      return cfg.ratio > 0 ? x : std::string{"null"};
    };
    out += "{\"key\":" + json_quote(key) + ",\"state\":\""
           + to_string(b.state())
           + "\",\"failures_in_row\":" + std::to_string(b.failures_in_row())
           + ",\"failures_to_open\":" + std::to_string(cfg.failures)
           + ",\"failure_ratio_to_open\":" + ratio(format_number(cfg.ratio))
           + ",\"window_seconds\":"
           + ratio(format_number(static_cast<double>(cfg.window_ms) / 1000))
           + ",\"min_calls\":" + ratio(std::to_string(cfg.min_calls))
           + ",\"window_calls\":" + ratio(std::to_string(w.calls))
           + ",\"window_failures\":" + ratio(std::to_string(w.failures))
           + ",\"cooldown_seconds\":"
           + format_number(static_cast<double>(b.config().cooldown_ms) / 1000)
           + ",\"probes\":" + std::to_string(b.config().probes)
           + ",\"probes_running\":" + std::to_string(b.probes_running())
           + ",\"times_opened\":" + std::to_string(b.opened_count())
           + ",\"codes\":" + codes + ",\"waiting\":" + waiting_at("b" + key)
           + "}";
  }
  return out + "]}";
}

} // namespace drover
