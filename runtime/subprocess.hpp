#pragma once

// Runs one external program to completion on the calling thread. The
// program's argv is executed directly (fork + execv/execvp, never a shell),
// in a process group of its own, with optional setrlimit limits and
// no-new-privileges, with stdout and stderr streamed to callbacks and stdin
// fed from a string (or /dev/null). A stop request makes the group get
// SIGTERM, then SIGKILL after a grace period. When `run_subprocess` returns,
// the program has been reaped and every process still in its group has been
// sent SIGKILL, so nothing it started in the background outlives it (except
// processes that left the group on purpose, e.g. with setsid; the exec
// job's cgroup, runtime/exec_cgroup.hpp, takes care of those).
//
// Linux only: uses pidfd_open, eventfd, prctl(PR_SET_PDEATHSIG) and
// close_range. The exec job type (runtime/builtin_handlers.cpp) is the user.

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace drover {

/// Asks a running `run_subprocess` to stop its program. Owns an eventfd;
/// `raise` only writes to it, so it may be called from any thread (and from
/// a signal handler), any number of times, even after `run_subprocess`
/// returned. Shared because whoever may call `raise` (e.g. a callback
/// registered with `task_context::on_cancel`, which is never unregistered)
/// must keep the descriptor open for as long as it might call it.
class stop_signal {
public:
  /// nullptr, with errno set, when no eventfd can be created.
  static std::shared_ptr<stop_signal> make();

  ~stop_signal();
  stop_signal(const stop_signal&) = delete;
  stop_signal& operator=(const stop_signal&) = delete;

  void raise() const noexcept;

  /// Becomes readable once `raise` was called.
  int fd() const noexcept {
    return fd_;
  }

private:
  explicit stop_signal(int fd) : fd_(fd) {
    // nop
  }

  int fd_;
};

/// One setrlimit the child applies before exec (clamped to its hard limit,
/// which an unprivileged process cannot raise).
struct subprocess_rlimit {
  int resource = 0; // RLIMIT_CPU, RLIMIT_AS, ...
  uint64_t soft = 0;
  uint64_t hard = 0;
};

/// What to run and how.
struct subprocess_spec {
  /// Program and arguments, passed unchanged. Must not be empty; no element
  /// may contain a NUL byte. Unless `program` is set, argv[0] is looked up
  /// in the child's PATH unless it contains a slash.
  std::vector<std::string> argv;
  /// The file to execute (execv, no PATH search), with `argv` as its
  /// arguments; empty = argv[0] as described above.
  std::string program;
  /// Added to the caller's environment, replacing variables of the same
  /// name (or, with `clear_env`, the whole environment). Names must be
  /// non-empty and contain neither '=' nor NUL.
  std::vector<std::pair<std::string, std::string>> env;
  /// The program gets exactly `env`, nothing of the caller's environment.
  bool clear_env = false;
  /// Applied in the child before exec; a failure is exec_failed "setrlimit".
  std::vector<subprocess_rlimit> limits;
  /// `cgroup.procs` files the child joins (writes 0 to) first, before it
  /// sets anything else up, so that the program and everything it starts
  /// are inside (runtime/exec_cgroup.hpp); a failure is exec_failed
  /// "cgroup".
  std::vector<std::string> cgroup_procs;
  /// Run the program as another user, without privileges: the child
  /// enters a user namespace of its own (after joining the cgroups), the
  /// caller's `map_user(child pid)` maps `user_id` there to the same id
  /// outside (runtime/exec_user.hpp: newuidmap/newgidmap) and returns ""
  /// or why it could not, and the child becomes that uid and gid before it
  /// executes. The caller keeps power over the program (signals, the
  /// cgroup); the program has none over the caller. A failure in the child
  /// is exec_failed "userns"; one in `map_user` spawn_failed "map_user".
  std::optional<uint32_t> user_id;
  std::function<std::string(int pid)> map_user;
  /// PR_SET_NO_NEW_PRIVS in the child: exec ignores set-user-ID and
  /// set-group-ID bits and file capabilities, for the program and
  /// everything it starts.
  bool no_new_privileges = false;
  /// Working directory of the program; empty = the caller's.
  std::string cwd;
  /// Written to the program's stdin, which is closed afterwards (or as soon
  /// as the program closes its end). nullopt = stdin is /dev/null.
  std::optional<std::string> stdin_text;
  /// After a stop request: how long the group has to exit after SIGTERM
  /// before it gets SIGKILL.
  std::chrono::milliseconds kill_grace{5000};
};

/// How the program ended.
struct subprocess_result {
  enum class status {
    /// Ended with `exit_code`.
    exited,
    /// Ended by signal `signal`.
    signaled,
    /// The program never started: a resource ran out in the caller
    /// (`step` = "pipe2", "fork", ...; `error` = errno). Worth retrying.
    spawn_failed,
    /// The child could not set up or run the program: `step` = "chdir",
    /// "execvp", "setrlimit", "cgroup", "userns" or "setup"; `error` =
    /// errno.
    exec_failed,
    /// The program ended, but something else reaped it first (e.g. SIGCHLD
    /// set to SIG_IGN), so its status is unknown.
    unknown,
  };

  status how = status::unknown;
  int exit_code = -1;
  int signal = 0;
  int error = 0;
  std::string step;
  /// spawn_failed "map_user": what the caller's map_user said.
  std::string message;
  /// True if a stop request was seen before the program's end was: the
  /// program then got SIGTERM (and maybe SIGKILL).
  bool stop_requested = false;
  /// CPU time (user + system) the program used, seconds; what RLIMIT_CPU
  /// counts. Its children's only if it waited for them.
  double cpu_seconds = 0;
};

/// Receives a chunk of the program's output. Runs on the calling thread.
using output_callback = std::function<void(std::string_view)>;

/// Runs `spec` and blocks until the program has ended; see the file
/// comment. Output chunks go to `on_stdout` / `on_stderr` as they arrive
/// (either may be empty). `stop` may be nullptr; otherwise it must stay
/// alive until this returns. The calling thread must stay alive until this
/// returns too (PR_SET_PDEATHSIG is tied to the thread that forks). Never
/// throws for problems of the program; exceptions from the callbacks or
/// from allocation propagate after the program's group has been killed and
/// the program reaped.
subprocess_result run_subprocess(const subprocess_spec& spec,
                                 const output_callback& on_stdout,
                                 const output_callback& on_stderr,
                                 const stop_signal* stop);

} // namespace drover
