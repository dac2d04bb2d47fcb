#include "runtime/retry.hpp"

#include "runtime/backoff.hpp"

#include <algorithm>
#include <chrono>

namespace drover {

int64_t retry_delay_ms(const backoff_policy& policy, uint32_t retry_count,
                       double uniform01) {
  backoff_schedule schedule;
  schedule.initial = std::chrono::milliseconds{
      std::max<int64_t>(0, policy.initial_delay_ms)};
  schedule.max = std::chrono::milliseconds{
      std::max(policy.max_delay_ms, schedule.initial.count())};
  schedule.multiplier = policy.multiplier;
  schedule.jitter = policy.jitter;
  // Never below the configured minimum (RELIABILITY.md, invariant 6).
  schedule.floor = schedule.initial;
  return schedule.delay(retry_count, uniform01).count();
}

retry_decision decide_retry(const job_record& rec, const error_info& error,
                            const std::vector<std::string>& non_retryable,
                            int64_t now_ms, double uniform01,
                            bool lost_attempt) {
  retry_decision result;
  if (lost_attempt) {
    // Not the handler's failure: no backoff and no count against
    // max_attempts, only the cap on lost attempts.
    if (rec.lost_count + 1 > max_lost_attempts) {
      result.reason = "lost its worker " + std::to_string(rec.lost_count + 1)
                      + " times (the cap is "
                      + std::to_string(max_lost_attempts) + ")";
      return result;
    }
    result.retry = true;
    result.next_attempt_at_ms = now_ms;
    return result;
  }
  if (!error.retryable
      || std::find(non_retryable.begin(), non_retryable.end(), error.code)
             != non_retryable.end()) {
    result.reason = "non-retryable error";
    return result;
  }
  // retry_count counts the retries already used in this round (reset by a
  // redrive); this attempt is number retry_count + 1 of the round.
  if (rec.retry_count + 1 >= rec.spec.max_attempts) {
    result.reason
        = "attempts exhausted (" + std::to_string(rec.spec.max_attempts) + ")";
    return result;
  }
  result.retry = true;
  result.next_attempt_at_ms
      = now_ms + retry_delay_ms(rec.spec.backoff, rec.retry_count, uniform01);
  return result;
}

} // namespace drover
