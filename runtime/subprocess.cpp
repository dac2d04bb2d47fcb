// run_subprocess's parent side (runtime/subprocess.hpp): spawning the
// child, then feeding and reading its pipes, passing on a stop request and
// reaping it. What the forked child does is in subprocess_child.cpp.

#include "runtime/subprocess.hpp"

#include "runtime/detail/subprocess_child.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace drover {

// -- stop_signal --------------------------------------------------------------

std::shared_ptr<stop_signal> stop_signal::make() {
  int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0)
    return nullptr;
  return std::shared_ptr<stop_signal>{new stop_signal(fd)};
}

stop_signal::~stop_signal() {
  close(fd_);
}

void stop_signal::raise() const noexcept {
  uint64_t one = 1;
  // Only fails when the counter would overflow, i.e. it is raised already.
  [[maybe_unused]] auto written = write(fd_, &one, sizeof(one));
}

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

using detail::child_plan;
using detail::child_report;
using detail::child_step;
using detail::run_child;

constexpr size_t io_chunk = size_t{64} * 1024;

/// Without a pidfd (kernels before 5.3) the loop checks for the child's
/// exit this often instead of being woken by it.
constexpr int fallback_exit_check_ms = 50;

/// Owns one file descriptor.
class unique_fd {
public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {
    // nop
  }
  unique_fd(unique_fd&& other) noexcept : fd_(other.fd_) {
    other.fd_ = -1;
  }
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) {
      reset(other.fd_);
      other.fd_ = -1;
    }
    return *this;
  }
  ~unique_fd() {
    reset();
  }

  int get() const noexcept {
    return fd_;
  }
  explicit operator bool() const noexcept {
    return fd_ >= 0;
  }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0)
      close(fd_);
    fd_ = fd;
  }

private:
  int fd_ = -1;
};

/// Both ends close-on-exec and blocking; the parent makes its own end
/// non-blocking (O_NONBLOCK on pipe2 would also hit the program's end).
bool make_pipe(unique_fd& read_end, unique_fd& write_end) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0)
    return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return true;
}

bool set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

// -- parent side --------------------------------------------------------------

/// Owns a forked child: until it is reaped, destroying this kills the
/// child's group and reaps the child (e.g. when a callback throws).
class child_process {
public:
  explicit child_process(pid_t pid) : pid_(pid) {
    // nop
  }
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;
  ~child_process() {
    if (!reaped_) {
      signal_group(SIGKILL);
      int status = 0;
      reap(status);
    }
  }

  /// The group id equals the child's pid; it stays reserved until the child
  /// is reaped, so this never hits an unrelated group.
  void signal_group(int sig) const noexcept {
    kill(-pid_, sig);
  }

  /// Without reaping: has the child ended? (Only for the no-pidfd fallback.)
  bool has_exited() const noexcept {
    siginfo_t info;
    std::memset(&info, 0, sizeof(info));
    if (waitid(P_PID, static_cast<id_t>(pid_), &info,
               WEXITED | WNOHANG | WNOWAIT)
        != 0)
      return errno == ECHILD;
    return info.si_pid != 0;
  }

  /// Blocks until the child ended and reaps it; false if its status is lost
  /// (someone else reaped it). `cpu_seconds` = its CPU time (user + system).
  bool reap(int& status, double* cpu_seconds = nullptr) noexcept {
    pid_t rc;
    rusage usage{};
    do {
      rc = wait4(pid_, &status, 0, &usage);
    } while (rc < 0 && errno == EINTR);
    reaped_ = true;
    if (cpu_seconds != nullptr && rc == pid_)
      *cpu_seconds
          = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
            + static_cast<double>(usage.ru_utime.tv_usec
                                  + usage.ru_stime.tv_usec)
                  / 1e6;
    return rc == pid_;
  }

private:
  pid_t pid_;
  bool reaped_ = false;
};

/// Blocks SIGPIPE in this thread while writing to the program's stdin, so
/// a program that closed its stdin yields EPIPE instead of a SIGPIPE that
/// would kill the node; a SIGPIPE raised meanwhile is consumed.
class sigpipe_guard {
public:
  sigpipe_guard() {
    sigemptyset(&pipe_set_);
    sigaddset(&pipe_set_, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe_set_, &old_mask_);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;
  ~sigpipe_guard() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        timespec no_wait{0, 0};
        sigtimedwait(&pipe_set_, nullptr, &no_wait);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }

private:
  sigset_t pipe_set_;
  sigset_t old_mask_;
  bool was_pending_ = false;
};

/// Reads one chunk from a readable pipe; false once it reached EOF or
/// failed (the caller then stops watching it).
bool pump(int fd, std::vector<char>& buf, const output_callback& sink) {
  for (;;) {
    auto n = read(fd, buf.data(), buf.size());
    if (n > 0) {
      if (sink)
        sink(std::string_view{buf.data(), static_cast<size_t>(n)});
      return true;
    }
    if (n == 0)
      return false;
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

/// After the program ended: reads what its pipe holds right now, without
/// waiting for EOF (a process that left the group may keep the pipe open).
void drain(int fd, std::vector<char>& buf, const output_callback& sink) {
  int available = 0;
  if (ioctl(fd, FIONREAD, &available) != 0)
    return;
  while (available > 0) {
    auto want = std::min(buf.size(), static_cast<size_t>(available));
    auto n = read(fd, buf.data(), want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return;
    if (sink)
      sink(std::string_view{buf.data(), static_cast<size_t>(n)});
    available -= static_cast<int>(n);
  }
}

/// Writes what the pipe takes of `rest`; false once everything is written
/// or the program closed its end.
bool feed(int fd, std::string_view& rest) {
  sigpipe_guard guard;
  for (;;) {
    auto n = write(fd, rest.data(), std::min(rest.size(), io_chunk));
    if (n >= 0) {
      rest.remove_prefix(static_cast<size_t>(n));
      return !rest.empty();
    }
    if (errno == EINTR)
      continue;
    return errno == EAGAIN || errno == EWOULDBLOCK; // EPIPE: stdin closed
  }
}

int ms_until(steady_clock::time_point deadline) {
  auto now = steady_clock::now();
  if (deadline <= now)
    return 0;
  // Round up: waking early would only spin once more.
  auto ms
      = std::chrono::duration_cast<milliseconds>(deadline - now).count() + 1;
  return ms > INT_MAX ? INT_MAX : static_cast<int>(ms);
}

/// `variables` as "NAME=value" strings, replacing same-named entries of
/// the current environment.
std::vector<std::string> merged_environment(
    const std::vector<std::pair<std::string, std::string>>& variables) {
  std::vector<std::string> result;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    std::string_view str{*entry};
    auto name = str.substr(0, str.find('='));
    auto overridden
        = std::any_of(variables.begin(), variables.end(),
                      [name](const auto& kv) { return kv.first == name; });
    if (!overridden)
      result.emplace_back(str);
  }
  for (const auto& [name, value] : variables) {
    result.push_back(name);
    result.back() += '=';
    result.back() += value;
  }
  return result;
}

} // namespace

subprocess_result run_subprocess(const subprocess_spec& spec,
                                 const output_callback& on_stdout,
                                 const output_callback& on_stderr,
                                 const stop_signal* stop) {
  subprocess_result result;
  auto failed
      = [&result](subprocess_result::status how, const char* step, int error) {
          result.how = how;
          result.step = step;
          result.error = error;
          return result;
        };
  if (spec.argv.empty())
    return failed(subprocess_result::status::exec_failed, "execvp", EINVAL);
  // Everything the child reads is built here, before fork.
  std::vector<char*> argv;
  for (const auto& arg : spec.argv)
    argv.push_back(const_cast<char*>(arg.c_str())); // execvp doesn't write
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  std::vector<char*> envp;
  if (spec.clear_env) {
    for (const auto& [name, value] : spec.env)
      env_strings.push_back(name + "=" + value);
    for (auto& entry : env_strings)
      envp.push_back(entry.data());
    envp.push_back(nullptr);
  } else if (!spec.env.empty()) {
    env_strings = merged_environment(spec.env);
    for (auto& entry : env_strings)
      envp.push_back(entry.data());
    envp.push_back(nullptr);
  }
  unique_fd stdin_child, stdin_parent;
  if (spec.stdin_text) {
    if (!make_pipe(stdin_child, stdin_parent)
        || !set_nonblocking(stdin_parent.get()))
      return failed(subprocess_result::status::spawn_failed, "pipe2", errno);
  } else {
    stdin_child.reset(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!stdin_child)
      return failed(subprocess_result::status::spawn_failed, "open /dev/null",
                    errno);
  }
  unique_fd stdout_parent, stdout_child, stderr_parent, stderr_child;
  unique_fd report_parent, report_child;
  unique_fd ready_parent, ready_child, go_child, go_parent;
  if (spec.user_id && !spec.map_user)
    return failed(subprocess_result::status::exec_failed, "userns", EINVAL);
  if (spec.user_id
      && (!make_pipe(ready_parent, ready_child)
          || !make_pipe(go_child, go_parent)))
    return failed(subprocess_result::status::spawn_failed, "pipe2", errno);
  if (!make_pipe(stdout_parent, stdout_child)
      || !make_pipe(stderr_parent, stderr_child)
      || !make_pipe(report_parent, report_child)
      || !set_nonblocking(stdout_parent.get())
      || !set_nonblocking(stderr_parent.get()))
    return failed(subprocess_result::status::spawn_failed, "pipe2", errno);
  std::vector<const char*> cgroup_procs;
  for (auto& path : spec.cgroup_procs)
    cgroup_procs.push_back(path.c_str());
  child_plan plan{spec.program.empty() ? nullptr : spec.program.c_str(),
                  argv.data(),
                  envp.empty() ? nullptr : envp.data(),
                  spec.cwd.empty() ? nullptr : spec.cwd.c_str(),
                  {stdin_child.get(), stdout_child.get(), stderr_child.get()},
                  report_child.get(),
                  getpid(),
                  spec.limits.data(),
                  spec.limits.size(),
                  cgroup_procs.data(),
                  cgroup_procs.size(),
                  spec.user_id ? static_cast<int64_t>(*spec.user_id) : -1,
                  ready_child.get(),
                  go_child.get(),
                  spec.no_new_privileges};
  pid_t pid = fork();
  if (pid < 0)
    return failed(subprocess_result::status::spawn_failed, "fork", errno);
  if (pid == 0)
    run_child(plan);
  child_process child{pid};
  // The child does this too; doing it here as well means kill(-pid) works
  // whichever of the two runs first. Fails harmlessly once it has exec'd.
  setpgid(pid, pid);
  stdin_child.reset();
  stdout_child.reset();
  stderr_child.reset();
  report_child.reset();
  ready_child.reset();
  go_child.reset();
  if (spec.user_id) {
    // The child's namespace exists once it says so (EOF: it failed, and
    // its report says why); map it, then let it go on.
    char byte = 0;
    ssize_t n;
    do {
      n = read(ready_parent.get(), &byte, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1) {
      auto why = spec.map_user(pid);
      if (!why.empty()) {
        result.message = why;
        return failed(subprocess_result::status::spawn_failed, "map_user", 0);
      }
      if (write(go_parent.get(), &byte, 1) != 1)
        return failed(subprocess_result::status::spawn_failed, "map_user",
                      errno);
    }
    ready_parent.reset();
    go_parent.reset();
  }
  // EOF (the close-on-exec report pipe closed by a successful exec) or a
  // report. The wait is short: the child makes a few local calls first.
  child_report report{};
  ssize_t report_size;
  do {
    report_size = read(report_parent.get(), &report, sizeof(report));
  } while (report_size < 0 && errno == EINTR);
  report_parent.reset();
  if (report_size == static_cast<ssize_t>(sizeof(report))) {
    int status = 0;
    child.reap(status);
    auto step = static_cast<child_step>(report.step);
    return failed(subprocess_result::status::exec_failed,
                  step == child_step::exec     ? "execvp"
                  : step == child_step::chdir  ? "chdir"
                  : step == child_step::limits ? "setrlimit"
                  : step == child_step::cgroup ? "cgroup"
                  : step == child_step::userns ? "userns"
                                               : "setup",
                  report.error);
  }
  // Readable once the child has ended (it stays a zombie until reaped).
  unique_fd exit_fd{static_cast<int>(syscall(SYS_pidfd_open, pid, 0))};
  enum slot { stop_slot, exit_slot, stdout_slot, stderr_slot, stdin_slot };
  pollfd fds[5];
  fds[stop_slot] = {stop != nullptr ? stop->fd() : -1, POLLIN, 0};
  fds[exit_slot] = {exit_fd.get(), POLLIN, 0};
  fds[stdout_slot] = {stdout_parent.get(), POLLIN, 0};
  fds[stderr_slot] = {stderr_parent.get(), POLLIN, 0};
  fds[stdin_slot] = {stdin_parent.get(), POLLOUT, 0};
  std::string_view pending_stdin;
  if (spec.stdin_text)
    pending_stdin = *spec.stdin_text;
  if (pending_stdin.empty()) {
    stdin_parent.reset();
    fds[stdin_slot].fd = -1;
  }
  auto grace = std::clamp<int64_t>(spec.kill_grace.count(), 0,
                                   int64_t{365} * 24 * 3600 * 1000);
  // Pending SIGKILL after a stop request; the poll timeout is its deadline.
  bool kill_pending = false;
  steady_clock::time_point kill_at;
  std::vector<char> buf(io_chunk);
  bool exited = false;
  while (!exited) {
    int timeout = kill_pending ? ms_until(kill_at) : -1;
    if (!exit_fd)
      timeout = timeout < 0 ? fallback_exit_check_ms
                            : std::min(timeout, fallback_exit_check_ms);
    int ready = poll(fds, 5, timeout);
    if (ready < 0 && errno != EINTR) {
      // Can't watch the program any more: stop it rather than leave it.
      auto error = errno;
      return failed(subprocess_result::status::spawn_failed, "poll", error);
    }
    if (ready > 0) {
      if (fds[stdout_slot].revents != 0
          && !pump(stdout_parent.get(), buf, on_stdout)) {
        stdout_parent.reset();
        fds[stdout_slot].fd = -1;
      }
      if (fds[stderr_slot].revents != 0
          && !pump(stderr_parent.get(), buf, on_stderr)) {
        stderr_parent.reset();
        fds[stderr_slot].fd = -1;
      }
      if (fds[stdin_slot].revents != 0
          && !feed(stdin_parent.get(), pending_stdin)) {
        stdin_parent.reset();
        fds[stdin_slot].fd = -1;
      }
      if (fds[stop_slot].revents != 0) {
        fds[stop_slot].fd = -1;
        result.stop_requested = true;
        child.signal_group(SIGTERM);
        child.signal_group(SIGCONT); // a stopped program can't act on TERM
        kill_pending = true;
        kill_at = steady_clock::now() + milliseconds{grace};
      }
      if (fds[exit_slot].revents != 0)
        exited = true;
    }
    if (!exit_fd && !exited)
      exited = child.has_exited();
    if (!exited && kill_pending && steady_clock::now() >= kill_at) {
      child.signal_group(SIGKILL);
      kill_pending = false;
    }
  }
  // The leader is a zombie, so its group id is still reserved: whatever it
  // left running in the background dies now.
  child.signal_group(SIGKILL);
  int status = 0;
  bool have_status = child.reap(status, &result.cpu_seconds);
  if (stdout_parent)
    drain(stdout_parent.get(), buf, on_stdout);
  if (stderr_parent)
    drain(stderr_parent.get(), buf, on_stderr);
  if (!have_status) {
    result.how = subprocess_result::status::unknown;
  } else if (WIFEXITED(status)) {
    result.how = subprocess_result::status::exited;
    result.exit_code = WEXITSTATUS(status);
  } else {
    result.how = subprocess_result::status::signaled;
    result.signal = WTERMSIG(status);
  }
  return result;
}

} // namespace drover
