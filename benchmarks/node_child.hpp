#pragma once

// A drover-node child process for the benchmarks that run the real binary
// (drover_bench_recovery, drover_bench_workers): started with its stdout on
// a pipe (the announcements) and its stderr appended to a log file, read
// line by line until a marker such as " node: ready ".

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

namespace drover::bench {

inline int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct node_child {
  pid_t pid = -1;
  int out_fd = -1;
  std::string buf; // stdout read so far, not yet a whole line
};

/// Forks and execs `args` (args[0]: the drover-node binary). As the tests
/// do, a benchmark run as root adds --run-as $DROVER_RUN_AS (else
/// "drover", which scripts/test and scripts/run create): drover-node
/// refuses to run as root without an account to switch to.
inline node_child spawn_node(std::vector<std::string> args,
                             const std::string& log_path) {
  if (geteuid() == 0) {
    const char* user = std::getenv("DROVER_RUN_AS");
    args.push_back("--run-as");
    args.push_back(user != nullptr && *user != '\0' ? user : "drover");
  }
  int fds[2];
  if (pipe(fds) != 0) {
    std::perror("pipe");
    std::exit(2);
  }
  node_child n;
  n.pid = fork();
  if (n.pid == 0) {
    dup2(fds[1], 1);
    int err = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (err >= 0)
      dup2(err, 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    std::perror("execv");
    _exit(127);
  }
  close(fds[1]);
  n.out_fd = fds[0];
  return n;
}

/// Reads `n`'s stdout until a line holding `marker`; returns that line.
/// Exits (3) if the node ends first.
inline std::string read_until(node_child& n, const std::string& marker,
                              const std::string& log_path) {
  char chunk[512];
  for (;;) {
    for (auto nl = n.buf.find('\n'); nl != std::string::npos;
         nl = n.buf.find('\n')) {
      auto line = n.buf.substr(0, nl);
      n.buf.erase(0, nl + 1);
      if (line.find(marker) != std::string::npos)
        return line;
    }
    auto r = read(n.out_fd, chunk, sizeof(chunk));
    if (r <= 0) {
      std::cerr << "drover-node exited before it said '" << marker << "' (see "
                << log_path << ")" << std::endl;
      std::exit(3);
    }
    n.buf.append(chunk, static_cast<size_t>(r));
  }
}

/// The port of " <key>=host:port" in a ready line; 0 if absent.
inline int port_field(const std::string& line, const std::string& key) {
  auto f = line.find(" " + key + "=");
  if (f == std::string::npos)
    return 0;
  auto end = line.find(' ', f + 1);
  auto addr
      = line.substr(f, end == std::string::npos ? std::string::npos : end - f);
  return std::atoi(addr.c_str() + addr.rfind(':') + 1);
}

} // namespace drover::bench
