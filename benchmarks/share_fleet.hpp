#pragma once

// The drover-node children of one benchmark configuration
// (drover_bench_share): started by name, each with its log in the
// fleet's folder, read with deadlines, stopped in groups. Whatever way a
// configuration ends, no child outlives its fleet (the destructor kills
// what is still running, by PID).

#include "benchmarks/issue6_support.hpp"
#include "benchmarks/node_child.hpp"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <deque>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace drover::bench {

/// Calls `done` every `interval` until it is true (true) or `timeout` has
/// passed (false).
template <class Pred>
bool poll_within(std::chrono::milliseconds timeout,
                 std::chrono::milliseconds interval, Pred done) {
  auto deadline = steady::now() + timeout;
  for (;;) {
    if (done())
      return true;
    if (steady::now() > deadline)
      return false;
    std::this_thread::sleep_for(interval);
  }
}

/// CPU seconds of each of `pids` now (0 for one that is gone).
inline std::map<int, double> cpu_of(const std::vector<int>& pids) {
  std::map<int, double> out;
  for (auto pid : pids)
    out[pid] = pid_cpu_seconds(pid);
  return out;
}

/// CPU seconds since `start` of the processes in `start` and `now_pids`
/// (one not in `start` began since: all of its CPU counts); `missed`
/// counts those of `start` that are gone (their CPU is not known).
inline double cpu_since(const std::map<int, double>& start,
                        const std::vector<int>& now_pids, int& missed) {
  auto pids = now_pids;
  for (const auto& entry : start)
    pids.push_back(entry.first);
  std::sort(pids.begin(), pids.end());
  pids.erase(std::unique(pids.begin(), pids.end()), pids.end());
  double total = 0;
  for (auto pid : pids) {
    auto now = pid_cpu_seconds(pid);
    auto s = start.find(pid);
    if (now <= 0 && s != start.end()) {
      ++missed;
      continue;
    }
    total += now - (s == start.end() ? 0 : s->second);
  }
  return total;
}

/// Context switches (voluntary and not) of every thread of `pid` now:
/// how often its threads went to sleep or were put aside.
inline int64_t context_switches(int pid) {
  int64_t total = 0;
  auto dir = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = opendir(dir.c_str())) {
    while (auto* e = readdir(d)) {
      if (e->d_name[0] == '.')
        continue;
      std::ifstream in{dir + "/" + e->d_name + "/status"};
      std::string line;
      while (std::getline(in, line))
        if (line.find("ctxt_switches:") != std::string::npos)
          total += std::atoll(line.c_str() + line.find(':') + 1);
    }
    closedir(d);
  }
  return total;
}

inline int64_t context_switches(const std::vector<int>& pids) {
  int64_t total = 0;
  for (auto pid : pids)
    total += context_switches(pid);
  return total;
}

struct node_proc : node_child {
  std::string name;
  std::string log;
};

class fleet {
public:
  /// Logs go to `dir` (created).
  explicit fleet(std::string dir) : dir(std::move(dir)) {
    mkdir(this->dir.c_str(), 0755);
  }

  fleet(const fleet&) = delete;
  fleet& operator=(const fleet&) = delete;

  ~fleet() {
    for (auto& p : procs_)
      if (p.pid > 0) {
        kill(p.pid, SIGKILL);
        waitpid(p.pid, nullptr, 0);
        p.pid = -1;
      }
    for (auto& p : procs_)
      if (p.out_fd >= 0)
        close(p.out_fd);
  }

  /// Starts `args` (args[0]: drover-node) as `name`; the reference stays
  /// valid for the fleet's life.
  node_proc& start(const std::string& name, std::vector<std::string> args) {
    auto& p = procs_.emplace_back();
    p.name = name;
    p.log = dir + "/" + name + ".log";
    static_cast<node_child&>(p) = spawn_node(std::move(args), p.log);
    return p;
  }

  /// Reads `p`'s stdout until `count` lines holding `marker` have come
  /// (the last one goes to `line` if given); false if `p` ended or
  /// `timeout` passed first.
  bool read_until(node_proc& p, const std::string& marker, uint32_t count,
                  std::chrono::milliseconds timeout, std::string* line) {
    auto deadline = steady::now() + timeout;
    uint32_t seen = 0;
    char chunk[512];
    for (;;) {
      for (auto nl = p.buf.find('\n'); nl != std::string::npos;
           nl = p.buf.find('\n')) {
        auto l = p.buf.substr(0, nl);
        p.buf.erase(0, nl + 1);
        if (l.find(marker) == std::string::npos)
          continue;
        if (line != nullptr)
          *line = l;
        if (++seen == count)
          return true;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - steady::now());
      pollfd pfd{p.out_fd, POLLIN, 0};
      if (left.count() <= 0
          || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
        return false;
      auto r = ::read(p.out_fd, chunk, sizeof(chunk));
      if (r <= 0)
        return false;
      p.buf.append(chunk, static_cast<size_t>(r));
    }
  }

  /// How often `text` occurs in `p`'s log so far.
  uint32_t log_count(const node_proc& p, const std::string& text) const {
    std::ifstream in{p.log};
    std::stringstream all;
    all << in.rdbuf();
    auto s = all.str();
    uint32_t n = 0;
    for (auto at = s.find(text); at != std::string::npos;
         at = s.find(text, at + text.size()))
      ++n;
    return n;
  }

  /// PIDs of the running children whose name starts with `prefix`.
  std::vector<int> pids_of(const std::string& prefix) const {
    std::vector<int> out;
    for (auto& p : procs_)
      if (p.pid > 0 && p.name.rfind(prefix, 0) == 0)
        out.push_back(p.pid);
    return out;
  }

  std::vector<int> all_pids() const {
    return pids_of("");
  }

  /// The entries of `cpu` (by PID) that are in `pids`.
  static std::map<int, double> cpu_subset(const std::map<int, double>& cpu,
                                          const std::vector<int>& pids) {
    std::map<int, double> out;
    for (auto pid : pids)
      if (auto i = cpu.find(pid); i != cpu.end())
        out.insert(*i);
    return out;
  }

  /// SIGTERM to the worker nodes ("w…"), then the gateway ("gw"), then
  /// every coordinator ("c…") at once; each group gets 30 s to exit, then
  /// SIGKILL. The names that needed it, "" if none.
  std::string stop_all() {
    std::string killed;
    for (const auto* prefix : {"w", "gw", "c"}) {
      std::vector<node_proc*> group;
      for (auto& p : procs_)
        if (p.pid > 0 && p.name.rfind(prefix, 0) == 0) {
          kill(p.pid, SIGTERM);
          group.push_back(&p);
        }
      poll_within(std::chrono::seconds{30}, std::chrono::milliseconds{20}, [&] {
        bool all = true;
        for (auto* p : group)
          if (p->pid > 0) {
            if (waitpid(p->pid, nullptr, WNOHANG) == p->pid)
              p->pid = -1;
            else
              all = false;
          }
        return all;
      });
      for (auto* p : group)
        if (p->pid > 0) {
          kill(p->pid, SIGKILL);
          waitpid(p->pid, nullptr, 0);
          p->pid = -1;
          killed += (killed.empty() ? "" : ",") + p->name;
        }
    }
    return killed;
  }

  void remove_logs() {
    for (auto& p : procs_)
      unlink(p.log.c_str());
    rmdir(dir.c_str());
  }

  const std::string dir;

private:
  std::deque<node_proc> procs_;
};

} // namespace drover::bench
