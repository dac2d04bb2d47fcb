#include "runtime/circuit_breaker.hpp"

#include <algorithm>
#include <cstdio>
#include <utility>

namespace drover {

namespace {

std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

std::string seconds_text(int64_t ms) {
  return format_number(static_cast<double>(ms) / 1000) + " s";
}

/// Floor division: bucket numbers of times before 0 stay in order.
int64_t floor_div(int64_t a, int64_t b) {
  auto q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

} // namespace

std::string opening_rule(const breaker_config& cfg) {
  std::string out = "opens";
  if (cfg.failures > 0)
    out += " after " + std::to_string(cfg.failures) + " failure(s) in a row";
  if (cfg.ratio > 0)
    out += std::string{cfg.failures > 0 ? ", or" : ""} + " when at least "
           + format_number(cfg.ratio) + " of the attempts in "
           + seconds_text(cfg.window_ms) + " failed (once "
           + std::to_string(cfg.min_calls) + " or more ended)";
  return out;
}

bool never_counted(const std::string& code) {
  for (auto x :
       {"cancelled", "cancelled_by_handler", "worker_lost", "supervisor_lost",
        "attempt_lost", "stale_attempt", "lease_expired", "node_restarted",
        "worker_busy", "unknown_type", "handed_over"})
    if (code == x)
      return true;
  return false;
}

const char* to_string(breaker_state x) {
  switch (x) {
    case breaker_state::closed:
      return "closed";
    case breaker_state::open:
      return "open";
    case breaker_state::half_open:
      return "half_open";
  }
  return "closed";
}

// -- outcome_window -----------------------------------------------------------

outcome_window::outcome_window(int64_t length_ms)
    : bucket_ms_(length_ms > 0 ? std::max<int64_t>(1, length_ms / buckets)
                               : 0) {}

int64_t outcome_window::number_of(int64_t now_ms) const {
  return std::max(newest_, floor_div(now_ms, bucket_ms_));
}

void outcome_window::add(int64_t now_ms, bool failed) {
  if (bucket_ms_ == 0)
    return;
  auto n = number_of(now_ms);
  newest_ = n;
  auto& b = ring_[static_cast<size_t>(((n % buckets) + buckets) % buckets)];
  if (b.number != n)
    b = bucket{n, 0, 0}; // a bucket a whole window old: reused
  ++b.calls;
  b.failures += failed ? 1 : 0;
}

outcome_window::figures outcome_window::at(int64_t now_ms) const {
  figures out;
  if (bucket_ms_ == 0)
    return out;
  auto now = number_of(now_ms);
  for (const auto& b : ring_)
    if (b.number >= 0 && b.number > now - buckets) {
      out.calls += b.calls;
      out.failures += b.failures;
    }
  return out;
}

void outcome_window::clear() {
  ring_ = {};
  newest_ = -1;
}

// -- circuit_breaker ----------------------------------------------------------

void circuit_breaker::move_to(breaker_state s, int64_t now_ms,
                              std::vector<flow_change>& out,
                              const std::string& key, std::string detail) {
  state_ = s;
  out.push_back({now_ms, "breaker", key, to_string(s), std::move(detail)});
}

bool circuit_breaker::may_run(int64_t now_ms, std::vector<flow_change>& out,
                              const std::string& key) {
  if (state_ == breaker_state::open
      && now_ms >= opened_ms_ + cfg_.cooldown_ms) {
    probes_out_ = 0;
    ++period_;
    move_to(breaker_state::half_open, now_ms, out, key,
            "cooldown over: up to " + std::to_string(cfg_.probes)
                + " probe job(s) run");
  }
  switch (state_) {
    case breaker_state::closed:
      return true;
    case breaker_state::open:
      return false;
    case breaker_state::half_open:
      return probes_out_ < cfg_.probes;
  }
  return false;
}

uint64_t circuit_breaker::admit() {
  if (state_ != breaker_state::half_open)
    return 0;
  ++probes_out_;
  return period_;
}

void circuit_breaker::restore(breaker_state s, int64_t at_ms, int64_t now_ms,
                              std::vector<flow_change>& out,
                              const std::string& key, std::string detail) {
  if (s == breaker_state::closed)
    return;
  probes_out_ = 0;
  ++period_;
  // Open as recorded (its cooldown counts from then), or half-open: the
  // old authority's probes ended with it, so a new period starts.
  opened_ms_ = s == breaker_state::open ? at_ms : now_ms - cfg_.cooldown_ms;
  move_to(s, now_ms, out, key, std::move(detail));
}

bool circuit_breaker::follow_open(int64_t at_ms, int64_t now_ms,
                                  std::vector<flow_change>& out,
                                  const std::string& key, std::string detail) {
  if (state_ == breaker_state::open) {
    opened_ms_ = std::max(opened_ms_, at_ms);
    return false;
  }
  ++followed_count_;
  restore(breaker_state::open, at_ms, now_ms, out, key, std::move(detail));
  return true;
}

bool circuit_breaker::counts(const std::string& code) const {
  if (never_counted(code))
    return false;
  return cfg_.codes.empty()
         || std::find(cfg_.codes.begin(), cfg_.codes.end(), code)
                != cfg_.codes.end();
}

void circuit_breaker::reconfigure(breaker_config cfg) {
  cfg_ = std::move(cfg);
  failures_ = 0;
  window_ = outcome_window{cfg_.ratio > 0 ? cfg_.window_ms : 0};
}

std::string circuit_breaker::why_open(int64_t now_ms,
                                      const std::string& code) const {
  if (cfg_.failures > 0 && failures_ >= cfg_.failures)
    return std::to_string(failures_) + " failure(s) in a row, the last " + code;
  if (cfg_.ratio <= 0)
    return {};
  auto w = window_.at(now_ms);
  if (w.calls == 0 || w.calls < cfg_.min_calls)
    return {};
  // A share exactly at the ratio opens it: the division and the parsed
  // ratio both round to the nearest double, so they compare equal.
  auto share = static_cast<double>(w.failures) / static_cast<double>(w.calls);
  if (share < cfg_.ratio)
    return {};
  return std::to_string(w.failures) + " of " + std::to_string(w.calls)
         + " attempts failed in the last " + seconds_text(cfg_.window_ms)
         + " (ratio " + format_number(share) + ", opens at "
         + format_number(cfg_.ratio) + "), the last " + code;
}

bool circuit_breaker::outcome(uint64_t probe_period, bool success, bool counted,
                              int64_t now_ms, std::vector<flow_change>& out,
                              const std::string& key, const std::string& code) {
  // A probe of an earlier half-open period (the breaker opened again while
  // it ran) is an ordinary attempt now.
  bool probe = probe_period != 0 && probe_period == period_
               && state_ == breaker_state::half_open;
  if (probe && probes_out_ > 0)
    --probes_out_;
  if (success) {
    if (probe && state_ == breaker_state::half_open) {
      // What opened it is over: both rules start again from nothing.
      failures_ = 0;
      window_.clear();
      move_to(breaker_state::closed, now_ms, out, key, "a probe job completed");
      return true;
    }
    if (state_ == breaker_state::closed) {
      failures_ = 0;
      window_.add(now_ms, false);
    }
    return false;
  }
  if (!counted)
    return probe && state_ == breaker_state::half_open; // another may probe
  if (probe && state_ == breaker_state::half_open) {
    opened_ms_ = now_ms;
    ++opened_count_;
    move_to(breaker_state::open, now_ms, out, key,
            "a probe job failed (" + code + ")");
    return false;
  }
  if (state_ != breaker_state::closed)
    return false; // ran before it opened: already accounted for
  ++failures_;
  window_.add(now_ms, true);
  if (auto why = why_open(now_ms, code); !why.empty()) {
    opened_ms_ = now_ms;
    ++opened_count_;
    move_to(breaker_state::open, now_ms, out, key, std::move(why));
  }
  return false;
}

} // namespace drover
