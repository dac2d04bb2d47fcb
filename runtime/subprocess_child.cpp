// The child side of run_subprocess (runtime/subprocess.hpp): what the
// forked child does, until it executes the program or reports why it could
// not (runtime/detail/subprocess_child.hpp). The parent side is in
// subprocess.cpp.

#include "runtime/detail/subprocess_child.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char** environ;

namespace drover::detail {
namespace {

[[noreturn]] void fail_in_child(int report_fd, child_step step,
                                int error) noexcept {
  child_report report{static_cast<int32_t>(step), error};
  // 8 bytes on a pipe are written at once or not at all; if not, the parent
  // sees exit status 127.
  [[maybe_unused]] auto written = write(report_fd, &report, sizeof(report));
  _exit(127);
}

/// Marks every descriptor from 3 up close-on-exec, so the program inherits
/// only stdin, stdout and stderr, whatever other code in the node opened
/// without O_CLOEXEC.
void cloexec_from_3() noexcept {
  if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
    return;
  // Kernels before 5.11: walk a bounded range instead.
  rlimit limit{};
  int max_fd = 65536;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < 65536)
    max_fd = static_cast<int>(limit.rlim_cur);
  for (int fd = 3; fd < max_fd; ++fd)
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

} // namespace

[[noreturn]] void run_child(const child_plan& plan) noexcept {
  // A group of its own, so signals reach everything the program starts.
  setpgid(0, 0);
  // Dies with the forking thread; checks that the parent didn't die first.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != plan.parent)
    _exit(127);
  // Into the job's cgroups before anything else can fork.
  for (size_t i = 0; i < plan.cgroup_count; ++i) {
    int fd = open(plan.cgroup_procs[i], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1)
      fail_in_child(plan.report_fd, child_step::cgroup, errno);
    close(fd);
  }
  // Handlers are reset by exec, but ignored signals and the signal mask are
  // inherited: the node blocks SIGTERM/SIGINT in all threads and may ignore
  // SIGPIPE, which the program must not inherit. Dispositions first, so no
  // handler of the parent can run in the child once the mask is cleared.
  struct sigaction default_action;
  std::memset(&default_action, 0, sizeof(default_action));
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction(sig, &default_action, nullptr); // EINVAL for libc-internal ones
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr); // NOLINT: the child has 1 thread
  if (plan.user_id >= 0) {
    // A user namespace of our own; the parent maps the id (newuidmap needs
    // our pid and an unmapped namespace), then we become that user.
    auto id = static_cast<uid_t>(plan.user_id);
    char byte = 1;
    if (unshare(CLONE_NEWUSER) != 0)
      fail_in_child(plan.report_fd, child_step::userns, errno);
    if (write(plan.userns_ready_fd, &byte, 1) != 1
        || read(plan.userns_go_fd, &byte, 1) != 1)
      _exit(127); // the parent gave up and says why
    if (setgroups(0, nullptr) != 0 || setresgid(id, id, id) != 0
        || setresuid(id, id, id) != 0)
      fail_in_child(plan.report_fd, child_step::userns, errno);
    // A change of credentials clears the parent-death signal.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != plan.parent)
      _exit(127);
  }
  // Move every descriptor we need above 2 first, so that installing one as
  // stdin/stdout/stderr can't clobber another (the node may run with 0-2
  // closed, and then pipes get low numbers).
  int report_fd = plan.report_fd;
  if (report_fd < 3 && (report_fd = fcntl(report_fd, F_DUPFD_CLOEXEC, 3)) < 0)
    _exit(127);
  int stdio[3];
  for (int i = 0; i < 3; ++i) {
    stdio[i] = plan.stdio[i];
    if (stdio[i] < 3 && (stdio[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3)) < 0)
      fail_in_child(report_fd, child_step::setup, errno);
  }
  for (int i = 0; i < 3; ++i)
    if (dup2(stdio[i], i) < 0) // clears close-on-exec on 0-2
      fail_in_child(report_fd, child_step::setup, errno);
  cloexec_from_3();
  if (plan.cwd != nullptr && chdir(plan.cwd) != 0)
    fail_in_child(report_fd, child_step::chdir, errno);
  for (size_t i = 0; i < plan.limit_count; ++i) {
    const auto& wanted = plan.limits[i];
    auto resource = static_cast<__rlimit_resource_t>(wanted.resource);
    rlimit current{};
    if (getrlimit(resource, &current) != 0)
      fail_in_child(report_fd, child_step::limits, errno);
    // Never above the hard limit we have: only root could raise it.
    rlimit next{std::min<rlim_t>(wanted.soft, current.rlim_max),
                std::min<rlim_t>(wanted.hard, current.rlim_max)};
    next.rlim_cur = std::min(next.rlim_cur, next.rlim_max);
    if (setrlimit(resource, &next) != 0)
      fail_in_child(report_fd, child_step::limits, errno);
  }
  if (plan.no_new_privileges && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    fail_in_child(report_fd, child_step::setup, errno);
  // execvp searches the PATH of `environ`, so an overridden PATH applies.
  if (plan.envp != nullptr)
    environ = plan.envp;
  if (plan.program != nullptr)
    execv(plan.program, plan.argv);
  else
    execvp(plan.argv[0], plan.argv);
  fail_in_child(report_fd, child_step::exec, errno);
}

} // namespace drover::detail
