#pragma once

// What happens after an attempt fails: retry after a backoff, or give up
// (the job fails and enters the dead-letter queue). Pure functions, shared
// by the job supervisor and the queue (which resolves attempts whose job
// supervisor died).

#include "runtime/model.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace drover {

/// Delay before retry number `retry_count` (0 = the first retry), by the
/// project's one backoff formula (runtime/backoff.hpp) with floor =
/// `initial_delay_ms`: base = min(max, initial * multiplier^retry_count),
/// drawn uniformly from [base * (1 - jitter), base]; a window that would
/// start below `initial` keeps its width and starts at `initial` instead
/// (so the first retries are jittered too, not all exactly `initial`).
/// Every observed backoff is within [initial, max]. `uniform01` in [0, 1).
int64_t retry_delay_ms(const backoff_policy& policy, uint32_t retry_count,
                       double uniform01);

struct retry_decision {
  /// False: fail the job (dead-letter queue).
  bool retry = false;
  /// When the next attempt becomes ready (Unix ms), if `retry`.
  int64_t next_attempt_at_ms = 0;
  /// Why not, if !retry: "non-retryable error" or "attempts exhausted".
  std::string reason;
};

/// Decides for a job whose current attempt failed with `error`. `rec` is the
/// job's record while the attempt was processing.
/// `lost_attempt`: the attempt was lost, not failed (its worker died, its
/// lease lapsed, its node or coordinator stopped): it is retried at once
/// without counting against max_attempts, until `rec.lost_count` (before
/// this loss) reaches max_lost_attempts.
retry_decision decide_retry(const job_record& rec, const error_info& error,
                            const std::vector<std::string>& non_retryable,
                            int64_t now_ms, double uniform01,
                            bool lost_attempt = false);

/// Lost attempts a job may have before it fails: stops a job that kills
/// every worker it touches.
constexpr uint32_t max_lost_attempts = 5;

} // namespace drover
