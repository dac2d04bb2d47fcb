// Flow control's settings changed at run time (the control log: set,
// restored, applied from configuration), why a job is held, and the admin
// view (runtime/flow_control.hpp; the limiters are in flow_control.cpp).

#include "runtime/flow_control.hpp"

#include "runtime/detail/flow_format.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

namespace drover {

using flow_detail::format_number;

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

namespace {

/// A control-log entry's time: as recorded (wall-clock Unix ms), and on the
/// clock whose now is `now_ms` (one from the future is now).
struct entry_time {
  int64_t wall = 0;
  int64_t local = 0;
};

/// Of the entry's `at`; none if it does not parse or lies beyond any
/// clock's reach (|at| > 10^15 ms, some 31,000 years).
std::optional<entry_time> time_of(const std::string& at, int64_t wall_now_ms,
                                  int64_t now_ms) {
  constexpr int64_t reach = 1000000000000000;
  entry_time t;
  auto [end, ec] = std::from_chars(at.data(), at.data() + at.size(), t.wall);
  if (ec != std::errc{} || end != at.data() + at.size() || t.wall > reach
      || t.wall < -reach)
    return std::nullopt;
  t.local = now_ms - std::max<int64_t>(0, wall_now_ms - t.wall);
  return t;
}

} // namespace

bool flow_control::follow_opened(const std::vector<std::string>& quads,
                                 int64_t wall_now_ms, int64_t now_ms) {
  static const std::string elsewhere = "opened at another coordinator: ";
  bool any = false;
  for (size_t i = 0; i + 3 < quads.size(); i += 4) {
    auto b = breakers_.find(quads[i + 1]);
    auto at = time_of(quads[i + 2], wall_now_ms, now_ms);
    if (b == breakers_.end() || !at)
      continue;
    auto wall = std::min(at->wall, wall_now_ms);
    if (wall + b->second.config().cooldown_ms <= wall_now_ms)
      continue;
    // An open one takes a later opening's time as its cooldown's start, but
    // not one stamped after now: a clock ahead must not keep it open.
    if (b->second.state() == breaker_state::open && at->wall > wall_now_ms)
      continue;
    const auto& why = quads[i + 3];
    auto detail = why.rfind(elsewhere, 0) == 0 ? why : elsewhere + why;
    if (b->second.follow_open(at->local, now_ms, changes_, b->first,
                              std::move(detail))) {
      changes_.back().wall_ms = wall;
      any = true;
    }
  }
  return any;
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
    auto t = time_of(quads[i + 2], wall_now_ms, now_ms);
    if (!t)
      continue;
    auto local_at = t->local; // its time on this instance's clock
    auto at = t->wall;
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
           + ",\"times_followed\":" + std::to_string(b.followed_count())
           + ",\"codes\":" + codes + ",\"waiting\":" + waiting_at("b" + key)
           + "}";
  }
  return out + "]}";
}

} // namespace drover
