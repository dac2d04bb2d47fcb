#include "runtime/exec_cgroup.hpp"

#include "runtime/errors.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
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

/// The creator's pid in a job cgroup's name ("drover-<pid>-<n>"), or 0.
pid_t creator_of(const char* name) {
  if (std::strncmp(name, "drover-", 7) != 0)
    return 0;
  char* end = nullptr;
  auto pid = std::strtol(name + 7, &end, 10);
  return end != name + 7 && *end == '-' && pid > 0 ? static_cast<pid_t>(pid)
                                                   : 0;
}

/// Kills what is left in the job cgroups of nodes that died (their
/// programs may have left their process group) and removes them; other
/// `drover-*` children are removed once empty.
void sweep(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr)
    return;
  while (auto* entry = readdir(d)) {
    if (std::strncmp(entry->d_name, "drover-", 7) != 0)
      continue;
    auto path = dir + "/" + entry->d_name;
    auto pid = creator_of(entry->d_name);
    if (pid != 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH) {
      std::istringstream procs{read_file(path + "/cgroup.procs")};
      for (long p; procs >> p;)
        if (p > 0)
          kill(static_cast<pid_t>(p), SIGKILL);
    }
    rmdir(path.c_str()); // EBUSY while in use
  }
  closedir(d);
}

std::atomic<uint64_t> next_id{0};

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
  sweep(dir.path);
  // What every attempt will do: create a child, limit it, remove it.
  auto probe = dir.path + "/drover-probe-" + std::to_string(getpid());
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
  rmdir(probe.c_str());
  if (!err.empty())
    return bad(path, "cannot set a child cgroup's limits (" + err + ")");
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
  auto name = "drover-" + std::to_string(getpid()) + "-"
              + std::to_string(next_id.fetch_add(1));
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
    for (auto& m : made_) {
      if (m.v2 && exists(m.path + "/cgroup.kill"))
        write_file(m.path + "/cgroup.kill", "1");
      // Kill what is listed until nothing is: a process forking meanwhile
      // shows up in the next read (pids.max bounds how many).
      auto deadline
          = std::chrono::steady_clock::now() + std::chrono::seconds{2};
      while (true) {
        std::istringstream procs{read_file(m.path + "/cgroup.procs")};
        bool any = false;
        for (long pid; procs >> pid;)
          if (pid > 0) {
            any = true;
            kill(static_cast<pid_t>(pid), SIGKILL);
          }
        if (!any && rmdir(m.path.c_str()) == 0)
          break;
        if (!any && errno == ENOENT)
          break;
        if (std::chrono::steady_clock::now() >= deadline) {
          all_removed = false;
          break;
        }
        // The kernel lets go of killed processes asynchronously: a short
        // pause between rounds instead of a busy loop.
        std::this_thread::sleep_for(std::chrono::milliseconds{2});
      }
    }
  } catch (...) {
    all_removed = false;
  }
  made_.clear();
  procs_.clear();
  return all_removed;
}

} // namespace drover
