#pragma once

// The task API: what a job handler sees and returns.
//
//   drover::handler_registry handlers;
//   handlers.register_handler("thumbnail", [](drover::task_context& ctx) {
//     ctx.declare_stages({"download", "resize", "upload"});
//     ...
//     if (auto err = ctx.progress(40, "resize"))  // rejected if backwards
//       ...;
//     ctx.checkpoint(bytes);                        // resume point
//     if (ctx.cancelled()) return drover::task_outcome::cancelled();
//     return drover::task_outcome::success(R"({"url": "..."})");
//   });
//
// A handler runs on a thread of its own (never on a CAF scheduler thread)
// and may block for hours. It talks to the runtime only through its
// task_context, which is safe to use from that thread while the runtime
// cancels it from another.

#include "runtime/exec_policy.hpp"
#include "runtime/model.hpp"

#include <caf/error.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace drover {

/// How an attempt ended, as the handler reports it.
class task_outcome {
public:
  /// `result` is JSON text (validated by the runtime; "" means null).
  static task_outcome success(std::string result = {});
  /// The retry policy applies (unless `code` is listed as non-retryable).
  static task_outcome retryable(std::string code, std::string message);
  /// No further attempts: the job fails and enters the dead-letter queue.
  static task_outcome permanent(std::string code, std::string message);
  /// The handler noticed `cancelled()` and stopped.
  static task_outcome cancelled();

  completion_outcome outcome() const {
    return outcome_;
  }
  const std::string& result() const {
    return result_;
  }
  const error_info& error() const {
    return error_;
  }

private:
  completion_outcome outcome_ = completion_outcome::succeeded;
  std::string result_;
  error_info error_;
};

/// Where a task_context reports. Implemented by the worker (which turns the
/// calls into actor messages) and by tests. Called on the handler's thread.
class task_sink {
public:
  virtual ~task_sink();
  /// A validated progress report; `update.stages` is the full stage list.
  virtual void on_progress(const progress_update& update) = 0;
  /// A checkpoint to persist for a later attempt.
  virtual void on_checkpoint(const std::string& job_id, uint32_t attempt,
                             const std::string& bytes)
      = 0;
  /// The handler asks for up to `wanted` tokens of its job's rate limit
  /// (task_context::take_tokens); the answer goes to the context's
  /// tokens_answered(seq, ...), from any thread. False: this sink has no
  /// rate limiter behind it (the default), and the take fails at once.
  virtual bool on_take(const std::string& job_id, uint32_t attempt,
                       uint64_t seq, uint32_t wanted);
};

/// One attempt of one job, as its handler sees it.
class task_context {
public:
  /// `clock_ms` gives Unix milliseconds for progress timestamps.
  task_context(std::string job_id, uint32_t attempt, std::string input,
               std::string last_checkpoint, std::shared_ptr<task_sink> sink,
               std::function<int64_t()> clock_ms);

  task_context(const task_context&) = delete;
  task_context& operator=(const task_context&) = delete;

  const std::string& job_id() const {
    return job_id_;
  }
  /// 1 for the first attempt; the fencing token.
  uint32_t attempt() const {
    return attempt_;
  }
  /// The job's input, JSON text ("" when the job has none).
  const std::string& input() const {
    return input_;
  }
  /// The checkpoint saved by an earlier attempt ("" when none): resume here.
  const std::string& last_checkpoint() const {
    return last_checkpoint_;
  }

  /// Declares the job's stages, in order; all start `pending`. May be
  /// called once, before the first progress report naming a stage.
  caf::error declare_stages(std::vector<std::string> names);

  /// Reports overall progress in [0, 100]. Within an attempt the percent
  /// never decreases: a lower, negative, >100 or NaN value is rejected with
  /// `errc::invalid_value` and nothing is reported. Naming a stage marks it
  /// running and every earlier declared stage done; an undeclared stage is
  /// an error once stages were declared. `message` is a free status line.
  caf::error progress(double percent, const std::string& stage = {},
                      const std::string& message = {});

  /// Marks a declared stage as skipped or failed (e.g. "thumbnails not
  /// needed"); done/running follow from `progress`.
  caf::error set_stage_state(const std::string& stage, stage_state state);

  /// Saves opaque resume data; a later attempt reads it as
  /// `last_checkpoint()`. Limited to 16 MiB.
  caf::error checkpoint(std::string bytes);

  /// True once the runtime asked this attempt to stop (job cancelled or
  /// attempt timed out). Handlers poll it at convenient points.
  bool cancelled() const {
    return cancelled_.load(std::memory_order_acquire);
  }

  /// Takes `n` tokens of the job's rate limit (its spec's rate_limit_key;
  /// of each, when it names several; the token its dispatch took is not
  /// one of them), blocking until they
  /// are all granted, `max_wait` passed or the attempt is cancelled. The
  /// limit is the cluster's (one authority, docs/jobs.md "Rate limits and
  /// circuit breakers"): a job sending 1,000 mails at 14/s takes one token
  /// per mail, or ten before each ten. Errors: errc::rate_limited (not all
  /// granted within max_wait; how many were is in the message: they are
  /// spent), errc::unavailable (cancelled, or no connection to the
  /// coordinator), errc::invalid_request (the job names no rate limit),
  /// errc::stale_attempt (the attempt was superseded). Not to be called
  /// from two threads of one attempt at once (they take turns).
  caf::error take_tokens(uint32_t n, std::chrono::milliseconds max_wait
                                     = std::chrono::minutes{10});

  /// Called by the runtime (any thread): the answer to the sink's on_take
  /// `seq`; an answer to an earlier request is dropped.
  void tokens_answered(uint64_t seq, uint32_t granted, int64_t retry_ms,
                       caf::error err);

  /// Blocks up to `timeout` or until cancellation, whichever comes first;
  /// returns `cancelled()`. Lets handlers wait without ignoring a cancel.
  bool wait_for_cancel(std::chrono::milliseconds timeout);

  /// Called by the runtime (any thread): sets the flag, wakes waiters and
  /// runs the cancel callbacks (e.g. the exec handler's SIGTERM).
  void request_cancel();

  /// Registers `fn` to run once on `request_cancel` (or at once if already
  /// cancelled). Used by handlers that block in something other than
  /// `wait_for_cancel`.
  void on_cancel(std::function<void()> fn);

  /// The last accepted percent (0 before any report).
  double last_percent() const;

private:
  progress_update snapshot(double percent, const std::string& stage,
                           const std::string& message);

  std::string job_id_;
  uint32_t attempt_;
  std::string input_;
  std::string last_checkpoint_;
  std::shared_ptr<task_sink> sink_;
  std::function<int64_t()> clock_ms_;
  std::atomic<bool> cancelled_{false};
  mutable std::mutex mx_;
  std::condition_variable cv_;
  std::vector<std::function<void()>> cancel_callbacks_;
  /// take_tokens: one at a time (take_mx_); the answer to request
  /// take_seq_ once answered_seq_ reaches it (under mx_).
  std::mutex take_mx_;
  uint64_t take_seq_ = 0;
  uint64_t answered_seq_ = 0;
  uint32_t answer_granted_ = 0;
  int64_t answer_retry_ms_ = 0;
  caf::error answer_error_;
  std::vector<stage> stages_;
  bool stages_declared_ = false;
  double percent_ = 0;
  bool reported_ = false;
};

using task_handler = std::function<task_outcome(task_context&)>;

/// Retry policy of a job type; a job's spec may override each field.
struct retry_policy {
  uint32_t max_attempts = 3;
  backoff_policy backoff;
  /// Per-attempt timeout; 0 = none.
  int64_t timeout_ms = 0;
  /// Error codes that never retry, whatever the handler said.
  std::vector<std::string> non_retryable;
};

struct handler_options {
  /// Resource class a job of this type occupies one slot of, unless its
  /// spec asks for another.
  std::string resource_class = "cpu";
  retry_policy retry;
  /// How long a cancelled or timed-out attempt may take to stop on its own
  /// before it is forced.
  std::chrono::milliseconds cancel_grace{5000};
  /// Checks a job's input at submit time (prepare_spec), so a job whose
  /// input its handler would refuse is a 400 now rather than a
  /// dead-lettered job later. Gets the canonical JSON text ("" = none) and
  /// answers "" if acceptable, else what is wrong (it becomes the client's
  /// "input: <what>" message). Should run the same parser as the handler.
  /// Empty function = every well-formed JSON input is accepted.
  std::function<std::string(const std::string& input)> validate_input;
};

struct registered_handler {
  std::string type;
  task_handler fn;
  handler_options options;
};

/// Job types and their handlers. Filled before the node starts, then shared
/// read-only (`std::shared_ptr<const handler_registry>`).
class handler_registry {
public:
  /// Rejects an empty or duplicate type, a missing function and invalid
  /// options with `errc::bad_config`.
  caf::error register_handler(std::string type, task_handler fn,
                              handler_options options = {});

  /// A type this process accepts submissions of but does not run: worker
  /// nodes with a handler for it do (a coordinator's --remote-job-types).
  /// Its entry has no function; `options` give its defaults at submit.
  /// Same refusals as register_handler, less the function.
  caf::error declare_remote(std::string type, handler_options options = {});

  /// nullptr for an unknown type; a declared remote type has an entry
  /// whose `fn` is empty.
  const registered_handler* find(const std::string& type) const;

  /// The types this process runs (with a function), sorted.
  std::vector<std::string> types() const;

  /// The declared remote types, sorted.
  std::vector<std::string> remote_types() const;

private:
  caf::error add(std::string type, task_handler fn, handler_options options);

  std::map<std::string, registered_handler> handlers_;
};

/// Settings of the built-in job types.
struct builtin_options {
  /// exec: how long a program may take to exit after SIGTERM before SIGKILL.
  std::chrono::milliseconds exec_kill_grace{5000};
  /// exec: how much of stderr's end goes into the error message.
  size_t stderr_tail_bytes = 4096;
  /// exec: which programs may run, and their resource limits
  /// (runtime/exec_policy.hpp). The default allows no program at all.
  exec_policy exec;
};

/// Adds the built-in `exec` and `sleep` job types (see docs/handlers.md).
caf::error register_builtin_handlers(handler_registry& registry,
                                     const builtin_options& options = {});

} // namespace drover
