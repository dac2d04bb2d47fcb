#pragma once

// What run_subprocess (runtime/subprocess.cpp) hands its forked child and
// what the child reports back when it cannot exec the program; the child's
// side is in runtime/subprocess_child.cpp. Internal to those two files.

#include "runtime/subprocess.hpp"

#include <cstddef>
#include <cstdint>

#include <sys/types.h>

namespace drover::detail {

/// Everything the child needs, prepared before fork: the child of a
/// multi-threaded process may only call async-signal-safe functions until
/// it execs, so it must not allocate.
struct child_plan {
  /// Executed with execv when set; else argv[0] with execvp.
  const char* program;
  char* const* argv;
  /// nullptr = keep the inherited environment.
  char** envp;
  /// nullptr = keep the inherited working directory.
  const char* cwd;
  /// Become the program's stdin, stdout and stderr.
  int stdio[3];
  /// Write end of the report pipe (close-on-exec: EOF means exec worked).
  int report_fd;
  pid_t parent;
  const subprocess_rlimit* limits;
  size_t limit_count;
  const char* const* cgroup_procs;
  size_t cgroup_count;
  /// -1 = none; else the uid and gid to become in a new user namespace,
  /// once the parent answers `userns_ready_fd` on `userns_go_fd`.
  int64_t user_id;
  int userns_ready_fd;
  int userns_go_fd;
  bool no_new_privileges;
};

enum class child_step : int32_t {
  setup = 1,
  chdir = 2,
  exec = 3,
  limits = 4,
  cgroup = 5,
  userns = 6
};

/// What a child that could not exec tells the parent.
struct child_report {
  int32_t step;
  int32_t error;
};

/// In the forked child: sets up and executes `plan`'s program. Never
/// returns: a step that fails is reported on `plan.report_fd` (a
/// child_report) and the child exits with status 127.
[[noreturn]] void run_child(const child_plan& plan) noexcept;

} // namespace drover::detail
