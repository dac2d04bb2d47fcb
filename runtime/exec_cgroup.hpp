#pragma once

// Per-job cgroups for `exec` programs (issue 11 item 3; docs/handlers.md
// and docs/security.md are the user-facing contract).
//
// setrlimit bounds each process, and RLIMIT_NPROC counts a whole *user*:
// with programs running as the node's user, one fork bomb blocks every
// job. A cgroup bounds one job however many processes it starts. The node
// is given, with `--exec-cgroup DIR` (repeatable), cgroup directories it
// may create children in (delegated to its user by whoever runs it as
// root; `scripts/run` does this where it can):
//
// - cgroup v2: DIR's `cgroup.subtree_control` enables `pids` and/or
//   `memory` (and, as v2 delegation requires, the node itself runs inside
//   the delegated subtree, so it may move its children between cgroups);
// - cgroup v1: DIR is in the `pids` hierarchy (it has `pids.max`) or in
//   the `memory` hierarchy (`memory.limit_in_bytes`); give one of each.
//
// For every attempt the worker creates `DIR/drover-<pid>-<token>-<n>` in
// each DIR (token: random, chosen once per process, so a later run with
// the same pid tells its cgroups from ours), writes the job's limits
// (pids.max = its `processes`; the memory limit = `--exec-memory-mb`, swap
// included where the kernel accounts it), and the forked child joins them
// (writes 0 to their `cgroup.procs`) before it executes the program, so
// everything the program starts is inside. When the program has ended,
// every process in the job's cgroups *and in any cgroup the job made below
// them* is killed — also those that left the process group (setsid, double
// fork) — and the directories are removed bottom-up, pass after pass, until
// they are gone or a deadline passes.
//
// Several nodes may share a DIR: a node removes only cgroups whose creator
// is known to be gone (see probe_cgroup), never another live node's.
//
// Processes are killed through a pidfd opened before the cgroup's list is
// read again, so a pid reused between the two reads is not hit unless its
// new process is in the job's cgroup too; without pidfds (kernels before
// 5.3) a plain kill(), with that race open.
//
// What it does not do: without --exec-user-id, programs run as the node's
// user, who owns the job's cgroup, so a program that means to can raise
// its own job's limits, move to a sibling job's cgroup, or chmod DIR so that
// the node can no longer create cgroups in it (later attempts then fail with
// spawn_failed). DIR's own limits, set by root, bound all jobs together and are
// out of the node's reach (scripts/run sets none: an operator can). Per-job
// limits stop a runaway job, not a hostile one (docs/security.md).
//
// Linux only. The v1 path is what the tests exercise (the development
// machine has cgroup v1 controllers); v2 differs only in file names
// (memory.max, memory.swap.max, cgroup.kill).

#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace drover {

/// A configured cgroup directory and what it offers.
struct cgroup_dir {
  std::string path;
  bool v2 = false;
  bool pids = false;
  bool memory = false;
};

/// Checks `path`: an absolute path to a cgroup directory (v1 or v2) that
/// offers `pids` or `memory` and in which this process can create and
/// limit a child cgroup, a child process can join it (/bin/true is run in
/// it and must exit 0), and the child cgroup can be removed.
/// errc::bad_config naming the path and what is missing otherwise. First
/// kills and removes (with everything below them) the
/// `drover-<pid>-<token>-<n>` children whose creator is gone: its pid is
/// not alive, or it is this process's pid with another token (an earlier
/// run with the same pid). Entries of other live pids and names of other
/// forms are left alone. Blocks while /bin/true runs (run_subprocess).
caf::expected<cgroup_dir> probe_cgroup(const std::string& path);

/// Checks a node's list: each directory probed, no controller twice.
caf::expected<std::vector<cgroup_dir>>
probe_cgroups(const std::vector<std::string>& paths);

/// True when one of `dirs` offers the controller.
bool offers_pids(const std::vector<cgroup_dir>& dirs);
bool offers_memory(const std::vector<cgroup_dir>& dirs);

/// One attempt's cgroups: created with its limits, killed and removed by
/// `release` (or the destructor). Movable, not copyable.
class job_cgroup {
public:
  /// Creates the attempt's cgroup in every directory; `processes` goes to
  /// pids.max where a pids controller is offered, `memory_bytes` to the
  /// memory limit where a memory controller is. Nothing is left behind on
  /// error (errc::runtime_error naming the file).
  static caf::expected<job_cgroup> create(const std::vector<cgroup_dir>& dirs,
                                          uint64_t processes,
                                          uint64_t memory_bytes);

  job_cgroup() = default;
  job_cgroup(job_cgroup&& other) noexcept;
  job_cgroup& operator=(job_cgroup&& other) noexcept;
  job_cgroup(const job_cgroup&) = delete;
  job_cgroup& operator=(const job_cgroup&) = delete;
  ~job_cgroup();

  /// The `cgroup.procs` files the child joins before exec.
  const std::vector<std::string>& procs_files() const {
    return procs_;
  }

  /// How many times the kernel's OOM killer killed a process of the job
  /// for its memory limit (0 without a memory controller).
  uint64_t oom_kills() const;

  /// Kills every process in the job's cgroups and in every cgroup below
  /// them, and removes them all bottom-up; waits up to about two seconds
  /// per directory for the kernel to let go of them. Idempotent. False if
  /// a directory could not be removed (it is left, and killed and removed
  /// by the probe of the next node start after this process is gone).
  bool release() noexcept;

private:
  struct one {
    std::string path;
    bool v2 = false;
    bool memory = false;
  };
  std::vector<one> made_;
  std::vector<std::string> procs_;
};

} // namespace drover
