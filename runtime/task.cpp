#include "runtime/task.hpp"

#include "runtime/errors.hpp"

#include <algorithm>
#include <cmath>

namespace drover {

// -- task_outcome -------------------------------------------------------------

task_outcome task_outcome::success(std::string result) {
  task_outcome x;
  x.outcome_ = completion_outcome::succeeded;
  x.result_ = std::move(result);
  return x;
}

task_outcome task_outcome::retryable(std::string code, std::string message) {
  task_outcome x;
  x.outcome_ = completion_outcome::failed_retryable;
  x.error_ = {std::move(code), std::move(message), true};
  return x;
}

task_outcome task_outcome::permanent(std::string code, std::string message) {
  task_outcome x;
  x.outcome_ = completion_outcome::failed_permanent;
  x.error_ = {std::move(code), std::move(message), false};
  return x;
}

task_outcome task_outcome::cancelled() {
  task_outcome x;
  x.outcome_ = completion_outcome::cancelled;
  x.error_ = {"cancelled", "the attempt stopped after a cancel request", false};
  return x;
}

// -- task_context -------------------------------------------------------------

task_sink::~task_sink() = default;

bool task_sink::on_take(const std::string&, uint32_t, uint64_t, uint32_t) {
  return false;
}

task_context::task_context(std::string job_id, uint32_t attempt,
                           std::string input, std::string last_checkpoint,
                           std::shared_ptr<task_sink> sink,
                           std::function<int64_t()> clock_ms)
    : job_id_(std::move(job_id)),
      attempt_(attempt),
      input_(std::move(input)),
      last_checkpoint_(std::move(last_checkpoint)),
      sink_(std::move(sink)),
      clock_ms_(std::move(clock_ms)) {
  // nop
}

caf::error task_context::declare_stages(std::vector<std::string> names) {
  std::lock_guard<std::mutex> guard{mx_};
  if (stages_declared_ || !stages_.empty())
    return make_error(errc::invalid_value, "stages were already declared");
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i].empty())
      return make_error(errc::invalid_value, "a stage name is empty");
    for (size_t j = 0; j < i; ++j)
      if (names[j] == names[i])
        return make_error(errc::invalid_value,
                          "duplicate stage '" + names[i] + "'");
  }
  for (auto& n : names)
    stages_.push_back(stage{std::move(n), 0, stage_state::pending});
  stages_declared_ = true;
  auto update = snapshot(percent_, {}, {});
  sink_->on_progress(update);
  return caf::none;
}

caf::error task_context::progress(double percent, const std::string& stage,
                                  const std::string& message) {
  progress_update update;
  {
    std::lock_guard<std::mutex> guard{mx_};
    if (!std::isfinite(percent) || percent < 0 || percent > 100)
      return make_error(errc::invalid_value,
                        "progress must be within [0, 100], got "
                            + std::to_string(percent));
    if (percent < percent_)
      return make_error(errc::invalid_value,
                        "progress may not go backwards within an attempt ("
                            + std::to_string(percent) + " < "
                            + std::to_string(percent_) + ")");
    if (!stage.empty()) {
      auto i = std::find_if(
          stages_.begin(), stages_.end(),
          [&](const drover::stage& s) { return s.name == stage; });
      if (i == stages_.end()) {
        if (stages_declared_)
          return make_error(errc::invalid_value,
                            "unknown stage '" + stage + "'");
        stages_.push_back(drover::stage{stage, 0, stage_state::pending});
        i = stages_.end() - 1;
      }
      // Earlier stages are done; the named one runs.
      for (auto j = stages_.begin(); j != i; ++j)
        if (j->state == stage_state::pending
            || j->state == stage_state::running) {
          j->state = stage_state::done;
          j->percent = 100;
        }
      i->state = stage_state::running;
    }
    percent_ = percent;
    reported_ = true;
    update = snapshot(percent, stage, message);
  }
  sink_->on_progress(update);
  return caf::none;
}

caf::error task_context::set_stage_state(const std::string& stage,
                                         stage_state state) {
  progress_update update;
  {
    std::lock_guard<std::mutex> guard{mx_};
    auto i
        = std::find_if(stages_.begin(), stages_.end(),
                       [&](const drover::stage& s) { return s.name == stage; });
    if (i == stages_.end())
      return make_error(errc::invalid_value, "unknown stage '" + stage + "'");
    if (state != stage_state::skipped && state != stage_state::failed)
      return make_error(errc::invalid_value,
                        "only skipped or failed can be set directly");
    i->state = state;
    update = snapshot(percent_, {}, {});
  }
  sink_->on_progress(update);
  return caf::none;
}

caf::error task_context::checkpoint(std::string bytes) {
  constexpr size_t max_checkpoint = 16 * 1024 * 1024;
  if (bytes.size() > max_checkpoint)
    return make_error(errc::too_large, "checkpoint exceeds 16 MiB");
  sink_->on_checkpoint(job_id_, attempt_, bytes);
  return caf::none;
}

caf::error task_context::take_tokens(uint32_t n,
                                     std::chrono::milliseconds max_wait) {
  std::lock_guard<std::mutex> turn{take_mx_};
  // (At most a year: steady_clock::now() + max() would overflow.)
  auto deadline = std::chrono::steady_clock::now()
                  + std::min<std::chrono::milliseconds>(
                      max_wait, std::chrono::hours{24 * 365});
  uint32_t taken = 0;
  auto short_of = [&](errc code, const std::string& why) {
    return make_error(code, why + " (" + std::to_string(taken) + " of "
                                + std::to_string(n) + " tokens taken)");
  };
  auto too_late = [&] {
    return short_of(errc::rate_limited, "not granted within "
                                            + std::to_string(max_wait.count())
                                            + " ms");
  };
  while (taken < n) {
    uint64_t seq = 0;
    {
      std::lock_guard<std::mutex> guard{mx_};
      seq = ++take_seq_;
    }
    if (cancelled())
      return short_of(errc::unavailable, "the attempt was cancelled");
    if (!sink_->on_take(job_id_, attempt_, seq, n - taken))
      return make_error(errc::unavailable,
                        "no rate limiter here: tokens are taken from the "
                        "coordinator's");
    std::unique_lock<std::mutex> guard{mx_};
    bool answered = cv_.wait_until(
        guard, deadline, [&] { return answered_seq_ >= seq || cancelled(); });
    if (cancelled())
      return short_of(errc::unavailable, "the attempt was cancelled");
    if (!answered)
      return too_late();
    if (answer_error_)
      return short_of(
          is(answer_error_, errc::invalid_request) ? errc::invalid_request
          : is(answer_error_, errc::stale_attempt) ? errc::stale_attempt
                                                   : errc::unavailable,
          describe(answer_error_));
    taken += std::min(answer_granted_, n - taken);
    if (taken >= n)
      break;
    // Fewer than wanted: ask again once the next token is due.
    auto again
        = std::chrono::steady_clock::now()
          + std::chrono::milliseconds{std::max<int64_t>(1, answer_retry_ms_)};
    if (again > deadline)
      return too_late();
    if (cv_.wait_until(guard, again, [this] { return cancelled(); }))
      return short_of(errc::unavailable, "the attempt was cancelled");
  }
  return {};
}

void task_context::tokens_answered(uint64_t seq, uint32_t granted,
                                   int64_t retry_ms, caf::error err) {
  {
    std::lock_guard<std::mutex> guard{mx_};
    if (seq != take_seq_ || answered_seq_ >= seq)
      return; // an answer to a request given up on
    answered_seq_ = seq;
    answer_granted_ = granted;
    answer_retry_ms_ = retry_ms;
    answer_error_ = std::move(err);
  }
  cv_.notify_all();
}

bool task_context::wait_for_cancel(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> guard{mx_};
  return cv_.wait_for(guard, timeout, [this] { return cancelled(); });
}

void task_context::request_cancel() {
  std::vector<std::function<void()>> callbacks;
  {
    std::lock_guard<std::mutex> guard{mx_};
    if (cancelled_.exchange(true, std::memory_order_acq_rel))
      return;
    callbacks.swap(cancel_callbacks_);
  }
  cv_.notify_all();
  for (auto& fn : callbacks)
    fn();
}

void task_context::on_cancel(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> guard{mx_};
    if (!cancelled()) {
      cancel_callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn();
}

double task_context::last_percent() const {
  std::lock_guard<std::mutex> guard{mx_};
  return percent_;
}

progress_update task_context::snapshot(double percent, const std::string& stage,
                                       const std::string& message) {
  progress_update u;
  u.job_id = job_id_;
  u.attempt = attempt_;
  u.percent = percent;
  u.stage = stage;
  u.message = message;
  u.stages = stages_;
  u.at_ms = clock_ms_ ? clock_ms_() : 0;
  return u;
}

// -- handler_registry ---------------------------------------------------------

caf::error handler_registry::register_handler(std::string type, task_handler fn,
                                              handler_options options) {
  if (!fn)
    return make_error(errc::bad_config,
                      "handler '" + type + "': no handler function");
  return add(std::move(type), std::move(fn), std::move(options));
}

caf::error handler_registry::declare_remote(std::string type,
                                            handler_options options) {
  return add(std::move(type), {}, std::move(options));
}

caf::error handler_registry::add(std::string type, task_handler fn,
                                 handler_options options) {
  auto bad = [&type](const std::string& what) {
    return make_error(errc::bad_config, "handler '" + type + "': " + what);
  };
  if (type.empty() || type.size() > 128)
    return bad("type must be 1 to 128 characters");
  if (handlers_.count(type) > 0)
    return bad("already registered");
  if (options.resource_class.empty())
    return bad("resource class must not be empty");
  const auto& r = options.retry;
  if (r.max_attempts < 1 || r.max_attempts > 1000)
    return bad("max_attempts must be within [1, 1000]");
  if (r.timeout_ms < 0)
    return bad("timeout must not be negative");
  const auto& b = r.backoff;
  if (b.initial_delay_ms < 0 || b.max_delay_ms < b.initial_delay_ms
      || !std::isfinite(b.multiplier) || b.multiplier < 1.0
      || !(b.jitter >= 0.0 && b.jitter <= 1.0))
    return bad("invalid backoff policy");
  if (options.cancel_grace.count() < 0)
    return bad("cancel grace must not be negative");
  auto key = type;
  handlers_.emplace(
      std::move(key),
      registered_handler{std::move(type), std::move(fn), std::move(options)});
  return caf::none;
}

const registered_handler*
handler_registry::find(const std::string& type) const {
  auto i = handlers_.find(type);
  return i == handlers_.end() ? nullptr : &i->second;
}

std::vector<std::string> handler_registry::types() const {
  std::vector<std::string> result;
  for (const auto& kv : handlers_)
    if (kv.second.fn)
      result.push_back(kv.first);
  return result;
}

std::vector<std::string> handler_registry::remote_types() const {
  std::vector<std::string> result;
  for (const auto& kv : handlers_)
    if (!kv.second.fn)
      result.push_back(kv.first);
  return result;
}

} // namespace drover
