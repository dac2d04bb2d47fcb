// Process tests of per-job cgroups for exec (issue 11 item 3,
// runtime/exec_cgroup.hpp): a real drover-node (role all, memory store)
// given a cgroup directory that this test, as root, delegates to the node's
// user, and real programs. A fork bomb is bounded per job while another job
// still forks; processes that left their process group die with their
// attempt; a job over its memory limit fails as `memory_limit`; a node
// refuses a directory it cannot use.
//
// The development machine and CI have cgroup v1 controllers (pids, memory);
// where this test cannot delegate a directory (not root, no such
// hierarchy) it says so with a warning and checks nothing.
//
// Every wait is on an event with a deadline: the node's "ready" line, the
// job's event stream, the cgroup's pids.current, a process exit.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using namespace drover::testing::gateway_api;
using drover::testing::clock_type;
using drover::testing::gateway_node;
using drover::testing::parse_json;
using drover::testing::poll_until;
using drover::testing::process;
using drover::testing::sse_stream;
using drover::testing::time_left;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in{path};
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A cgroup directory of one v1 controller hierarchy ("pids", "memory"),
/// below this test's own cgroup, made by the test and chowned to the user
/// the node runs as. `path` is empty where that is not possible here.
struct delegated_cgroup {
  explicit delegated_cgroup(const std::string& controller) {
    if (geteuid() != 0)
      return;
    std::string mount = "/sys/fs/cgroup/" + controller;
    std::istringstream lines{read_all("/proc/self/cgroup")};
    std::string own;
    for (std::string line; std::getline(lines, line);) {
      auto key = ":" + controller + ":";
      auto at = line.find(key);
      if (at != std::string::npos)
        own = line.substr(at + key.size());
    }
    if (own.empty() || access((mount + "/cgroup.procs").c_str(), F_OK) != 0)
      return;
    static int n = 0;
    auto dir = mount + (own == "/" ? "" : own) + "/test-exec-"
               + std::to_string(getpid()) + "-" + std::to_string(n++);
    const char* name = std::getenv("DROVER_RUN_AS");
    auto* user = getpwnam(name != nullptr && *name != '\0' ? name : "drover");
    if (user == nullptr || mkdir(dir.c_str(), 0755) != 0)
      return;
    if (chown(dir.c_str(), user->pw_uid, user->pw_gid) != 0) {
      rmdir(dir.c_str());
      return;
    }
    path = dir;
  }

  ~delegated_cgroup() {
    if (path.empty())
      return;
    // What a failed test left: killed, then the directories removed.
    for (int round = 0; round < 100; ++round) {
      std::string line = "find " + path + " -depth -type d";
      FILE* dirs = popen(line.c_str(), "r");
      bool left = false;
      char buf[512];
      while (dirs != nullptr && fgets(buf, sizeof(buf), dirs) != nullptr) {
        std::string d{buf};
        d.pop_back();
        std::istringstream procs{read_all(d + "/cgroup.procs")};
        for (long pid; procs >> pid;)
          kill(static_cast<pid_t>(pid), SIGKILL);
        if (rmdir(d.c_str()) != 0)
          left = true;
      }
      if (dirs != nullptr)
        pclose(dirs);
      if (!left)
        return;
      usleep(10000);
    }
  }

  /// Processes in the directory and all its children (v1 pids counts the
  /// subtree).
  long pids_current() const {
    return std::stol(read_all(path + "/pids.current"));
  }

  std::string path;
};

/// A script file every user can read, in a directory of its own.
struct script_file {
  explicit script_file(const std::string& text) {
    char tmpl[] = "/tmp/drover-cgroup-test-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    chmod(dir.c_str(), 0755);
    path = dir + "/script.py";
    std::ofstream{path} << text;
    chmod(path.c_str(), 0644);
  }
  ~script_file() {
    unlink(path.c_str());
    rmdir(dir.c_str());
  }
  std::string dir, path;
};

/// Waits on the job's stream for a progress report whose message holds
/// `needle`; returns that message.
std::string await_progress(const gateway_node& node, const std::string& id,
                           const std::string& needle) {
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream", {}};
  REQUIRE(s.head().status == 200);
  auto deadline = clock_type::now() + 30s;
  for (;;) {
    auto ev = s.next(time_left(deadline));
    REQUIRE(ev);
    if (ev->data.find(needle) != std::string::npos)
      return ev->data;
  }
}

// Forks children that leave the process group (setsid) and sleep, until
// fork fails; says how many it made, then waits.
constexpr const char* fork_bomb = R"(import os, sys, time
n = 0
try:
    while n < 10000:
        if os.fork() == 0:
            os.setsid()
            time.sleep(300)
            os._exit(0)
        n += 1
except OSError as e:
    print("PROGRESS 50 forked %d then %s" % (n, e.strerror), flush=True)
time.sleep(300)
)";

} // namespace

TEST_CASE("with a pids cgroup a fork bomb is bounded per job, another job "
          "still forks, and processes that left the group die with the "
          "attempt",
          "[exec]") {
  delegated_cgroup pids{"pids"};
  if (pids.path.empty()) {
    WARN("no pids cgroup can be delegated here: nothing checked");
    return;
  }
  script_file bomb{fork_bomb};
  gateway_node node{{"--exec-allow", "python3", "--exec-allow", "sh",
                     "--exec-cgroup", pids.path, "--exec-processes", "40"}};
  auto c = node.client();
  auto bomber = submit(c, exec_job({"python3", bomb.path}));
  // pids.max = 40 for the job: the interpreter and 39 children.
  auto said = await_progress(node, bomber, "forked");
  CHECK_THAT(said, Catch::Contains("forked 39 then Resource temporarily "
                                   "unavailable"));
  CHECK(pids.pids_current() >= 40);
  // Every user-wide RLIMIT_NPROC of 40 would be used up now (and by the
  // node's own threads before that); the job's own limit is not.
  auto other = submit(c, exec_job({"sh", "-c",
                                   "for i in 1 2 3 4 5; do sleep 0.01 & done; "
                                   "wait; echo forked"}));
  auto done = await_end(node, {}, other);
  CHECK(done["status"].str() == "completed");
  auto result = parse_json(c.get("/api/jobs/" + other + "/result").body);
  CHECK(result["stdout_tail"].str() == "forked\n");
  // The bomb's children called setsid: its process group is only the
  // interpreter. Cancel; its cgroup takes them all.
  auto res = c.post("/api/jobs/" + bomber + "/cancel", "{}");
  REQUIRE(res.status < 300);
  CHECK(await_end(node, {}, bomber)["status"].str() == "cancelled");
  CHECK(poll_until([&] { return pids.pids_current() == 0; }, 10s));
}

TEST_CASE("with a memory cgroup a job over its memory limit fails as "
          "memory_limit",
          "[exec]") {
  delegated_cgroup memory{"memory"};
  if (memory.path.empty()) {
    WARN("no memory cgroup can be delegated here: nothing checked");
    return;
  }
  gateway_node node{{"--exec-allow", "python3", "--exec-cgroup", memory.path,
                     "--exec-memory-mb", "64"}};
  auto c = node.client();
  // 512 MiB, written (so resident): well within RLIMIT_AS (4096 MiB).
  auto hog = submit(
      c, exec_job({"python3", "-c", "b = b'x' * (512 << 20); print(len(b))"},
                  {}, R"(, "max_attempts": 1)"));
  auto job = await_end(node, {}, hog);
  CHECK(job["status"].str() == "failed");
  CHECK(job["error"]["code"].str() == "memory_limit");
  CHECK_THAT(job["error"]["message"].str(),
             Catch::Contains("exceeded its memory limit of 64 MiB"));
  // Within the limit, the same program completes.
  auto small = submit(
      c, exec_job({"python3", "-c", "b = b'x' * (8 << 20); print(len(b))"}));
  CHECK(await_end(node, {}, small)["status"].str() == "completed");
}

TEST_CASE("a node refuses an --exec-cgroup it cannot use, and "
          "--exec-memory-mb without a memory cgroup",
          "[exec]") {
  auto refuses = [](std::vector<std::string> options, const std::string& says) {
    std::vector<std::string> argv{
        DROVER_NODE_BIN, "--node-id", "cg", "--admin-port", "0",
        "--http-port",   "0"};
    argv.insert(argv.end(), options.begin(), options.end());
    process node{argv};
    auto st = node.wait_exit(30s);
    REQUIRE(st);
    REQUIRE(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 2);
    auto out = node.drain_all();
    CHECK_THAT(out, Catch::Contains(says));
    CHECK(out.find("ready") == std::string::npos);
  };
  refuses({"--exec-cgroup", "/tmp"}, "not a cgroup directory");
  refuses({"--exec-cgroup", "relative/dir"}, "must be an absolute path");
  refuses({"--exec-memory-mb", "64"},
          "exec-memory-mb needs an --exec-cgroup with the memory controller");
  refuses({"--exec-memory-mb", "0"}, "exec-memory-mb within [1, 2^40]");
  delegated_cgroup pids{"pids"};
  if (!pids.path.empty()) {
    // Delegated, but not to the node's user: it cannot create a child.
    REQUIRE(chown(pids.path.c_str(), 0, 0) == 0);
    refuses({"--exec-cgroup", pids.path}, "cannot create a child cgroup");
  }
}
