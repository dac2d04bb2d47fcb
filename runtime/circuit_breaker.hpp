#pragma once

// Circuit breakers (issue 15 item 2, docs/jobs.md "Rate limits and circuit
// breakers"): the state machine of one breaker key, as the queue's
// flow_control (runtime/flow_control.hpp) applies it before it hands a job
// to a worker.
//
// A breaker counts the attempts of the jobs naming it: every failure the
// handler or the attempt timeout reports, or only the listed error codes;
// never a worker lost or a cancel (never_counted). Two rules open it, either
// or both configured: `failures` counted failures in a row, or a `ratio` of
// counted failures among the outcomes (successes and counted failures) of
// the last `window_ms`, once at least `min_calls` outcomes are in it. While
// open its jobs stay queued, their attempts untouched. After `cooldown` it
// is half-open: at most `probes` jobs run; a success closes it (and starts
// its window and its count in a row over), a counted failure opens it again.
//
// Every state change is appended to the caller's list for the control log
// (drover.control_log). One instance belongs to one queue actor: not
// thread-safe. Time is the caller's monotonic ms, passed in.

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace drover {

struct breaker_config {
  /// Counted failures in a row that open the breaker (0 = not this rule).
  uint32_t failures = 5;
  /// How long it stays open before probes run.
  int64_t cooldown_ms = 30000;
  /// Jobs that run at once while half-open (>= 1).
  uint32_t probes = 1;
  /// Error codes that count; empty = every failure (see above).
  std::vector<std::string> codes;
  /// Tenants whose jobs may name it; empty = every tenant.
  std::vector<std::string> tenants;
  /// Share of counted failures among the window's outcomes that opens it,
  /// within (0, 1] (0 = not this rule).
  double ratio = 0;
  /// The window's length when `ratio` is set (1 s to 1 h).
  int64_t window_ms = 0;
  /// Fewest outcomes in the window before `ratio` is looked at.
  uint32_t min_calls = 10;

  bool operator==(const breaker_config& other) const {
    return failures == other.failures && cooldown_ms == other.cooldown_ms
           && probes == other.probes && codes == other.codes
           && tenants == other.tenants && ratio == other.ratio
           && window_ms == other.window_ms && min_calls == other.min_calls;
  }
};

/// "opens after 5 failure(s) in a row", "opens when ..." (the control log's
/// text for an active breaker).
std::string opening_rule(const breaker_config& cfg);

/// Codes of attempts that did not reach an outcome of their own (a cancel,
/// a lost worker or lease): never held against a downstream.
bool never_counted(const std::string& code);

enum class breaker_state : uint8_t { closed, open, half_open };

const char* to_string(breaker_state x);

/// One state change of a limiter or a breaker, for the control log.
struct flow_change {
  int64_t at_ms = 0;
  /// "rate_limit" or "breaker".
  std::string kind;
  std::string key;
  /// e.g. "open", "half_open", "closed", "active".
  std::string state;
  std::string detail;
  /// The wall-clock time to record (Unix ms) when it is not now: a state
  /// restored from the control log keeps the time it began.
  int64_t wall_ms = 0;
};

/// Outcomes over a sliding window, in ten buckets of a tenth of its length:
/// memory stays the same at any rate. An outcome counts for more than 0.9
/// and at most 1 length after it happened.
class outcome_window {
public:
  struct figures {
    uint64_t calls = 0;
    uint64_t failures = 0;
  };

  /// `length_ms` 0: keeps nothing.
  explicit outcome_window(int64_t length_ms = 0);

  void add(int64_t now_ms, bool failed);
  /// The outcomes within the window that ends at `now_ms`.
  figures at(int64_t now_ms) const;
  void clear();

private:
  static constexpr int64_t buckets = 10;

  struct bucket {
    /// now_ms / bucket_ms_ of its outcomes (-1 = unused).
    int64_t number = -1;
    uint64_t calls = 0;
    uint64_t failures = 0;
  };

  /// The bucket `now_ms` falls in; never before the newest used (a clock
  /// that steps back adds to the newest).
  int64_t number_of(int64_t now_ms) const;

  int64_t bucket_ms_ = 0;
  int64_t newest_ = -1;
  std::array<bucket, buckets> ring_{};
};

class circuit_breaker {
public:
  explicit circuit_breaker(breaker_config cfg)
      : cfg_(std::move(cfg)), window_(cfg_.ratio > 0 ? cfg_.window_ms : 0) {}

  /// Whether a job may run now (moves open -> half_open after the
  /// cooldown); does not take a probe.
  bool may_run(int64_t now_ms, std::vector<flow_change>& out,
               const std::string& key);
  /// Takes the right to run: the half-open period the job probes in, 0 if
  /// it is not a probe.
  uint64_t admit();
  /// When an open breaker half-opens (0 = not open).
  int64_t half_open_at() const {
    return state_ == breaker_state::open ? opened_ms_ + cfg_.cooldown_ms : 0;
  }

  /// An attempt ended: completed (code ""), failed with `code`, or did
  /// not run to an outcome (`counted` false: cancelled, worker lost).
  /// `probe` is what admit() returned; a probe of an earlier half-open
  /// period counts as an ordinary attempt. Outcomes while closed feed the
  /// window; those of attempts that ran on while it was open do not.
  /// Returns true if jobs waiting behind it may run now.
  bool outcome(uint64_t probe, bool success, bool counted, int64_t now_ms,
               std::vector<flow_change>& out, const std::string& key,
               const std::string& code);
  /// Puts it into `s` as the control log last recorded it (at `at_ms` on
  /// this instance's clock), after the authority started.
  void restore(breaker_state s, int64_t at_ms, int64_t now_ms,
               std::vector<flow_change>& out, const std::string& key,
               std::string detail);
  /// Opens it because another coordinator sharing the partitions opened
  /// its own at `at_ms` (this instance's clock): the cooldown counts from
  /// then, probes out become ordinary attempts. An open one keeps the
  /// later of the two openings, unrecorded. Whether its state changed.
  bool follow_open(int64_t at_ms, int64_t now_ms, std::vector<flow_change>& out,
                   const std::string& key, std::string detail);
  /// Whether a failure with `code` counts.
  bool counts(const std::string& code) const;
  /// New settings at run time (flow_control::set_breaker): the state stays
  /// (an open breaker half-opens at its opening plus the new cooldown),
  /// and what opens it (failures in a row, the window) starts over under
  /// the new rule.
  void reconfigure(breaker_config cfg);

  breaker_state state() const {
    return state_;
  }
  uint32_t failures_in_row() const {
    return failures_;
  }
  /// The window's outcomes now (all 0 without a ratio rule).
  outcome_window::figures window(int64_t now_ms) const {
    return window_.at(now_ms);
  }
  const breaker_config& config() const {
    return cfg_;
  }
  uint32_t probes_running() const {
    return probes_out_;
  }
  /// Times it opened on what it saw (failures, a failed probe) since the
  /// authority started.
  uint64_t opened_count() const {
    return opened_count_;
  }
  /// Times it opened because another coordinator's breaker did
  /// (follow_open).
  uint64_t followed_count() const {
    return followed_count_;
  }

private:
  void move_to(breaker_state s, int64_t now_ms, std::vector<flow_change>& out,
               const std::string& key, std::string detail);
  /// Why a counted failure while closed opens it ("" = it does not).
  std::string why_open(int64_t now_ms, const std::string& code) const;

  breaker_config cfg_;
  breaker_state state_ = breaker_state::closed;
  uint32_t failures_ = 0;
  outcome_window window_;
  int64_t opened_ms_ = 0;
  uint32_t probes_out_ = 0;
  uint64_t opened_count_ = 0;
  uint64_t followed_count_ = 0;
  /// Half-open periods so far (a probe's stamp).
  uint64_t period_ = 0;
};

} // namespace drover
