#pragma once

// Rate limiters and circuit breakers (issue 15 items 1 and 2, docs/jobs.md
// "Rate limits and circuit breakers"), as the queue applies them before it
// hands a job to a worker.
//
// A job names up to four rate-limit keys and one breaker key
// (job_spec::rate_limit_key and extra_rate_limit_keys, breaker_key); each
// must be declared on the coordinators (--rate-limit, --circuit-breaker,
// or at run time), or its submit is refused. It is dispatched with a token
// of each of its rate limits, and a token it takes mid-job is one of each.
//
// Rate limits are token buckets (rate per second, burst): a job is
// dispatched only with a token of its key, taken when a worker is free for
// it, so a rate-limited job waits in the queue rather than holding a
// worker. The queue that dispatches is the one authority per key; a bucket
// starts empty when its authority starts (a restart or a takeover), so a
// move of the authority never lets more than `burst` plus the rate through
// in any window. Coordinators that share a database each dispatch the jobs
// of their own partitions: each one's buckets fill at the rate times its
// share of the partitions (set_share), so together they never pass more
// than the rate; each bucket's burst is the burst times that share, at
// least one token (so, momentarily, up to one token per coordinator more
// than a burst below their number).
//
// Circuit breakers (runtime/circuit_breaker.hpp) count failed attempts of
// the jobs naming them; `failures` in a row, or a failure `ratio` over a
// window, open the breaker: its jobs stay queued, their attempts
// untouched, until its probes after `cooldown` succeed.
//
// Every state change is handed to the caller (drain_changes) for the
// control log (drover.control_log). One instance belongs to one queue
// actor: not thread-safe. Time is Unix ms, passed in.

#include "runtime/circuit_breaker.hpp"

#include <caf/expected.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace drover {

struct rate_limit {
  /// Tokens per second (> 0).
  double per_second = 1;
  /// Most tokens the bucket holds (>= 1).
  double burst = 1;
  /// Tenants whose jobs may name it; empty = every tenant.
  std::vector<std::string> tenants;

  bool operator==(const rate_limit& other) const {
    return per_second == other.per_second && burst == other.burst
           && tenants == other.tenants;
  }
};

/// What the coordinators declare (node_config::flow).
struct flow_limits {
  std::map<std::string, rate_limit> rates;
  std::map<std::string, breaker_config> breakers;
};

/// `NAME:rate=R[,burst=B][,tenants=a|b]` (R per second, B default
/// max(1, R); tenants: who may name it, default everyone).
caf::expected<std::pair<std::string, rate_limit>>
parse_rate_limit(const std::string& item);

/// `NAME:failures=N[,ratio=R,window=W[,min_calls=M]][,cooldown=S]`
/// `[,probes=P][,codes=a|b][,tenants=a|b]`, failures or ratio or both (W, S
/// seconds; see breaker_config).
caf::expected<std::pair<std::string, breaker_config>>
parse_breaker(const std::string& item);

class token_bucket {
public:
  token_bucket(rate_limit limit, int64_t now_ms);

  /// Takes one token if there is one.
  bool take(int64_t now_ms);
  /// Takes up to `n` whole tokens, as many as there are; how many.
  uint32_t take_up_to(uint32_t n, int64_t now_ms);
  /// A new rate and burst (run time): the tokens saved so far stay, at
  /// most the new burst.
  void reconfigure(rate_limit limit, int64_t now_ms);
  /// Tokens now (fractional).
  double tokens(int64_t now_ms);
  /// This bucket's part of the limit (0..1): it fills at the rate times
  /// `share` and holds the burst times `share`, at least one token.
  void set_share(double share, int64_t now_ms);
  /// The rate and the burst it applies (the limit's, times its share).
  double rate() const {
    return limit_.per_second * share_;
  }
  double cap() const {
    return std::max(1.0, limit_.burst * share_);
  }
  /// When the next whole token is there (now if one is).
  int64_t next_token_ms(int64_t now_ms);

  const rate_limit& limit() const {
    return limit_;
  }

  uint64_t granted() const {
    return granted_;
  }

private:
  void refill(int64_t now_ms);

  rate_limit limit_;
  double share_ = 1.0;
  double tokens_ = 0;
  int64_t last_ms_;
  uint64_t granted_ = 0;
};

/// One control-log entry as the store's (control_atom, limit) answer
/// shows it (the memory store; PostgreSQL builds the same object).
std::string control_entry_json(uint64_t sequence, const flow_change& c,
                               int32_t partition, int64_t epoch,
                               const std::string& node);

/// The most one answer to a running job's token request grants: the
/// tokens of this long at the limit's rate (at least one). It is also how
/// long a new authority grants nothing after it starts (see take_tokens).
constexpr int64_t token_block_ms = 100;

/// An answer to a running job's token request (flow_control::take_tokens).
struct token_grant {
  /// Tokens granted now (0..wanted).
  uint32_t granted = 0;
  /// When fewer than wanted: how long until the next token is there, ms.
  int64_t retry_ms = 0;
};

/// Why a job may not be dispatched now.
struct flow_wait {
  /// "r" (rate limit) or "b" (breaker), then the key: where it parks.
  std::string gate;
  /// When to look again (0 = when an outcome says so).
  int64_t until_ms = 0;
  /// At a rate limit: its place among the job's limits, from 1 (the
  /// tokens of the limits before it are taken and kept: take_rates); 0 =
  /// at its breaker.
  size_t rate = 0;
};

/// The limiters and breakers of one queue, and the pairs of keys jobs name
/// (interned: a queued entry carries a small number, 0 = none).
class flow_control {
public:
  flow_control() = default;
  flow_control(flow_limits limits, int64_t now_ms);

  /// Refuses a key that is not declared, or not for `tenant`
  /// (errc::invalid_request).
  caf::error check(const std::vector<std::string>& rate_keys,
                   const std::string& breaker_key,
                   const std::string& tenant) const;
  caf::error check(const std::string& rate_key, const std::string& breaker_key,
                   const std::string& tenant) const {
    return check(one_key(rate_key), breaker_key, tenant);
  }
  /// The number of a job's keys (0 = none): its rate limits (a token of
  /// each per dispatch and per token taken, taken in key order whatever
  /// the order it names them in) and its breaker.
  uint32_t intern(const std::vector<std::string>& rate_keys,
                  const std::string& breaker_key);
  uint32_t intern(const std::string& rate_key, const std::string& breaker_key) {
    return intern(one_key(rate_key), breaker_key);
  }

  /// Whether a job of `flow` may be dispatched now; if not, where it waits.
  /// `taken`: the tokens of its first rate limits it already holds
  /// (take_rates), not asked again.
  std::optional<flow_wait> gate(uint32_t flow, int64_t now_ms,
                                size_t taken = 0);
  /// Takes what `gate` allowed (but the first `taken` tokens); the breaker
  /// probe's period (0 = not a probe).
  uint64_t take(uint32_t flow, int64_t now_ms, size_t taken = 0);
  /// Takes a token of rate limits [from, to) of `flow`: a job waiting at
  /// its limit `to` keeps those it passed, so that it passes each limit's
  /// line once (a job with several limits is not sent back to the end of
  /// one line each time another has no token).
  void take_rates(uint32_t flow, int64_t now_ms, size_t from, size_t to);
  /// The first gate of `flow` where `has_line` says jobs wait already — its
  /// breaker's, then those of the rate limits it holds no token of (after
  /// the first `taken`) — so that a job that could pass goes behind them.
  std::optional<flow_wait>
  queued_gate(uint32_t flow, size_t taken,
              const std::function<bool(const std::string&)>& has_line) const;
  /// A job's rate-limit keys as one set: sorted, each once, no empty one
  /// (the order they are taken in; one flow per set).
  static std::vector<std::string> key_set(std::vector<std::string> keys);
  /// Most distinct sets of keys (rate limits and breaker) jobs name:
  /// check() refuses a new one beyond (errc::conflict).
  static constexpr size_t max_flows = 100000;
  /// Creates or changes rate limit `key` at run time (the admin API, or
  /// restored from the control log when the authority starts): a new key
  /// starts with an empty bucket, a changed one keeps its tokens (at most
  /// the new burst). Refused (errc::conflict) beyond max_keys keys.
  caf::error set_rate(const std::string& key, rate_limit r, int64_t now_ms);
  /// Creates or changes breaker `key` at run time: a new one starts
  /// closed; a changed one keeps its state, and its failure counts start
  /// over under the new rule.
  caf::error set_breaker(const std::string& key, breaker_config b);
  /// Most rate limits, and most breakers, one authority holds.
  static constexpr size_t max_keys = 1000;
  /// This queue's share of every rate limit (0..1): the partitions it owns
  /// of all of them, when coordinators share a database (see above).
  void set_share(double share, int64_t now_ms);

  /// A running job of `flow` takes up to `wanted` tokens of its rate limit
  /// mid-attempt (task_context::take_tokens): at most one block
  /// (token_block_ms of the rate, at least 1), none in the first block
  /// after this authority started (a grant of the one before may still be
  /// in use). errc::invalid_request if the job names no rate limit.
  caf::expected<token_grant> take_tokens(uint32_t flow, uint32_t wanted,
                                         int64_t now_ms);
  /// Its attempt ended (see circuit_breaker::outcome).
  void outcome(uint32_t flow, uint64_t probe, bool success,
               const std::string& code, int64_t now_ms);

  /// The gates of `flow`: its breaker's ("b" key) first, then its rate
  /// limits' ("r" key), in order.
  std::vector<std::string> gates_of(uint32_t flow) const;

  /// How many more jobs parked at `gate` may be woken now: what the gate
  /// lets through less the jobs woken and not yet taken (woke/unwoke).
  size_t wakeable(const std::string& gate, int64_t now_ms);
  /// `n` jobs were woken from `gate`; one of them was taken or left.
  void woke(const std::string& gate, size_t n);
  void unwoke(const std::string& gate);
  /// Jobs woken from `gate` and not taken yet.
  size_t pending(const std::string& gate) const;
  /// When `gate` should be looked at again: now if jobs may be woken, 0 =
  /// when an outcome or a woken job leaving says so.
  int64_t next_check_ms(const std::string& gate, int64_t now_ms);

  /// Breakers wait for their last recorded state (restore_breakers) before
  /// they let jobs through: a restart must not close a breaker that was
  /// open. `quads` is (key, state, wall-clock ms, detail) from the control
  /// log (runtime settings, state "configured", are skipped);
  /// `ok` false (the log could not be read) half-opens every breaker.
  void hold_breakers() {
    breakers_held_ = !breakers_.empty();
  }
  void restore_breakers(const std::vector<std::string>& quads, bool ok,
                        int64_t wall_now_ms, int64_t now_ms);
  /// Coordinators sharing the partitions: opens the breakers another one
  /// opened. `quads` are control-log openings (sequence, key, wall-clock
  /// ms, detail), each passed once (the caller reads the log on from the
  /// last one). One whose cooldown is not over opens this breaker
  /// (circuit_breaker::follow_open): its cooldown counts from that opening,
  /// or from now for one stamped later (a clock ahead must not hold a
  /// breaker open), and it is recorded with that time. One whose cooldown
  /// is over is skipped: an echo of this breaker's own opening (which it
  /// followed or half-opened since), an old one. Whether any breaker
  /// changed state.
  bool follow_opened(const std::vector<std::string>& quads, int64_t wall_now_ms,
                     int64_t now_ms);
  /// Applies the run-time settings (state "configured", the item in the
  /// detail) among `quads` of `kind` ("rate_limit", "breaker"): what the
  /// admin API set outlives a restart or a takeover. Entries that no
  /// longer parse are skipped, and said.
  void apply_configured(const std::string& kind,
                        const std::vector<std::string>& quads, int64_t now_ms);
  /// A run-time setting of `kind` ("rate_limit", "breaker") for `key`,
  /// `spec` written as the option writes it after `NAME:`: checked by the
  /// option's parser (errc::invalid_request with its message) and against
  /// max_keys (errc::conflict), then applied unless `check_only`.
  caf::error set_setting(const std::string& kind, const std::string& key,
                         const std::string& spec, int64_t now_ms,
                         bool check_only = false);

  /// State changes since the last call.
  std::vector<flow_change> drain_changes();
  bool has_changes() const {
    return !changes_.empty();
  }

  /// JSON object: {"rate_limits":[...],"breakers":[...]} with `waiting`
  /// counts per gate supplied by the caller.
  std::string to_json(int64_t now_ms,
                      const std::map<std::string, size_t>& waiting);

  const std::map<std::string, circuit_breaker>& breakers() const {
    return breakers_;
  }
  /// Why a job naming these keys may be held back now, for its status
  /// ("" = nothing here holds it): a breaker that is open, half-open with
  /// its probes out, or not restored yet; the first rate limit with jobs
  /// waiting at it (`waiting_at_rate`, per key, counted by the caller).
  std::string hold_reason(const std::vector<std::string>& rate_keys,
                          const std::string& breaker_key,
                          const std::vector<size_t>& waiting_at_rate,
                          int64_t now_ms) const;

private:
  static std::vector<std::string> one_key(const std::string& key) {
    return key.empty() ? std::vector<std::string>{}
                       : std::vector<std::string>{key};
  }

  struct flow_keys {
    std::vector<std::string> rates;
    std::string breaker;
  };

  std::map<std::string, token_bucket> buckets_;
  double share_ = 1.0;
  std::map<std::string, circuit_breaker> breakers_;
  /// flow number - 1 -> its keys.
  std::vector<flow_keys> flows_;
  std::map<std::pair<std::vector<std::string>, std::string>, uint32_t> numbers_;
  std::vector<flow_change> changes_;
  std::map<std::string, size_t> woken_;
  std::set<std::string> undeclared_;
  bool breakers_held_ = false;
  /// When this authority started (flow clock): take_tokens waits a block.
  int64_t started_ms_ = 0;
};

} // namespace drover
