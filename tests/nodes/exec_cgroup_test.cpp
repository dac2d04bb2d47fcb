// Process tests of per-job cgroups for exec (issue 11 item 3,
// runtime/exec_cgroup.hpp): a real drover-node (role all, memory store)
// given a cgroup directory that this test, as root, delegates to the node's
// user, and real programs. A fork bomb is bounded per job while another job
// still forks; processes that left their process group die with their
// attempt, also when the job made a cgroup of its own below its job cgroup
// and moved into it; a job over its memory limit fails as `memory_limit`;
// a node refuses a directory it cannot use; at start a node kills and
// removes what a dead node left and leaves another live process's cgroups.
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

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>
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

  /// The cgroups directly below the directory.
  std::vector<std::string> children() const {
    std::vector<std::string> names;
    if (DIR* d = opendir(path.c_str())) {
      while (auto* entry = readdir(d))
        if (entry->d_type == DT_DIR && entry->d_name[0] != '.')
          names.emplace_back(entry->d_name);
      closedir(d);
    }
    return names;
  }

  std::string path;
};

/// The pids listed in a cgroup's cgroup.procs.
std::vector<long> procs_of(const std::string& cgroup) {
  std::istringstream in{read_all(cgroup + "/cgroup.procs")};
  std::vector<long> pids;
  for (long pid; in >> pid;)
    pids.push_back(pid);
  return pids;
}

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

// Escapes its job cgroup's top level (argv[1] = the pids DIR): makes
// inner/deeper below its own cgroup, moves itself into the deepest, starts
// three children that call setsid and sleep, and reports the cgroup and
// their pids.
constexpr const char* nested_escape = R"(import os, sys, time
dir = sys.argv[1]
rel = None
for line in open("/proc/self/cgroup"):
    _, controllers, path = line.rstrip("\n").split(":", 2)
    if "pids" in controllers.split(","):
        rel = path
own = "/sys/fs/cgroup/pids" + rel
assert own.startswith(dir + "/drover-"), own
inner = own + "/inner/deeper"
os.makedirs(inner)
with open(inner + "/cgroup.procs", "w") as f:
    f.write(str(os.getpid()))
kids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        os.setsid()
        time.sleep(300)
        os._exit(0)
    kids.append(pid)
print("PROGRESS 50 escaped to %s pids %s" % (inner, " ".join(map(str, kids))), flush=True)
time.sleep(300)
)";

} // namespace

TEST_CASE("a job that made a cgroup below its own and moved into it dies "
          "with its attempt, and every cgroup is removed",
          "[exec]") {
  delegated_cgroup pids{"pids"};
  if (pids.path.empty()) {
    WARN("no pids cgroup can be delegated here: nothing checked");
    return;
  }
  script_file escape{nested_escape};
  gateway_node node{{"--exec-allow", "python3", "--exec-cgroup", pids.path,
                     "--exec-processes", "40"}};
  auto c = node.client();
  auto job = submit(c, exec_job({"python3", escape.path, pids.path}));
  // The report's stage: "escaped to <cgroup> pids <p> <p> <p>".
  auto said = parse_json(await_progress(node, job, "escaped"));
  INFO(said["stage"].str());
  std::istringstream words{said["stage"].str()};
  std::string escaped, to, inner, label;
  words >> escaped >> to >> inner >> label;
  REQUIRE(label == "pids");
  std::vector<long> kids;
  for (long pid; words >> pid;)
    kids.push_back(pid);
  REQUIRE(kids.size() == 3);
  // The escape happened: the job cgroup's own list is empty, the children
  // (in sessions of their own) are in the nested cgroup.
  auto job_cgroup = inner.substr(0, inner.find("/inner/deeper"));
  CHECK(procs_of(job_cgroup).empty());
  auto nested = procs_of(inner);
  for (auto kid : kids)
    CHECK(std::find(nested.begin(), nested.end(), kid) != nested.end());
  CHECK(pids.pids_current() >= 4);
  auto res = c.post("/api/jobs/" + job + "/cancel", "{}");
  REQUIRE(res.status < 300);
  CHECK(await_end(node, {}, job)["status"].str() == "cancelled");
  CHECK(poll_until([&] { return pids.pids_current() == 0; }, 10s));
  CHECK(poll_until([&] { return pids.children().empty(); }, 10s));
  INFO(node.log());
  CHECK(pids.children().empty());
}

TEST_CASE("a starting node kills and removes what a dead node left in its "
          "cgroup directory and leaves a live process's cgroups alone",
          "[exec]") {
  delegated_cgroup pids{"pids"};
  if (pids.path.empty()) {
    WARN("no pids cgroup can be delegated here: nothing checked");
    return;
  }
  auto* user = getpwnam(
      process::run_as_user() != nullptr ? process::run_as_user() : "drover");
  REQUIRE(user != nullptr);
  // A pid that is not alive: a child that has exited and been reaped.
  pid_t dead = fork();
  REQUIRE(dead >= 0);
  if (dead == 0)
    _exit(0);
  REQUIRE(waitpid(dead, nullptr, 0) == dead);
  auto make = [&](const std::string& name) {
    auto dir = pids.path + "/" + name;
    REQUIRE(mkdir(dir.c_str(), 0755) == 0);
    REQUIRE(chown(dir.c_str(), user->pw_uid, user->pw_gid) == 0);
    REQUIRE(chown((dir + "/cgroup.procs").c_str(), user->pw_uid, user->pw_gid)
            == 0);
    return dir;
  };
  auto leftover = make("drover-" + std::to_string(dead) + "-x-0");
  // Another live process's (this test's) job cgroup, empty: a node sharing
  // DIR must not take it.
  auto other = make("drover-" + std::to_string(getpid()) + "-y-0");
  // What the dead node's job left: a process of the node's user in its
  // own session, in the leftover cgroup.
  auto procs = leftover + "/cgroup.procs";
  pid_t stray = fork();
  REQUIRE(stray >= 0);
  if (stray == 0) {
    int fd = open(procs.c_str(), O_WRONLY);
    if (fd < 0 || write(fd, "0", 1) != 1 || setgid(user->pw_gid) != 0
        || setuid(user->pw_uid) != 0 || setsid() < 0)
      _exit(111);
    execl("/bin/sleep", "sleep", "300", static_cast<char*>(nullptr));
    _exit(112);
  }
  REQUIRE(poll_until([&] { return procs_of(leftover).size() == 1; }, 10s));
  gateway_node node{{"--exec-allow", "true", "--exec-cgroup", pids.path}};
  int status = 0;
  CHECK(poll_until([&] { return waitpid(stray, &status, WNOHANG) == stray; },
                   10s));
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(access(leftover.c_str(), F_OK) != 0);
  CHECK(access(other.c_str(), F_OK) == 0);
  // The node's own cgroups work next to it and are removed.
  auto c = node.client();
  auto job = submit(c, exec_job({"true"}));
  CHECK(await_end(node, {}, job)["status"].str() == "completed");
  CHECK(pids.children()
        == std::vector<std::string>{other.substr(other.rfind('/') + 1)});
  rmdir(other.c_str());
}

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
    drover::testing::expect_node_refuses(options, says);
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
