// The built-in job types `exec` and `sleep`; docs/handlers.md is the
// user-facing contract (inputs, results, error codes, cancellation).
// Their inputs are parsed in builtin_input.cpp.

#include "runtime/detail/builtin_input.hpp"

#include "runtime/errors.hpp"
#include "runtime/exec_policy.hpp"
#include "runtime/exec_user.hpp"
#include "runtime/json_text.hpp"
#include "runtime/subprocess.hpp"
#include "runtime/task.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

namespace drover {
namespace {

using detail::parse_exec_input;
using detail::parse_sleep_input;
using detail::quote_for_message;
using detail::sleep_request;

/// exec: how much of the end of stdout goes into the result.
constexpr size_t stdout_tail_bytes = 4096;

/// exec: a stdout line longer than this is plain output, never a progress
/// report or checkpoint (bounds the line buffer). A checkpoint line may be
/// this long; a progress line is at most 4 KiB (max_progress_line).
constexpr size_t max_protocol_line = 64 * 1024 + 16;
constexpr size_t max_progress_line = 4096;

/// exec: the runtime's forced stop comes this long after our SIGKILL.
constexpr std::chrono::milliseconds exec_stop_margin{2000};

// -- text helpers -------------------------------------------------------------

std::string errno_text(int error) {
  char buf[256];
  return strerror_r(error, buf, sizeof(buf)); // GNU variant: returns the text
}

std::string trim_trailing_space(std::string str) {
  auto end = str.find_last_not_of(" \t\r\n");
  str.erase(end == std::string::npos ? 0 : end + 1);
  return str;
}

/// The last `capacity` bytes of a stream, in bounded memory.
class tail_buffer {
public:
  explicit tail_buffer(size_t capacity) : capacity_(capacity) {
    // nop
  }

  void append(std::string_view bytes) {
    if (bytes.size() >= capacity_) {
      truncated_ = truncated_ || bytes.size() > capacity_ || !buf_.empty();
      buf_.assign(bytes.substr(bytes.size() - capacity_));
      return;
    }
    buf_.append(bytes);
    if (buf_.size() > 2 * capacity_) { // amortised trimming
      buf_.erase(0, buf_.size() - capacity_);
      truncated_ = true;
    }
  }

  /// As valid UTF-8; a character cut in half at the start is dropped.
  std::string text() const {
    std::string_view tail{buf_};
    if (tail.size() > capacity_)
      tail.remove_prefix(tail.size() - capacity_);
    if (truncated_ || tail.size() < buf_.size())
      for (int i = 0; i < 3 && !tail.empty()
                      && (static_cast<unsigned char>(tail[0]) & 0xC0) == 0x80;
           ++i)
        tail.remove_prefix(1);
    return valid_utf8(tail);
  }

private:
  size_t capacity_;
  std::string buf_;
  bool truncated_ = false;
};

// -- exec ---------------------------------------------------------------------

/// Splits the program's stdout into lines: `PROGRESS <percent> [stage]`
/// lines become progress reports, `CHECKPOINT <text>` lines checkpoints,
/// everything else goes to a bounded tail.
class stdout_scanner {
public:
  explicit stdout_scanner(task_context& ctx) : ctx_(ctx) {
    // nop
  }

  void feed(std::string_view bytes) {
    while (!bytes.empty()) {
      auto newline = bytes.find('\n');
      auto piece = bytes.substr(
          0, newline == std::string_view::npos ? bytes.size() : newline + 1);
      bytes.remove_prefix(piece.size());
      if (in_long_line_) {
        tail_.append(piece);
        in_long_line_ = piece.back() != '\n';
        continue;
      }
      line_.append(piece);
      if (line_.back() == '\n') {
        end_line();
      } else if (line_.size() > max_protocol_line) {
        tail_.append(line_);
        line_.clear();
        in_long_line_ = true;
      }
    }
  }

  /// At EOF: a last line without a newline counts as a line.
  void finish() {
    if (!line_.empty())
      end_line();
  }

  std::string tail() const {
    return tail_.text();
  }

private:
  void end_line() {
    if (!report_progress(line_) && !save_checkpoint(line_))
      tail_.append(line_);
    line_.clear();
  }

  /// False if `line` isn't a checkpoint line: "CHECKPOINT", one blank, then
  /// the text (to the end of the line, without its CR LF; may be empty),
  /// which must be valid UTF-8 without NUL (it reaches the next attempt as
  /// an environment variable).
  bool save_checkpoint(std::string_view line) {
    constexpr std::string_view keyword = "CHECKPOINT";
    if (line.substr(0, keyword.size()) != keyword
        || line.size() == keyword.size()
        || (line[keyword.size()] != ' ' && line[keyword.size()] != '\t'))
      return false;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
      line.remove_suffix(1);
    line.remove_prefix(std::min(line.size(), keyword.size() + 1));
    if (line.find('\0') != std::string_view::npos || valid_utf8(line) != line)
      return false;
    // The runtime persists it; a refused one (too large) is dropped like a
    // refused progress report.
    [[maybe_unused]] auto err = ctx_.checkpoint(std::string{line});
    return true;
  }

  /// False if `line` isn't a progress line. A progress line the context
  /// rejects (backwards, out of range) is dropped: a program's report
  /// mistakes don't fail its job.
  bool report_progress(std::string_view line) {
    constexpr std::string_view keyword = "PROGRESS";
    constexpr std::string_view blanks = " \t";
    if (line.size() > max_progress_line + 1) // + its newline
      return false;
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r'))
      line.remove_suffix(1);
    if (line.substr(0, keyword.size()) != keyword
        || line.size() == keyword.size()
        || blanks.find(line[keyword.size()]) == std::string_view::npos)
      return false;
    line.remove_prefix(keyword.size());
    line.remove_prefix(std::min(line.find_first_not_of(blanks), line.size()));
    auto token = line.substr(0, line.find_first_of(blanks));
    double percent = 0;
    auto [end, ec]
        = std::from_chars(token.data(), token.data() + token.size(), percent);
    if (token.empty() || ec != std::errc{}
        || end != token.data() + token.size())
      return false;
    line.remove_prefix(token.size());
    line.remove_prefix(std::min(line.find_first_not_of(blanks), line.size()));
    line.remove_suffix(
        line.size() - std::min(line.find_last_not_of(blanks) + 1, line.size()));
    [[maybe_unused]] auto rejected = ctx_.progress(percent, valid_utf8(line));
    return true;
  }

  task_context& ctx_;
  std::string line_;
  bool in_long_line_ = false;
  tail_buffer tail_{stdout_tail_bytes};
};

std::string signal_text(int sig) {
  auto abbrev = sigabbrev_np(sig);
  auto text = "killed by signal " + std::to_string(sig);
  if (abbrev != nullptr)
    text += std::string{" (SIG"} + abbrev + ")";
  return text;
}

/// The setrlimit list of a job's effective limits (exec_policy.hpp). With
/// a pids cgroup the process limit is the job's pids.max instead of the
/// user-wide RLIMIT_NPROC.
std::vector<subprocess_rlimit> rlimits_of(const exec_limits& limits,
                                          bool pids_cgroup) {
  // SIGXCPU at the soft limit, SIGKILL a second later for a program that
  // catches it.
  std::vector<subprocess_rlimit> list{
      {RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1},
      {RLIMIT_AS, limits.address_space_mb << 20, limits.address_space_mb << 20},
      {RLIMIT_NOFILE, limits.open_files, limits.open_files},
      {RLIMIT_CORE, 0, 0}};
  if (!pids_cgroup)
    list.push_back({RLIMIT_NPROC, limits.processes, limits.processes});
  return list;
}

/// The checks and settings that turn a parsed input into what runs, or the
/// outcome that refuses it. Repeats submit's checks on purpose: this worker
/// decides what it runs (exec_policy.hpp).
std::optional<task_outcome> prepare_exec(task_context& ctx,
                                         const builtin_options& options,
                                         subprocess_spec& spec,
                                         exec_limits& limits) {
  exec_request req;
  if (auto err = parse_exec_input(ctx.input(), req); !err.empty())
    return task_outcome::permanent("invalid_input", err);
  auto program = resolve_program(options.exec, req.argv.front());
  if (!program && !is(program.error(), errc::not_found))
    return task_outcome::permanent(
        "exec_not_allowed",
        program.error().context().match_elements<std::string>()
            ? program.error().context().get_as<std::string>(0)
            : describe(program.error()));
  std::string resolved;
  if (auto err = exec_check(options.exec, req, resolved); !err.empty())
    return task_outcome::permanent("invalid_input", err);
  // Not found on the fixed PATH (development mode): leave the lookup, and
  // its error, to execvp on that PATH rather than run a file in cwd.
  spec.program = program ? *program : std::string{};
  const char* home = std::getenv("HOME");
  spec.env = exec_environment(req, home != nullptr ? home : "", ctx.job_id(),
                              ctx.attempt(), ctx.last_checkpoint());
  spec.clear_env = true;
  spec.no_new_privileges = true;
  spec.limits = rlimits_of(req.limits, offers_pids(options.exec.cgroups));
  if (auto id = options.exec.user_id) {
    spec.user_id = *id;
    spec.map_user = [id = *id](int pid) { return map_exec_user(pid, id); };
  }
  limits = req.limits;
  spec.argv = std::move(req.argv);
  spec.cwd = std::move(req.cwd);
  spec.stdin_text = std::move(req.stdin_text);
  return std::nullopt;
}

task_outcome run_exec(task_context& ctx, const builtin_options& options) {
  subprocess_spec spec;
  exec_limits limits;
  if (auto refused = prepare_exec(ctx, options, spec, limits))
    return std::move(*refused);
  if (!spec.cwd.empty()) {
    struct stat info;
    if (stat(spec.cwd.c_str(), &info) != 0)
      return task_outcome::permanent("invalid_input",
                                     "cwd " + quote_for_message(spec.cwd) + ": "
                                         + errno_text(errno));
    if (!S_ISDIR(info.st_mode))
      return task_outcome::permanent("invalid_input",
                                     "cwd " + quote_for_message(spec.cwd)
                                         + " is not a directory");
  }
  spec.kill_grace = options.exec_kill_grace;
  // The callback stays registered after we return (there's no way to
  // unregister), so it owns the eventfd it writes to.
  auto stop = stop_signal::make();
  if (!stop) {
    auto error = errno;
    return task_outcome::retryable("spawn_failed", "cannot create an eventfd: "
                                                       + errno_text(error));
  }
  ctx.on_cancel([stop] { stop->raise(); });
  if (ctx.cancelled())
    return task_outcome::cancelled();
  job_cgroup cgroup;
  if (!options.exec.cgroups.empty()) {
    auto made = job_cgroup::create(options.exec.cgroups, limits.processes,
                                   options.exec.memory_mb << 20);
    if (!made)
      return task_outcome::retryable("spawn_failed", describe(made.error()));
    cgroup = std::move(*made);
    spec.cgroup_procs = cgroup.procs_files();
  }
  stdout_scanner out{ctx};
  tail_buffer err_tail{options.stderr_tail_bytes};
  auto result = run_subprocess(
      spec, [&out](std::string_view bytes) { out.feed(bytes); },
      [&err_tail](std::string_view bytes) { err_tail.append(bytes); },
      stop.get());
  // Whatever the program left running, in its group or not, dies here.
  auto oom_kills = cgroup.oom_kills();
  cgroup.release();
  out.finish();
  using status = subprocess_result::status;
  auto stderr_or = [&err_tail](const std::string& fallback) {
    auto text = trim_trailing_space(err_tail.text());
    return text.empty() ? fallback : text;
  };
  switch (result.how) {
    case status::spawn_failed:
      if (!result.message.empty())
        return task_outcome::retryable("spawn_failed", result.message);
      return task_outcome::retryable(
          "spawn_failed", result.step + " failed: " + errno_text(result.error));
    case status::exec_failed:
      if (result.step == "execvp")
        return task_outcome::permanent(
            "exec_failed",
            "cannot execute " + quote_for_message(spec.argv[0]) + ": "
                + errno_text(result.error)
                + (result.error == ENOMEM
                       ? " (address-space limit "
                             + std::to_string(limits.address_space_mb)
                             + " MiB, RLIMIT_AS)"
                       : ""));
      if (result.step == "setrlimit")
        return task_outcome::retryable("spawn_failed",
                                       "cannot apply the resource limits: "
                                           + errno_text(result.error));
      if (result.step == "userns")
        return task_outcome::retryable("spawn_failed",
                                       "cannot become the exec user: "
                                           + errno_text(result.error));
      if (result.step == "cgroup")
        return task_outcome::retryable("spawn_failed",
                                       "cannot join the job's cgroup: "
                                           + errno_text(result.error));
      if (result.step == "chdir")
        return task_outcome::permanent("exec_failed",
                                       "cannot change to directory "
                                           + quote_for_message(spec.cwd) + ": "
                                           + errno_text(result.error));
      return task_outcome::retryable("spawn_failed",
                                     "cannot set up the program's stdio: "
                                         + errno_text(result.error));
    default:
      break;
  }
  if (result.stop_requested)
    return task_outcome::cancelled();
  switch (result.how) {
    case status::exited: {
      if (result.exit_code == 0)
        return task_outcome::success(
            "{\"exit_code\":0,\"stdout_tail\":" + json_quote(out.tail()) + "}");
      auto code = std::to_string(result.exit_code);
      return task_outcome::retryable("exit_" + code,
                                     stderr_or("exited with status " + code));
    }
    case status::signaled:
      // SIGXCPU at the soft limit; SIGKILL at the hard one if it caught
      // that (also counted: a program that got SIGKILL for another reason
      // has not used its whole CPU time).
      if (result.signal == SIGXCPU
          || (result.signal == SIGKILL
              && result.cpu_seconds >= static_cast<double>(limits.cpu_seconds)))
        return task_outcome::retryable("cpu_limit",
                                       "exceeded its CPU time limit of "
                                           + std::to_string(limits.cpu_seconds)
                                           + " s (RLIMIT_CPU): "
                                           + signal_text(result.signal));
      if (result.signal == SIGKILL && oom_kills > 0)
        return task_outcome::retryable(
            "memory_limit",
            "exceeded its memory limit of "
                + std::to_string(options.exec.memory_mb)
                + " MiB (memory cgroup): " + signal_text(result.signal));
      return task_outcome::retryable("signal_" + std::to_string(result.signal),
                                     stderr_or(signal_text(result.signal)));
    default:
      return task_outcome::retryable("exit_unknown",
                                     "the program ended but its exit status "
                                     "was lost (reaped elsewhere)");
  }
}

// -- sleep --------------------------------------------------------------------

/// Takes the sleep's tokens, one at a time (as a job sending one mail per
/// token would); an empty outcome when all were taken.
std::optional<task_outcome> take_sleep_tokens(task_context& ctx,
                                              int64_t tokens) {
  for (int64_t i = 0; i < tokens; ++i) {
    auto err = ctx.take_tokens(1, std::chrono::hours{24});
    if (!err)
      continue;
    if (ctx.cancelled())
      return task_outcome::cancelled();
    if (is(err, errc::invalid_request))
      return task_outcome::permanent("no_rate_limit", describe(err));
    return task_outcome::retryable("tokens_unavailable", describe(err));
  }
  return std::nullopt;
}

task_outcome run_sleep(task_context& ctx) {
  sleep_request req;
  if (auto err = parse_sleep_input(ctx.input(), req); !err.empty())
    return task_outcome::permanent("invalid_input", err);
  if (auto out = take_sleep_tokens(ctx, req.tokens))
    return *out;
  auto result = "{\"slept_ms\":" + std::to_string(req.ms)
                + (req.tokens > 0 ? ",\"tokens\":" + std::to_string(req.tokens)
                                  : std::string{})
                + "}";
  if (req.ms == 0)
    return task_outcome::success(result);
  using std::chrono::milliseconds;
  if (req.steps == 0) {
    if (ctx.wait_for_cancel(milliseconds{req.ms}))
      return task_outcome::cancelled();
    return task_outcome::success(result);
  }
  // Step i ends at ms * i / steps, so the steps add up to exactly ms.
  for (int64_t i = 1; i <= req.steps; ++i) {
    auto step = req.ms * i / req.steps - req.ms * (i - 1) / req.steps;
    if (ctx.wait_for_cancel(milliseconds{step}))
      return task_outcome::cancelled();
    // Rising by construction, so never rejected.
    [[maybe_unused]] auto err = ctx.progress(100.0 * static_cast<double>(i)
                                             / static_cast<double>(req.steps));
  }
  return task_outcome::success(result);
}

} // namespace

caf::error register_builtin_handlers(handler_registry& registry,
                                     const builtin_options& options) {
  constexpr std::chrono::milliseconds max_kill_grace{24 * 3600 * 1000};
  if (options.exec_kill_grace.count() < 0
      || options.exec_kill_grace > max_kill_grace)
    return make_error(errc::bad_config,
                      "exec_kill_grace must be within [0, 24 h]");
  {
    const auto& l = options.exec.limits;
    if (l.cpu_seconds < 1 || l.address_space_mb < 1 || l.open_files < 1
        || l.processes < 1 || l.address_space_mb > (uint64_t{1} << 40))
      return make_error(errc::bad_config,
                        "exec limits must be at least 1 (address space at "
                        "most 2^40 MiB)");
  }
  // Both or neither.
  for (const char* type : {"exec", "sleep"})
    if (registry.find(type) != nullptr)
      return make_error(errc::bad_config, std::string{"handler '"} + type
                                              + "': already registered");
  handler_options exec_options;
  exec_options.resource_class = "cpu";
  exec_options.cancel_grace = options.exec_kill_grace + exec_stop_margin;
  auto exec_fn
      = [options](task_context& ctx) { return run_exec(ctx, options); };
  // Submit-time checks: the input, and the node's exec policy (allow-list,
  // reserved env names, limits); the worker repeats both (prepare_exec).
  exec_options.validate_input
      = [policy = options.exec](const std::string& input) {
          exec_request req;
          if (auto err = parse_exec_input(input, req); !err.empty())
            return err;
          std::string program;
          return exec_check(policy, req, program);
        };
  if (auto err = registry.register_handler("exec", exec_fn, exec_options))
    return err;
  handler_options sleep_options;
  sleep_options.resource_class = "cpu";
  sleep_options.cancel_grace = std::chrono::milliseconds{1000};
  sleep_options.validate_input = [](const std::string& input) {
    sleep_request req;
    return parse_sleep_input(input, req);
  };
  return registry.register_handler("sleep", run_sleep, sleep_options);
}

} // namespace drover
