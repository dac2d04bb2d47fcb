// Process tests: real drover-node and droverctl binaries, real signals.
// Every wait is on an event (pipe readable, pidfd readable) with a deadline.

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <optional>
#include <poll.h>
#include <string>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

/// A child process with its stdout and stderr captured.
class process {
public:
  explicit process(std::vector<std::string> argv) {
    int out[2];
    int err[2];
    REQUIRE(pipe(out) == 0);
    REQUIRE(pipe(err) == 0);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      dup2(out[1], STDOUT_FILENO);
      dup2(err[1], STDERR_FILENO);
      close(out[0]);
      close(err[0]);
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

  ~process() {
    if (!status_) {
      kill(pid_, SIGKILL);
      wait_exit(10s);
    }
    close(out_);
    close(err_);
    close(pidfd_);
  }

  /// Reads stdout (or stderr) until a line containing `needle`; returns
  /// that line. Lines read on the way are kept for drain_all().
  std::optional<std::string> wait_for_line(const std::string& needle,
                                           std::chrono::milliseconds timeout,
                                           bool from_stderr = false) {
    auto deadline = clock_type::now() + timeout;
    auto& buf = from_stderr ? err_buf_ : out_buf_;
    auto fd = from_stderr ? err_ : out_;
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
    if (poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0)
      return std::nullopt;
    int st = 0;
    if (waitpid(pid_, &st, 0) != pid_)
      return std::nullopt;
    status_ = st;
    return status_;
  }

  /// Everything the process wrote to stdout and stderr until it exited.
  std::string drain_all() {
    auto deadline = clock_type::now() + 10s;
    while (read_some(out_, out_buf_, deadline)) {
    }
    while (read_some(err_, err_buf_, deadline)) {
    }
    return out_buf_ + err_buf_;
  }

  void signal(int sig) {
    REQUIRE(kill(pid_, sig) == 0);
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

std::string admin_port_of(const std::string& ready_line) {
  auto pos = ready_line.rfind(':');
  REQUIRE(pos != std::string::npos);
  return ready_line.substr(pos + 1);
}

/// Runs droverctl to completion; returns (exit status, output).
std::pair<int, std::string> droverctl(std::vector<std::string> args) {
  args.insert(args.begin(), DROVER_CTL_BIN);
  process ctl{args};
  auto st = ctl.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  return {WEXITSTATUS(*st), ctl.drain_all()};
}

} // namespace

TEST_CASE("a node starts, serves its supervision tree and stops on SIGTERM",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "proc-test", "--admin-port",
                "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  CHECK(ready->find("roles=all") != std::string::npos);
  auto port = admin_port_of(*ready);

  auto [rc, out] = droverctl({"tree", "--port", port});
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("node:proc-test [supervisor one_for_one] running")
        != std::string::npos);

  auto [jrc, json] = droverctl({"tree", "--port", port, "--json"});
  INFO(json);
  CHECK(jrc == 0);
  CHECK(json.find("\"node:proc-test\"") != std::string::npos);

  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
  CHECK(node.drain_all().find("stopped") != std::string::npos);
}

TEST_CASE("SIGINT stops a node cleanly too", "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "sigint", "--admin-port", "0"}};
  REQUIRE(node.wait_for_line("ready", 30s));
  node.signal(SIGINT);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 0);
}

TEST_CASE("droverctl reports a node killed with SIGKILL as unreachable",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "victim", "--admin-port", "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  node.signal(SIGKILL);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  CHECK(WIFSIGNALED(*st));
  auto [rc, out] = droverctl({"tree", "--port", port, "--timeout-ms", "2000"});
  CHECK(rc == 1);
  CHECK(out.find("cannot reach") != std::string::npos);
}

TEST_CASE("a bad configuration exits with status 2 and a clear message",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--roles", "janitor"}};
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  REQUIRE(WIFEXITED(*st));
  CHECK(WEXITSTATUS(*st) == 2);
  CHECK(node.drain_all().find("unknown role 'janitor'") != std::string::npos);
}

TEST_CASE("droverctl rejects bad usage with status 2", "[node]") {
  auto [rc, out] = droverctl({"frobnicate"});
  CHECK(rc == 2);
  CHECK(out.find("unknown command 'frobnicate'") != std::string::npos);
  auto [rc2, out2] = droverctl({"tree", "--port", "99999"});
  CHECK(rc2 == 2);
}

namespace {

std::string job_id_of(const std::string& json) {
  auto key = std::string{"\"jobId\":\""};
  auto pos = json.find(key);
  REQUIRE(pos != std::string::npos);
  auto end = json.find('"', pos + key.size());
  return json.substr(pos + key.size(), end - pos - key.size());
}

} // namespace

TEST_CASE("jobs submitted with droverctl run on the node", "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "jobs", "--admin-port", "0"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  auto [rc, out] = droverctl({"submit", "sleep", "--port", port, "--input",
                              R"({"ms": 200, "steps": 4})", "--wait"});
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("\"status\":\"completed\"") != std::string::npos);
  CHECK(out.find("\"slept_ms\":200") != std::string::npos);
  CHECK(out.find("100%") != std::string::npos); // progress was streamed
  auto [brc, bad] = droverctl({"submit", "exec", "--port", port, "--input",
                               R"({"argv": []})", "--max-attempts", "1",
                               "--wait"});
  CHECK(brc == 1);
  CHECK(bad.find("invalid_input") != std::string::npos);
  auto [vrc, verr] = droverctl({"submit", "sleep", "--port", port,
                                "--max-attempts", "0"});
  CHECK(vrc == 1);
  CHECK(verr.find("max_attempts must be at least 1") != std::string::npos);
  node.signal(SIGTERM);
  auto st = node.wait_exit(30s);
  REQUIRE(st);
  CHECK(WIFEXITED(*st));
}

TEST_CASE("cancelling an exec job whose program ignores SIGTERM kills it",
          "[node]") {
  process node{{DROVER_NODE_BIN, "--node-id", "cancel", "--admin-port", "0",
                "--exec-kill-grace-ms", "300"}};
  auto ready = node.wait_for_line("ready", 30s);
  REQUIRE(ready);
  auto port = admin_port_of(*ready);
  // The program reports its pid as a stage name, then ignores SIGTERM.
  auto script = std::string{"trap '' TERM; echo PROGRESS 10 pid-$$; "
                            "while :; do sleep 0.05; done"};
  auto input = std::string{R"({"argv": ["sh", "-c", ")"} + script + "\"]}";
  auto [rc, out] = droverctl({"submit", "exec", "--port", port, "--input",
                              input});
  REQUIRE(rc == 0);
  auto id = job_id_of(out);
  process waiter{{DROVER_CTL_BIN, "wait", id, "--port", port}};
  // droverctl wait prints progress lines to stderr; the first one names
  // the pid, and means the program runs (and ignores SIGTERM) now.
  auto progress = waiter.wait_for_line("pid-", 30s, true);
  REQUIRE(progress);
  auto [crc, cout_] = droverctl({"cancel", id, "--port", port});
  CHECK(crc == 0);
  auto wst = waiter.wait_exit(30s);
  REQUIRE(wst);
  auto all = waiter.drain_all();
  INFO(all);
  CHECK(all.find("\"status\":\"cancelled\"") != std::string::npos);
  auto p = progress->find("pid-");
  REQUIRE(p != std::string::npos);
  auto pid = std::stoi(progress->substr(p + 4));
  CHECK(kill(pid, 0) == -1); // killed and reaped: no zombie
  CHECK(errno == ESRCH);
  node.signal(SIGTERM);
  REQUIRE(node.wait_exit(30s));
}
