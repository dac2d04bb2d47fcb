#pragma once

// Child processes for tests that start real binaries (drover-node,
// droverctl, PostgreSQL's tools) and really signal them. Every wait is on an
// event — a pipe becoming readable, the pidfd becoming readable — with a
// deadline; nothing here sleeps.
//
// File descriptors: every pipe is created close-on-exec, so a child only
// inherits its own stdout/stderr. Without that, a daemon started by a child
// (pg_ctl's postmaster) or a node started later would hold another
// process's pipe open and its reader would never see EOF.

#include "support/time_scale.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <pwd.h>
#include <string>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>
#include <vector>

namespace drover::testing {

using clock_type = std::chrono::steady_clock;

/// A child process with its stdout and stderr captured. Owns the child: the
/// destructor SIGKILLs it if it still runs, and reaps it.
class process {
public:
  /// Starts `argv[0]` (a path, no PATH lookup) with stdin on /dev/null.
  /// stderr goes to a pipe, or is appended to `stderr_file` if given: a
  /// chatty long-running child (a node logging through an outage) must
  /// never block on a full pipe that the test is not reading.
  explicit process(std::vector<std::string> argv,
                   const std::string& stderr_file = {}) {
    argv = with_run_as(std::move(argv));
    int out[2];
    int err[2] = {-1, -1};
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    if (stderr_file.empty()) {
      REQUIRE(pipe2(err, O_CLOEXEC) == 0);
    } else {
      err[1] = open(stderr_file.c_str(),
                    O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      REQUIRE(err[1] >= 0);
    }
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      // dup2 clears close-on-exec on the targets: only 0, 1, 2 survive.
      int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      std::vector<char*> args;
      for (auto& a : argv)
        args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
    close(out[1]);
    close(err[1]);
    out_ = out[0];
    err_ = err[0];
    pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    REQUIRE(pidfd_ >= 0);
  }

  process(const process&) = delete;
  process& operator=(const process&) = delete;

  ~process() {
    if (!status_) {
      kill(pid_, SIGKILL);
      wait_exit(std::chrono::seconds{10});
    }
    close(out_);
    if (err_ >= 0)
      close(err_);
    close(pidfd_);
  }

  pid_t pid() const {
    return pid_;
  }

  /// Reads stdout (or stderr) until a line containing `needle`; returns
  /// that line. Lines read on the way stay in the buffer (drain_all()).
  /// Each call scans from the start of the captured output.
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout,
                                           bool from_stderr = false) {
    auto deadline = clock_type::now() + scaled(timeout);
    auto& buf = from_stderr ? err_buf_ : out_buf_;
    auto fd = from_stderr ? err_ : out_;
    if (fd < 0)
      return std::nullopt;
    size_t scanned = 0;
    for (;;) {
      auto nl = buf.find('\n', scanned);
      while (nl != std::string::npos) {
        auto line = buf.substr(scanned, nl - scanned);
        scanned = nl + 1;
        if (line.find(needle) != std::string::npos)
          return line;
        nl = buf.find('\n', scanned);
      }
      if (!read_some(fd, buf, deadline))
        return std::nullopt;
    }
  }

  /// Waits for the process to exit; returns its wait status.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout) {
    if (status_)
      return status_;
    pollfd pfd{pidfd_, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(scaled(timeout).count())) <= 0)
      return std::nullopt;
    int st = 0;
    if (waitpid(pid_, &st, 0) != pid_)
      return std::nullopt;
    status_ = st;
    return status_;
  }

  /// Everything the process wrote to stdout and stderr, reading until EOF
  /// (or at most `timeout`: a grandchild may keep a pipe open).
  std::string drain_all(std::chrono::milliseconds timeout
                        = std::chrono::seconds{10}) {
    auto deadline = clock_type::now() + scaled(timeout);
    while (read_some(out_, out_buf_, deadline)) {
    }
    while (err_ >= 0 && read_some(err_, err_buf_, deadline)) {
    }
    return out_buf_ + err_buf_;
  }

  /// What was captured so far, without reading more.
  std::string captured() const {
    return out_buf_ + err_buf_;
  }

  void signal(int sig) {
    REQUIRE(kill(pid_, sig) == 0);
  }

  /// The account with_run_as names, or nullptr when not running as root.
  static const char* run_as_user() {
    if (geteuid() != 0)
      return nullptr;
    const char* user = std::getenv("DROVER_RUN_AS");
    return user != nullptr && *user != '\0' ? user : "drover";
  }

  /// drover-node refuses to start as root without --run-as (tests run as
  /// root in CI): a node started by a test as root switches to
  /// $DROVER_RUN_AS (default "drover", created by scripts/test) unless the
  /// test passes --run-as itself (`--run-as ""` = none).
  static std::vector<std::string> with_run_as(std::vector<std::string> argv) {
    if (argv.empty() || geteuid() != 0)
      return argv;
    auto& program = argv.front();
    auto slash = program.rfind('/');
    auto base
        = slash == std::string::npos ? program : program.substr(slash + 1);
    if (base != "drover-node")
      return argv;
    for (const auto& arg : argv)
      if (arg == "--run-as" || arg.rfind("--run-as=", 0) == 0)
        return argv;
    argv.push_back("--run-as");
    argv.push_back(run_as_user());
    return argv;
  }

private:
  /// Appends what is readable before `deadline`; false on EOF or timeout.
  static bool read_some(int fd, std::string& buf,
                        clock_type::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - clock_type::now());
    if (left.count() <= 0)
      return false;
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
      return false;
    char chunk[4096];
    auto n = read(fd, chunk, sizeof(chunk));
    if (n <= 0)
      return false;
    buf.append(chunk, static_cast<size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
  int pidfd_ = -1;
  std::string out_buf_;
  std::string err_buf_;
  std::optional<int> status_;
};

/// Makes `dir` the property of the user nodes run as (process::run_as_user)
/// when the tests run as root, so that a node's exec jobs may write there.
inline void give_to_node_user(const std::string& dir) {
  const char* user = process::run_as_user();
  if (user == nullptr)
    return;
  auto* entry = getpwnam(user);
  REQUIRE(entry != nullptr);
  REQUIRE(chown(dir.c_str(), entry->pw_uid, entry->pw_gid) == 0);
}

/// Runs `argv` to completion (at most `timeout`); returns (exit status,
/// stdout + stderr). A program that does not exit normally fails the test.
inline std::pair<int, std::string> run_to_exit(std::vector<std::string> argv,
                                               std::chrono::milliseconds timeout
                                               = std::chrono::seconds{30}) {
  auto command = argv.empty() ? std::string{} : argv.front();
  process p{std::move(argv)};
  auto st = p.wait_exit(timeout);
  REQUIRE(st);
  if (!WIFEXITED(*st)) {
    // Which program, which signal, and what it said: a crash seen once in
    // CI is worth its evidence.
    INFO(command << " ended by signal "
                 << (WIFSIGNALED(*st) ? WTERMSIG(*st) : -1) << ":\n"
                 << p.drain_all());
    REQUIRE(WIFEXITED(*st));
  }
  return {WEXITSTATUS(*st), p.drain_all()};
}

#ifdef DROVER_NODE_BIN
/// Starts drover-node with `options` (ports chosen by the system) and
/// checks that it refuses to start: exit code 2, `says` in its output,
/// never "ready".
inline void expect_node_refuses(const std::vector<std::string>& options,
                                const std::string& says) {
  std::vector<std::string> argv{
      DROVER_NODE_BIN, "--node-id", "refused", "--admin-port", "0",
      "--http-port",   "0"};
  argv.insert(argv.end(), options.begin(), options.end());
  auto [rc, out] = run_to_exit(std::move(argv));
  INFO(out);
  CHECK(rc == 2);
  CHECK_THAT(out, Catch::Contains(says));
  CHECK(out.find("ready") == std::string::npos);
}
#endif

/// The port of drover-node's "ready ... admin=host:port ..." line (other
/// fields, such as "http=host:port", may follow it).
inline std::string admin_port_of(const std::string& ready_line) {
  auto field = ready_line.find(" admin=");
  REQUIRE(field != std::string::npos);
  auto end = ready_line.find(' ', field + 1);
  auto address = ready_line.substr(field + 7, end == std::string::npos
                                                  ? std::string::npos
                                                  : end - field - 7);
  auto colon = address.rfind(':');
  REQUIRE(colon != std::string::npos);
  auto port = address.substr(colon + 1);
  REQUIRE(!port.empty());
  REQUIRE(port.find_first_not_of("0123456789") == std::string::npos);
  return port;
}

/// The job id droverctl submit printed: its first line (the id alone), or
/// the "job_id" of the HTTP API's JSON (--json).
inline std::string job_id_of(const std::string& out) {
  auto key = std::string{"\"job_id\":\""};
  auto pos = out.find(key);
  if (pos == std::string::npos) {
    auto id = out.substr(0, out.find('\n'));
    REQUIRE(!id.empty());
    REQUIRE(id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_")
            == std::string::npos);
    return id;
  }
  auto end = out.find('"', pos + key.size());
  REQUIRE(end != std::string::npos);
  return out.substr(pos + key.size(), end - pos - key.size());
}

#ifdef DROVER_CTL_BIN
/// Runs droverctl with `args` to completion; returns (exit status, output).
inline std::pair<int, std::string> droverctl(std::vector<std::string> args) {
  args.insert(args.begin(), DROVER_CTL_BIN);
  return run_to_exit(std::move(args));
}
#endif

/// True once `pid` no longer runs (exited; a zombie not yet reaped by its
/// parent counts as gone), waiting at most `timeout` on a pidfd.
inline bool exits_within(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0)
    return errno == ESRCH;
  pollfd pfd{fd, POLLIN, 0};
  int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
  close(fd);
  return ready == 1;
}

} // namespace drover::testing
