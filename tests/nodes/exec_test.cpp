// Process tests of exec as a privilege (issue 11 item 3, checkpoints from
// item 6): a real drover-node (role all, memory store) on free ports, real
// HTTP clients, real programs. The exec scope and the allow-list at submit;
// the unprivileged user the node and its programs run as; limits; the whole
// process group killed on cancel; a node started as root without --run-as
// refusing to start; a checkpoint written by attempt 1 seen by attempt 2.
//
// Every wait is on an event with a deadline: the node's "ready" line, an
// HTTP answer, the job's event stream, a pidfd, a process exit.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using namespace drover::testing::gateway_api;
using drover::testing::clock_type;
using drover::testing::exits_within;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::json_value;
using drover::testing::parse_json;
using drover::testing::process;
using drover::testing::sse_stream;
using drover::testing::time_left;

namespace {

/// The uid the node's programs must run as: $DROVER_RUN_AS (default
/// "drover", as tests/support/process.hpp passes it) when the tests run as
/// root, else the tests' own.
uid_t expected_uid() {
  if (geteuid() != 0)
    return geteuid();
  const char* name = std::getenv("DROVER_RUN_AS");
  auto* entry = getpwnam(name != nullptr && *name != '\0' ? name : "drover");
  REQUIRE(entry != nullptr);
  return entry->pw_uid;
}

/// The real, effective, saved and filesystem uids of a running process.
std::vector<uid_t> uids_of(pid_t pid) {
  std::ifstream status{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream in{line.substr(4)};
      std::vector<uid_t> out;
      uid_t uid;
      while (in >> uid)
        out.push_back(uid);
      return out;
    }
  return {};
}

/// A job whose shell starts a grandchild that ignores SIGTERM, reports
/// both pids in a progress line, then waits.
std::string stubborn_group_job() {
  return exec_job({"sh", "-c",
                   "sh -c 'trap \\\"\\\" TERM; sleep 1000' & "
                   "echo \\\"PROGRESS 1 pids $$ $!\\\"; wait"});
}

/// Cancels the job and checks that its shell and the grandchild that
/// ignores SIGTERM are both gone (the whole group, SIGKILL after the grace).
void cancel_and_check_gone(const gateway_node& node, const std::string& id,
                           pid_t shell, pid_t grandchild) {
  auto res = node.client().post("/api/jobs/" + id + "/cancel", "{}");
  INFO(res.body);
  REQUIRE(res.status < 300);
  CHECK(await_end(node, {}, id)["status"].str() == "cancelled");
  CHECK(exits_within(shell, 10s));
  bool gone = exits_within(grandchild, 10s);
  CHECK(gone);
  if (!gone)
    kill(grandchild, SIGKILL);
}

/// The pids stubborn_group_job reports, read from the job's stream.
std::pair<pid_t, pid_t> shell_and_grandchild(const gateway_node& node,
                                             const std::string& id) {
  sse_stream s{node.port(), "/api/jobs/" + id + "/stream", {}};
  REQUIRE(s.head().status == 200);
  pid_t shell = 0, grandchild = 0;
  auto deadline = clock_type::now() + 30s;
  while (shell == 0) {
    auto ev = s.next(time_left(deadline));
    REQUIRE(ev);
    auto at = ev->data.find("pids ");
    if (at == std::string::npos)
      continue;
    std::istringstream in{ev->data.substr(at + 5)};
    in >> shell >> grandchild;
  }
  return {shell, grandchild};
}

} // namespace

TEST_CASE("exec needs the exec scope on top of submit", "[exec]") {
  api_key plain{"app", "acme", "submit,read"};
  api_key runner{"runner", "acme", "submit,read,exec"};
  gateway_node node{[&] {
    auto opts = key_options({&plain, &runner});
    opts.insert(opts.end(), {"--exec-allow", "true"});
    return opts;
  }()};
  auto job = exec_job({"true"});
  auto refused = node.client(plain.secret).post("/api/jobs", job);
  INFO(refused.body);
  CHECK(refused.status == 403);
  CHECK(error_code_of(refused) == "forbidden");
  CHECK_THAT(body_of(refused)["error"]["message"].str(),
             Catch::Contains("lacks the exec scope"));
  // A batch answers per item: the exec one is refused, the sleep one is not.
  auto batch = node.client(plain.secret)
                   .post("/api/jobs/batch",
                         "{\"jobs\": [" + job + ", "
                             + drover::testing::sleep_job(0, 0) + "]}");
  INFO(batch.body);
  REQUIRE(batch.status == 200);
  auto results = body_of(batch)["results"].items();
  REQUIRE(results.size() == 2);
  CHECK(results[0]["status"].integer() == 403);
  CHECK(body_of(batch)["accepted"].integer() == 1);
  // Sleep jobs still need nothing but submit; exec with the scope is fine.
  submit(node.client(plain.secret), drover::testing::sleep_job(0, 0));
  auto id = submit(node.client(runner.secret), job);
  CHECK(await_end(node, runner.secret, id)["status"].str() == "completed");
}

TEST_CASE("a program outside the allow-list is refused at submit, naming it",
          "[exec]") {
  api_key runner{"runner", "acme", "submit,read,exec"};
  SECTION("with an allow-list") {
    gateway_node node{[&] {
      auto opts = key_options({&runner});
      opts.insert(opts.end(), {"--exec-allow", "id"});
      return opts;
    }()};
    auto c = node.client(runner.secret);
    for (auto program : {"/bin/sh", "sh", "rm"}) {
      auto res = c.post("/api/jobs", exec_job({program, "-c", "true"}));
      INFO(res.body);
      CHECK(res.status == 400);
      CHECK_THAT(body_of(res)["error"]["message"].str(),
                 Catch::Contains(std::string{"program '"} + program + "'")
                     && Catch::Contains("not in this node's exec allow-list"));
    }
    auto list = c.get("/api/jobs");
    REQUIRE(list.status == 200);
    CHECK(body_of(list)["data"].items().empty());
  }
  SECTION("keys but no allow-list: exec is off") {
    gateway_node node{key_options({&runner})};
    auto res = node.client(runner.secret).post("/api/jobs", exec_job({"id"}));
    INFO(res.body);
    CHECK(res.status == 400);
    CHECK_THAT(body_of(res)["error"]["message"].str(),
               Catch::Contains("exec is disabled: no --exec-allow"));
    CHECK_THAT(node.log(), Catch::Contains("exec jobs are refused"));
  }
}

TEST_CASE("the node and its programs run as the unprivileged user, within "
          "their limits",
          "[exec]") {
  gateway_node node{{"--exec-allow", "id", "--exec-allow", "sha256sum"}};
  auto c = node.client();
  auto uid = expected_uid();
  CHECK(uid != 0);
  // The node itself: every uid dropped, so in-process handlers are
  // unprivileged too.
  CHECK(uids_of(node.pid()) == std::vector<uid_t>(4, uid));
  auto id = submit(c, exec_job({"id", "-u"}));
  auto job = await_end(node, {}, id);
  REQUIRE(job["status"].str() == "completed");
  auto result = parse_json(c.get("/api/jobs/" + id + "/result").body);
  CHECK(result["stdout_tail"].str() == std::to_string(uid) + "\n");
  // A program over its CPU limit (lowered by the job) fails, saying why.
  auto burner = submit(c, exec_job({"sha256sum", "/dev/zero"},
                                   R"(, "limits": {"cpu_seconds": 1})",
                                   R"(, "max_attempts": 1)"));
  auto burnt = await_end(node, {}, burner);
  CHECK(burnt["status"].str() == "failed");
  CHECK(burnt["error"]["code"].str() == "cpu_limit");
  CHECK_THAT(burnt["error"]["message"].str(),
             Catch::Contains("exceeded its CPU time limit of 1 s"));
}

TEST_CASE("cancel kills the program's whole process group", "[exec]") {
  gateway_node node{{"--exec-allow", "sh", "--exec-kill-grace-ms", "300"}};
  auto c = node.client();
  auto id = submit(c, stubborn_group_job());
  auto [shell, grandchild] = shell_and_grandchild(node, id);
  REQUIRE(grandchild > 0);
  CHECK(kill(grandchild, 0) == 0);
  CHECK(uids_of(grandchild) == std::vector<uid_t>(4, expected_uid()));
  cancel_and_check_gone(node, id, shell, grandchild);
}

TEST_CASE("an exec checkpoint written by attempt 1 reaches attempt 2 in "
          "DROVER_CHECKPOINT",
          "[exec]") {
  gateway_node node{{"--exec-allow", "sh"}};
  auto c = node.client();
  auto script = "if [ -z \\\"$DROVER_CHECKPOINT\\\" ]; then "
                "echo \\\"CHECKPOINT half of $DROVER_JOB_ID\\\"; exit 3; fi; "
                "echo \\\"resumed from '$DROVER_CHECKPOINT' in attempt "
                "$DROVER_ATTEMPT\\\"";
  auto id = submit(
      c, exec_job({"sh", "-c", script}, {},
                  R"(, "max_attempts": 2, "backoff": {"initial_seconds": 0.01,)"
                  R"( "max_seconds": 0.01, "multiplier": 1, "jitter": 0})"));
  auto job = await_end(node, {}, id);
  REQUIRE(job["status"].str() == "completed");
  CHECK(job["attempt"].integer() == 2);
  auto result = parse_json(c.get("/api/jobs/" + id + "/result").body);
  CHECK(result["stdout_tail"].str()
        == "resumed from 'half of " + id + "' in attempt 2\n");
}

TEST_CASE("a node started as root needs an unprivileged --run-as user",
          "[exec]") {
  if (geteuid() != 0) {
    WARN("not root: nothing to refuse");
    return;
  }
  auto exits_with_2 = [](const std::string& run_as, const std::string& says) {
    drover::testing::expect_node_refuses({"--run-as", run_as}, says);
  };
  exits_with_2("", "refusing to run as root");
  exits_with_2("root", "is root (uid 0)");
  exits_with_2("drover-no-such-user", "no such user 'drover-no-such-user'");
}

TEST_CASE("development mode allows any program and says so", "[exec]") {
  gateway_node node;
  CHECK_THAT(node.log(), Catch::Contains("exec jobs may run ANY program"));
  auto id = submit(node.client(), exec_job({"id", "-u"}));
  CHECK(await_end(node, {}, id)["status"].str() == "completed");
}

namespace {

/// The first id of the subordinate range /etc/subuid grants the user the
/// node runs as (scripts/lib.sh ensure_run_as_user adds one), or 0.
uint32_t subordinate_id() {
  if (geteuid() != 0)
    return 0;
  const char* name = std::getenv("DROVER_RUN_AS");
  std::string user = name != nullptr && *name != '\0' ? name : "drover";
  std::ifstream in{"/etc/subuid"};
  for (std::string line; std::getline(in, line);)
    if (line.rfind(user + ":", 0) == 0)
      return static_cast<uint32_t>(std::stoul(line.substr(user.size() + 1)));
  return 0;
}

} // namespace

TEST_CASE("with --exec-user-id programs run as a user of their own: they "
          "cannot signal the node, and the node still stops them",
          "[exec]") {
  auto id = subordinate_id();
  if (id == 0 || access("/usr/bin/newuidmap", X_OK) != 0) {
    WARN("no subordinate id range or no newuidmap here: nothing checked");
    return;
  }
  gateway_node node{{"--exec-allow", "id", "--exec-allow", "sh",
                     "--exec-kill-grace-ms", "300", "--exec-user-id",
                     std::to_string(id)}};
  auto c = node.client();
  auto who = submit(c, exec_job({"sh", "-c", "id -u; id -g"}));
  REQUIRE(await_end(node, {}, who)["status"].str() == "completed");
  auto result = parse_json(c.get("/api/jobs/" + who + "/result").body);
  CHECK(result["stdout_tail"].str()
        == std::to_string(id) + "\n" + std::to_string(id) + "\n");
  // The node's user may signal its own processes; the program's may not.
  auto attack = submit(
      c, exec_job({"sh", "-c", "kill -STOP " + std::to_string(node.pid())}, {},
                  R"(, "max_attempts": 1)"));
  auto refused = await_end(node, {}, attack);
  CHECK(refused["status"].str() == "failed");
  CHECK_THAT(refused["error"]["message"].str(),
             Catch::Contains("Operation not permitted"));
  CHECK(uids_of(node.pid()) == std::vector<uid_t>(4, expected_uid()));
  // Cancel still reaches the program's whole group across the user line.
  auto id_job = submit(c, stubborn_group_job());
  auto [shell, grandchild] = shell_and_grandchild(node, id_job);
  REQUIRE(grandchild > 0);
  CHECK(uids_of(grandchild) == std::vector<uid_t>(4, id));
  cancel_and_check_gone(node, id_job, shell, grandchild);
}

TEST_CASE("a node refuses an --exec-user-id it cannot run programs as",
          "[exec]") {
  if (geteuid() != 0) {
    WARN("not root: the node would run as this user; nothing checked");
    return;
  }
  auto refuses = [](const std::string& id, const std::string& says) {
    drover::testing::expect_node_refuses({"--exec-user-id", id}, says);
  };
  refuses(std::to_string(expected_uid()), "is the node's own uid");
  refuses("12345", "not in a range /etc/subuid and /etc/subgid grant");
  refuses("4294967295", "exec-user-id must be within [0, 4294967294]");
}
