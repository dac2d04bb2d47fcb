#include "runtime/exec_cgroup.hpp"

#include "runtime/errors.hpp"
#include "runtime/subprocess.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace drover {

namespace {

bool exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path};
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// Writes `value` to a cgroup file; errno text on failure, "" on success.
std::string write_file(const std::string& path, const std::string& value) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return path + ": " + std::strerror(errno);
  auto n = write(fd, value.data(), value.size());
  auto error = errno;
  close(fd);
  if (n != static_cast<ssize_t>(value.size()))
    return path + ": " + std::strerror(n < 0 ? error : EIO);
  return {};
}

/// True when the space-separated list `line` holds `word`.
bool lists(const std::string& line, const std::string& word) {
  std::istringstream in{line};
  std::string w;
  while (in >> w)
    if (w == word)
      return true;
  return false;
}

/// The value after `key ` in a "key value" per line file, or 0.
uint64_t keyed_value(const std::string& text, const std::string& key) {
  std::istringstream in{text};
  std::string k;
  uint64_t v = 0;
  while (in >> k >> v)
    if (k == key)
      return v;
  return 0;
}

/// Chosen once per process: with the pid, it tells this node's cgroups
/// from those of an earlier run that had the same pid (a container's
/// stable pid 1). 16 hex digits, no '-'.
const std::string& process_token() {
  static const std::string token = [] {
    uint64_t bits = 0;
    if (getrandom(&bits, sizeof(bits), 0) != static_cast<ssize_t>(sizeof(bits)))
      bits = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
    char text[17];
    std::snprintf(text, sizeof(text), "%016llx",
                  static_cast<unsigned long long>(bits));
    return std::string{text};
  }();
  return token;
}

/// Who made a `drover-<pid>-<token>-<n>` entry; pid 0 when the name has
/// another form (then nobody's liveness can be told, and it is left).
struct creator {
  pid_t pid = 0;
  std::string token;
};

creator creator_of(const char* name) {
  if (std::strncmp(name, "drover-", 7) != 0)
    return {};
  char* end = nullptr;
  auto pid = std::strtol(name + 7, &end, 10);
  if (end == name + 7 || *end != '-' || pid <= 0)
    return {};
  const char* token = end + 1;
  const char* dash = std::strchr(token, '-');
  if (dash == nullptr || dash == token || dash[1] == '\0')
    return {};
  return {static_cast<pid_t>(pid), std::string{token, dash}};
}

/// The pids listed in `dir_fd`'s cgroup.procs. A job can take read
/// permission from a cgroup of its (same-uid) making: given back once.
std::vector<pid_t> members(int dir_fd) {
  int fd = openat(dir_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == EACCES
      && fchmodat(dir_fd, "cgroup.procs", 0644, 0) == 0)
    fd = openat(dir_fd, "cgroup.procs", O_RDONLY | O_CLOEXEC);
  std::vector<pid_t> pids;
  if (fd < 0)
    return pids;
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
    text.append(buf, static_cast<size_t>(n));
  close(fd);
  std::istringstream in{text};
  for (long p; in >> p;)
    if (p > 0)
      pids.push_back(static_cast<pid_t>(p));
  std::sort(pids.begin(), pids.end());
  return pids;
}

/// SIGKILLs every process listed in `dir_fd`'s cgroup.procs; true if any
/// was listed. Each pid is pinned with a pidfd first and signalled only if
/// the cgroup still lists it after that, so a pid that was reused between
/// the read and the signal is not hit (unless its new process is in the
/// job's cgroup too). Without pidfds (old kernel, no descriptors left) a
/// plain kill(), with that race open.
bool kill_members(int dir_fd) {
  auto listed = members(dir_fd);
  constexpr size_t batch = 64; // descriptors held at a time
  for (size_t at = 0; at < listed.size(); at += batch) {
    std::vector<std::pair<pid_t, int>> pinned;
    for (size_t i = at; i < std::min(listed.size(), at + batch); ++i) {
      auto pid = listed[i];
      int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
      if (fd >= 0)
        pinned.emplace_back(pid, fd);
      else if (errno != ESRCH)
        kill(pid, SIGKILL);
    }
    if (pinned.empty())
      continue;
    auto still = members(dir_fd);
    for (auto& [pid, fd] : pinned) {
      if (std::binary_search(still.begin(), still.end(), pid))
        syscall(SYS_pidfd_send_signal, fd, SIGKILL, nullptr, 0);
      close(fd);
    }
  }
  return !listed.empty();
}

/// One pass over the cgroup `name` in `parent_fd` and everything below it,
/// depth-first: kills the members of each cgroup, then removes the
/// directories bottom-up (those still busy stay for the next pass).
/// Directory descriptors, not paths: a job nesting cgroups deeper than
/// PATH_MAX is still reached.
void clear_pass(int parent_fd, const char* name) {
  int fd = openat(parent_fd, name,
                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0 && errno == EACCES && fchmodat(parent_fd, name, 0755, 0) == 0)
    fd = openat(parent_fd, name,
                O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  kill_members(fd);
  std::vector<std::string> children;
  int list_fd = dup(fd);
  if (DIR* d = list_fd >= 0 ? fdopendir(list_fd) : nullptr) {
    while (auto* entry = readdir(d)) {
      if (std::strcmp(entry->d_name, ".") == 0
          || std::strcmp(entry->d_name, "..") == 0)
        continue;
      struct stat info;
      if (entry->d_type == DT_DIR
          || (entry->d_type == DT_UNKNOWN
              && fstatat(fd, entry->d_name, &info, AT_SYMLINK_NOFOLLOW) == 0
              && S_ISDIR(info.st_mode)))
        children.emplace_back(entry->d_name);
    }
    closedir(d);
  } else if (list_fd >= 0) {
    close(list_fd);
  }
  for (auto& child : children)
    clear_pass(fd, child.c_str());
  close(fd);
  unlinkat(parent_fd, name, AT_REMOVEDIR); // EBUSY while in use
}

/// Kills every process in the cgroup `path` and in every cgroup below it
/// (a job may make child cgroups in its own and move into them) and removes
/// them all, bottom-up, pass after pass until `path` is gone (true) or
/// `deadline` passes (false).
bool clear_cgroup(const std::string& path, bool v2,
                  std::chrono::steady_clock::time_point deadline) {
  auto slash = path.rfind('/');
  auto parent = slash == 0 ? std::string{"/"} : path.substr(0, slash);
  auto name = path.substr(slash + 1);
  int parent_fd = open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (parent_fd < 0)
    return !exists(path);
  bool gone = false;
  for (;;) {
    // v2 kills the whole subtree at once; the pass below catches what
    // forked meanwhile (pids.max bounds how many).
    if (v2 && exists(path + "/cgroup.kill"))
      write_file(path + "/cgroup.kill", "1");
    clear_pass(parent_fd, name.c_str());
    struct stat info;
    if (fstatat(parent_fd, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0
        && errno == ENOENT) {
      gone = true;
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline)
      break;
    // The kernel lets go of killed processes asynchronously: a short
    // pause between passes instead of a busy loop.
    std::this_thread::sleep_for(std::chrono::milliseconds{2});
  }
  close(parent_fd);
  return gone;
}

/// At start: kills and removes the job cgroups (with whatever a job made
/// below them) of nodes known to be gone: a `drover-<pid>-<token>-<n>`
/// whose pid is dead, or is ours with another token (an earlier run with
/// the same pid). Leaves entries of other live pids (another node sharing
/// DIR) and names of any other form.
void sweep(const std::string& dir, bool v2) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr)
    return;
  std::vector<std::string> stale;
  while (auto* entry = readdir(d)) {
    auto who = creator_of(entry->d_name);
    if (who.pid == 0)
      continue;
    bool dead = who.pid == getpid() ? who.token != process_token()
                                    : kill(who.pid, 0) != 0 && errno == ESRCH;
    if (dead)
      stale.emplace_back(entry->d_name);
  }
  closedir(d);
  for (auto& name : stale)
    clear_cgroup(dir + "/" + name, v2,
                 std::chrono::steady_clock::now() + std::chrono::seconds{2});
}

std::atomic<uint64_t> next_id{0};

/// A fresh name for one of this process's cgroups (jobs and the probe).
std::string next_name() {
  return "drover-" + std::to_string(getpid()) + "-" + process_token() + "-"
         + std::to_string(next_id.fetch_add(1));
}

caf::error bad(const std::string& path, const std::string& what) {
  return make_error(errc::bad_config, "exec-cgroup " + path + ": " + what);
}

} // namespace

caf::expected<cgroup_dir> probe_cgroup(const std::string& path) {
  cgroup_dir dir;
  dir.path = path;
  while (dir.path.size() > 1 && dir.path.back() == '/')
    dir.path.pop_back();
  if (dir.path.empty() || dir.path.front() != '/')
    return bad(path, "must be an absolute path");
  if (!exists(dir.path + "/cgroup.procs"))
    return bad(path, "not a cgroup directory (no cgroup.procs)");
  if (exists(dir.path + "/cgroup.controllers")) {
    dir.v2 = true;
    auto enabled = read_file(dir.path + "/cgroup.subtree_control");
    dir.pids = lists(enabled, "pids");
    dir.memory = lists(enabled, "memory");
    if (!dir.pids && !dir.memory)
      return bad(path, "cgroup v2 directory whose cgroup.subtree_control "
                       "enables neither pids nor memory");
  } else {
    dir.pids = exists(dir.path + "/pids.max");
    dir.memory = exists(dir.path + "/memory.limit_in_bytes");
    if (!dir.pids && !dir.memory)
      return bad(path, "cgroup v1 directory of neither the pids nor the "
                       "memory hierarchy");
  }
  sweep(dir.path, dir.v2);
  // What every attempt will do: create a child, limit it, have a child
  // process join it, remove it.
  auto probe = dir.path + "/" + next_name();
  if (mkdir(probe.c_str(), 0755) != 0)
    return bad(path, std::string{"cannot create a child cgroup ("}
                         + std::strerror(errno)
                         + "): delegate it to the node's user");
  std::string err;
  if (dir.pids)
    err = write_file(probe + "/pids.max", "max");
  if (err.empty() && dir.memory)
    err = write_file(probe
                         + (dir.v2 ? "/memory.max" : "/memory.limit_in_bytes"),
                     dir.v2 ? "max" : "-1");
  std::string join;
  if (err.empty()) {
    subprocess_spec spec;
    spec.argv = {"/bin/true"};
    spec.program = "/bin/true";
    spec.cgroup_procs = {probe + "/cgroup.procs"};
    auto ran = run_subprocess(spec, {}, {}, nullptr);
    using status = subprocess_result::status;
    if (ran.how == status::exec_failed && ran.step == "cgroup")
      join = "a child process cannot join a child cgroup ("
             + std::string{std::strerror(ran.error)} + ")";
    else if (ran.how == status::exec_failed || ran.how == status::spawn_failed)
      join = "cannot run /bin/true in a child cgroup (" + ran.step + ": "
             + std::strerror(ran.error) + ")";
    else if (ran.how != status::exited || ran.exit_code != 0)
      join = "/bin/true in a child cgroup did not exit 0";
  }
  bool removed = clear_cgroup(probe, dir.v2,
                              std::chrono::steady_clock::now()
                                  + std::chrono::seconds{2});
  if (!err.empty())
    return bad(path, "cannot set a child cgroup's limits (" + err + ")");
  if (!join.empty())
    return bad(path, join);
  if (!removed)
    return bad(path, "cannot remove a child cgroup (" + probe + ")");
  return dir;
}

caf::expected<std::vector<cgroup_dir>>
probe_cgroups(const std::vector<std::string>& paths) {
  std::vector<cgroup_dir> dirs;
  for (auto& p : paths) {
    auto dir = probe_cgroup(p);
    if (!dir)
      return std::move(dir.error());
    if ((dir->pids && offers_pids(dirs))
        || (dir->memory && offers_memory(dirs)))
      return bad(p, "offers a controller an earlier --exec-cgroup offers");
    dirs.push_back(std::move(*dir));
  }
  return dirs;
}

bool offers_pids(const std::vector<cgroup_dir>& dirs) {
  for (auto& d : dirs)
    if (d.pids)
      return true;
  return false;
}

bool offers_memory(const std::vector<cgroup_dir>& dirs) {
  for (auto& d : dirs)
    if (d.memory)
      return true;
  return false;
}

caf::expected<job_cgroup>
job_cgroup::create(const std::vector<cgroup_dir>& dirs, uint64_t processes,
                   uint64_t memory_bytes) {
  job_cgroup job;
  auto name = next_name();
  for (auto& d : dirs) {
    auto path = d.path + "/" + name;
    if (mkdir(path.c_str(), 0755) != 0)
      return make_error(errc::unavailable, "cannot create cgroup " + path + ": "
                                               + std::strerror(errno));
    job.made_.push_back({path, d.v2, d.memory});
    std::string err;
    if (d.pids)
      err = write_file(path + "/pids.max", std::to_string(processes));
    if (err.empty() && d.memory) {
      auto bytes = std::to_string(memory_bytes);
      if (d.v2) {
        err = write_file(path + "/memory.max", bytes);
        if (err.empty() && exists(path + "/memory.swap.max"))
          err = write_file(path + "/memory.swap.max", "0");
      } else {
        err = write_file(path + "/memory.limit_in_bytes", bytes);
        // Memory plus swap, where the kernel accounts swap: not above it.
        if (err.empty() && exists(path + "/memory.memsw.limit_in_bytes"))
          err = write_file(path + "/memory.memsw.limit_in_bytes", bytes);
      }
    }
    if (!err.empty())
      return make_error(errc::unavailable, "cannot limit a job cgroup: " + err);
    job.procs_.push_back(path + "/cgroup.procs");
  }
  return job;
}

job_cgroup::job_cgroup(job_cgroup&& other) noexcept
    : made_(std::move(other.made_)), procs_(std::move(other.procs_)) {
  other.made_.clear();
  other.procs_.clear();
}

job_cgroup& job_cgroup::operator=(job_cgroup&& other) noexcept {
  if (this != &other) {
    release();
    made_ = std::move(other.made_);
    procs_ = std::move(other.procs_);
    other.made_.clear();
    other.procs_.clear();
  }
  return *this;
}

job_cgroup::~job_cgroup() {
  release();
}

uint64_t job_cgroup::oom_kills() const {
  uint64_t kills = 0;
  for (auto& m : made_)
    if (m.memory)
      kills += keyed_value(
          read_file(m.path + (m.v2 ? "/memory.events" : "/memory.oom_control")),
          "oom_kill");
  return kills;
}

bool job_cgroup::release() noexcept {
  bool all_removed = true;
  try {
    for (auto& m : made_)
      if (!clear_cgroup(m.path, m.v2,
                        std::chrono::steady_clock::now()
                            + std::chrono::seconds{2}))
        all_removed = false;
  } catch (...) {
    // Allocation failed: what is left is swept by the next node start.
    all_removed = false;
  }
  made_.clear();
  procs_.clear();
  return all_removed;
}

} // namespace drover
