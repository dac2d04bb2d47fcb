#pragma once

// What an `exec` job may run, and within which limits (issue 11 item 3;
// docs/handlers.md and docs/security.md are the user-facing contract).
//
// One home for these decisions: submit validation (the exec handler's
// `validate_input`) and the worker right before it forks both call the
// functions below with the node's policy, so a job is refused at submit
// and again on the worker (defence in depth: another node, or a job stored
// before the allow-list changed, may reach a worker that would not run it).
//
// Programs. A job's argv[0] is resolved to an absolute path first: a name
// with a slash must be absolute and is taken as it is; a name without one
// is looked up on `fixed_exec_path` (never on a PATH the job or the node's
// environment supplies). The resolved path must then be one of the
// allow-list's paths, compared as strings: listing `/usr/bin/tar` allows
// `tar` and `/usr/bin/tar`, not `/bin/tar` (a different string even where
// /bin is a link to /usr/bin). The worker executes the resolved path, so
// what was checked is what runs; argv[0] is passed to the program as the
// job wrote it. No shell is involved unless a shell is itself allowed.
//
// Environment. Programs get a fixed, minimal environment (never the node's,
// which may hold secrets): PATH = `fixed_exec_path`, HOME, LANG/LC_ALL/TZ
// when the node has them, the job's `env`, then DROVER_JOB_ID,
// DROVER_ATTEMPT and DROVER_CHECKPOINT. A job may not set PATH, any LD_*
// variable, the other variables glibc drops for set-user-ID programs
// (GCONV_PATH, LOCPATH, ...) or anything starting with DROVER_: those would
// let an allowed program load or run code the allow-list never saw.
//
// Limits. Every program runs with setrlimit limits: CPU seconds, address
// space, open files and processes (RLIMIT_NPROC counts every process and
// thread of the program's *user*, not of the job: with one shared user, a
// fork bomb in one job blocks new processes in every job of that user), no
// core files, and no new privileges (set-user-ID bits are ignored). A job
// may lower the node's limits in its input, never raise them. With a pids
// cgroup (runtime/exec_cgroup.hpp) `processes` is the job's own pids.max
// instead, and RLIMIT_NPROC is left alone; with a memory cgroup the job's
// processes together get `memory_mb`.

#include "runtime/exec_cgroup.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace drover {

/// Where program names without a slash are looked up, and the PATH programs
/// get.
extern const char* const fixed_exec_path;

/// Per-job resource limits; each at least 1.
struct exec_limits {
  /// RLIMIT_CPU: CPU seconds (user + system) before SIGXCPU, and SIGKILL
  /// one second later.
  uint64_t cpu_seconds = 3600;
  /// RLIMIT_AS: virtual address space, MiB. Memory requests beyond it fail
  /// (malloc returns NULL), they are not killed.
  uint64_t address_space_mb = 4096;
  /// RLIMIT_NOFILE: open file descriptors.
  uint64_t open_files = 1024;
  /// RLIMIT_NPROC: processes and threads of the program's user (per user,
  /// see the file comment). Not enforced for root. With a pids cgroup: the
  /// job's own processes and threads (pids.max).
  uint64_t processes = 512;
};

/// The node's exec policy.
struct exec_policy {
  /// Development mode: any program may run (resolved as above). Only for a
  /// node without API keys whose listeners are all on loopback.
  bool allow_any = false;
  /// Absolute paths of the programs jobs may run (resolve_allow_list).
  std::vector<std::string> allowed;
  /// The node's limits: every job's ceiling and default.
  exec_limits limits;
  /// Delegated cgroup directories for per-job cgroups (probed at start);
  /// empty = none.
  std::vector<cgroup_dir> cgroups;
  /// memory limit of a job's processes together, MiB (memory cgroup only).
  uint64_t memory_mb = 4096;
  /// Programs run as this uid and gid in a user namespace of their own
  /// (runtime/exec_user.hpp), checked at start; none = the node's user.
  std::optional<uint32_t> user_id;
};

/// The limits a job asks for in its input; unset = the node's.
struct exec_limit_request {
  std::optional<uint64_t> cpu_seconds;
  std::optional<uint64_t> address_space_mb;
  std::optional<uint64_t> open_files;
  std::optional<uint64_t> processes;
};

/// An exec job's input, parsed (see docs/handlers.md).
struct exec_request {
  std::vector<std::string> argv;
  std::vector<std::pair<std::string, std::string>> env;
  std::string cwd;
  std::optional<std::string> stdin_text;
  exec_limit_request requested;
  /// Effective limits: the node's, lowered by `requested` (exec_check).
  exec_limits limits;
};

/// Turns --exec-allow entries into absolute paths: an absolute path is
/// kept as given, a bare name is looked up on `fixed_exec_path`; each must
/// name an existing regular file with an execute bit. errc::bad_config
/// naming the entry otherwise (a relative path with a slash is refused).
caf::expected<std::vector<std::string>>
resolve_allow_list(const std::vector<std::string>& entries);

/// Resolves `program` (a job's argv[0]) as described above. The resolved
/// absolute path, or the reason it may not run (names the program).
caf::expected<std::string> resolve_program(const exec_policy& policy,
                                           const std::string& program);

/// Checks a parsed request against `policy`: the program (resolve_program),
/// reserved environment names, and job limits above the node's. Fills
/// `req.limits` with the effective limits. "" if it may run, else the
/// reason. `program_path` receives the resolved path.
std::string exec_check(const exec_policy& policy, exec_request& req,
                       std::string& program_path);

/// Whether a job may set the environment variable `name` (see above).
bool reserved_exec_env(const std::string& name);

/// The environment a program gets (see the file comment), as NAME=value
/// pairs; `home` is the node user's home directory.
std::vector<std::pair<std::string, std::string>>
exec_environment(const exec_request& req, const std::string& home,
                 const std::string& job_id, uint32_t attempt,
                 const std::string& checkpoint);

} // namespace drover
