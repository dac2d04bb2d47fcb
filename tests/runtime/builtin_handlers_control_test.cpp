// Tests of the built-in `exec` job type, driven through a handler_registry
// and a task_context like the worker drives them (the helpers are in
// tests/support/builtin_jobs.hpp): cancellation and the cleanup of the
// program's processes, the allow-list, resource limits, checkpoints, and
// invalid input. Each handler runs on a thread of its own while the test
// watches its progress reports and cancels it. Nothing sleeps: the test
// waits for events (a progress report, the outcome, a process's exit) with
// generous deadlines. The tests start real processes (/bin/sh, /bin/echo,
// ...).

#include "support/builtin_jobs.hpp"

#include "runtime/errors.hpp"
#include "runtime/task.hpp"

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace drover;
using namespace drover::testing::builtin_jobs;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// -- exec: cancellation and cleanup -------------------------------------------

TEST_CASE("exec: cancel stops a cooperative program with SIGTERM", "[exec]") {
  // A grace far beyond the deadline: only SIGTERM can end it in time.
  job_run job{"exec",
              sh("trap 'exit 0' TERM; echo 'PROGRESS 1 ready';"
                 " while :; do sleep 1; done"),
              test_options(60s)};
  REQUIRE(job.sink().wait_for_stage("ready"));
  job.ctx().request_cancel();
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::cancelled);
}

TEST_CASE("exec: cancel reaches the program when the caller blocks SIGTERM",
          "[exec]") {
  job_run job{"exec", sh("echo 'PROGRESS 1 ready'; exec sleep 1000"),
              test_options(60s), true};
  REQUIRE(job.sink().wait_for_stage("ready"));
  job.ctx().request_cancel();
  CHECK(job.outcome().outcome() == completion_outcome::cancelled);
}

TEST_CASE("exec: a program ignoring SIGTERM is killed after the grace",
          "[exec]") {
  job_run job{"exec",
              sh("trap '' TERM; sleep 1000 & echo \"PROGRESS 1 pids $$ $!\";"
                 " wait"),
              test_options(200ms)};
  auto stage = job.sink().wait_for_stage("pids");
  REQUIRE(stage);
  auto pids = parse_pids(*stage);
  REQUIRE(pids.shell > 0);
  REQUIRE(pids.background > 0);
  CHECK(kill(pids.shell, 0) == 0);
  CHECK(kill(pids.background, 0) == 0);
  auto cancelled_at = steady_clock::now();
  job.ctx().request_cancel();
  auto outcome = job.outcome();
  auto stop_time = steady_clock::now() - cancelled_at;
  CHECK(outcome.outcome() == completion_outcome::cancelled);
  CHECK(stop_time >= 200ms); // SIGTERM alone didn't do it
  // The handler reaped its child; the background sleep is an orphan whose
  // reaping is up to init, so for it "no longer runs" is what counts.
  CHECK(reaped(pids.shell));
  CHECK(exits_within(pids.background, prompt));
}

TEST_CASE("exec: a background process outlives nothing", "[exec]") {
  job_run job{"exec", sh("sleep 1000 & echo \"PROGRESS 1 pids $$ $!\"")};
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::succeeded);
  auto stage = job.sink().wait_for_stage("pids", 0ms);
  REQUIRE(stage);
  auto pids = parse_pids(*stage);
  REQUIRE(pids.background > 0);
  CHECK(reaped(pids.shell));
  auto gone = exits_within(pids.background, prompt);
  CHECK(gone);
  if (!gone)
    kill(pids.background, SIGKILL);
}

TEST_CASE("exec: a cancel before the start runs nothing", "[exec]") {
  temp_dir dir;
  auto marker = dir.path() + "/ran";
  auto sink = std::make_shared<recording_sink>();
  task_context ctx{"job-1", 1,    exec_input({"/bin/touch", marker}),
                   "",      sink, nullptr};
  ctx.request_cancel();
  handler_registry registry;
  REQUIRE(!register_builtin_handlers(registry, test_options()));
  auto outcome = registry.find("exec")->fn(ctx);
  CHECK(outcome.outcome() == completion_outcome::cancelled);
  CHECK(!file_exists(marker));
}

// -- exec: allow-list, limits, checkpoints (issue 11)
// --------------------------

namespace {

/// Options whose allow-list holds `programs` (resolved as the node does).
builtin_options allowing(const std::vector<std::string>& programs) {
  auto options = test_options();
  options.exec.allow_any = false;
  auto allowed = resolve_allow_list(programs);
  REQUIRE(allowed);
  options.exec.allowed = *allowed;
  return options;
}

/// What the exec type's submit-time check says about `input`.
std::string submit_check(const builtin_options& options,
                         const std::string& input) {
  handler_registry registry;
  REQUIRE(!register_builtin_handlers(registry, options));
  const auto* exec = registry.find("exec");
  REQUIRE(exec != nullptr);
  REQUIRE(exec->options.validate_input);
  return exec->options.validate_input(input);
}

} // namespace

TEST_CASE("exec: only allow-listed programs run, checked at submit and "
          "again before exec",
          "[exec][allow]") {
  temp_dir dir;
  auto marker = dir.path() + "/ran";
  auto options = allowing({"echo"}); // resolves to /usr/bin/echo
  REQUIRE(options.exec.allowed == std::vector<std::string>{"/usr/bin/echo"});
  SECTION("a program outside the list is refused, naming it") {
    auto input = exec_input({"/bin/touch", marker});
    CHECK_THAT(submit_check(options, input),
               Catch::Contains("program '/bin/touch' is not in this node's "
                               "exec allow-list"));
    auto outcome = run_job("exec", input, options);
    CHECK(outcome.outcome() == completion_outcome::failed_permanent);
    CHECK(outcome.error().code == "exec_not_allowed");
    CHECK(!outcome.error().retryable);
    CHECK_THAT(outcome.error().message, Catch::Contains("'/bin/touch'"));
    CHECK(!file_exists(marker));
  }
  SECTION("no shell unless a shell is allowed") {
    auto input = sh("touch " + marker);
    CHECK_THAT(submit_check(options, input),
               Catch::Contains("'/bin/sh' is not in this node's"));
    CHECK(run_job("exec", input, options).error().code == "exec_not_allowed");
    CHECK(!file_exists(marker));
  }
  SECTION("the path is compared as resolved: /bin/echo is another string") {
    CHECK_THAT(submit_check(options, exec_input({"/bin/echo", "x"})),
               Catch::Contains("not in this node's exec allow-list"));
    CHECK_THAT(submit_check(options, exec_input({"./echo", "x"})),
               Catch::Contains("must be an absolute path or a bare name"));
  }
  SECTION("the allowed program runs by name and by its path") {
    CHECK(submit_check(options, exec_input({"echo", "x"})).empty());
    CHECK(run_job("exec", exec_input({"echo", "by name"}), options).result()
          == success_result("by name\n"));
    CHECK(run_job("exec", exec_input({"/usr/bin/echo", "by path"}), options)
              .result()
          == success_result("by path\n"));
  }
  SECTION("without any allowed program exec is off, and says so") {
    auto off = test_options();
    off.exec.allow_any = false;
    CHECK_THAT(submit_check(off, exec_input({"echo"})),
               Catch::Contains("exec is disabled: no --exec-allow"));
  }
}

TEST_CASE("exec: programs run with the limits, lowered by the job",
          "[exec][limits]") {
  auto options = test_options();
  options.exec.limits = {60, 1024, 64, 300};
  SECTION("the node's limits") {
    auto outcome
        = run_job("exec",
                  sh("ulimit -t; ulimit -v; ulimit -n; ulimit -p; ulimit -c; "
                     "grep NoNewPrivs /proc/self/status"),
                  options);
    CHECK(outcome.result()
          == success_result("60\n1048576\n64\n300\n0\nNoNewPrivs:\t1\n"));
  }
  SECTION("a job's lower limits") {
    auto outcome = run_job(
        "exec",
        sh("ulimit -t; ulimit -v; ulimit -n; ulimit -p",
           R"(, "limits": {"cpu_seconds": 5, "address_space_mb": 512, )"
           R"("open_files": 32, "processes": 100})"),
        options);
    CHECK(outcome.result() == success_result("5\n524288\n32\n100\n"));
  }
  SECTION("never higher ones") {
    auto input = sh("true", R"(, "limits": {"open_files": 65})");
    CHECK_THAT(submit_check(options, input),
               Catch::Contains("limits.open_files must be within [1, 64] "
                               "(this node's limit), got 65"));
    require_invalid_input(run_job("exec", input, options),
                          "limits.open_files must be within [1, 64]");
  }
}

TEST_CASE("exec: a program over its limits fails, saying why",
          "[exec][limits]") {
  SECTION("CPU time") {
    auto outcome = run_job(
        "exec", sh("while :; do :; done", R"(, "limits": {"cpu_seconds": 1})"),
        test_options(), 60s);
    CHECK(outcome.outcome() == completion_outcome::failed_retryable);
    CHECK(outcome.error().code == "cpu_limit");
    CHECK_THAT(outcome.error().message,
               Catch::Contains("exceeded its CPU time limit of 1 s "
                               "(RLIMIT_CPU)"));
  }
  SECTION("open files") {
    auto outcome = run_job(
        "exec", sh("exec 3</dev/null 4</dev/null 5</dev/null 6</dev/null",
                   R"(, "limits": {"open_files": 5})"));
    CHECK(outcome.error().code == "exit_2");
    CHECK_THAT(outcome.error().message, Catch::Contains("Too many open files"));
  }
  SECTION("address space") {
    auto outcome = run_job(
        "exec", exec_input({"awk", "BEGIN { s = \"x\"; while (1) s = s s }"},
                           R"(, "limits": {"address_space_mb": 64})"));
    CHECK(outcome.outcome() == completion_outcome::failed_retryable);
    CHECK_THAT(outcome.error().message, Catch::Contains("out of memory"));
  }
}

TEST_CASE("exec: CHECKPOINT lines are saved and the next attempt gets the "
          "last one in DROVER_CHECKPOINT",
          "[exec][checkpoint]") {
  job_run job{"exec",
              sh("printf '%s|%s|%s\\n' \"$DROVER_CHECKPOINT\" "
                 "\"$DROVER_ATTEMPT\" \"$DROVER_JOB_ID\"; "
                 "echo 'CHECKPOINT step 4'; echo 'CHECKPOINTx is output'; "
                 "echo 'CHECKPOINT  {\"done\": [1, 2]}'"),
              test_options(),
              false,
              2,
              "step 3"};
  auto outcome = job.outcome();
  CHECK(outcome.result()
        == success_result("step 3|2|job-1\nCHECKPOINTx is output\n"));
  CHECK(job.sink().checkpoints()
        == std::vector<std::string>{"step 4", R"( {"done": [1, 2]})"});
}

// -- exec: invalid input ------------------------------------------------------

TEST_CASE("exec: invalid input fails permanently with a specific message",
          "[exec]") {
  struct example {
    std::string input;
    std::string message_part;
  };
  std::string deep = std::string(40, '[') + std::string(40, ']');
  std::vector<example> examples{
      {"", "input must be a JSON object, got nothing"},
      {"not json", "input is not valid JSON"},
      {R"({"argv": ["ls"]} trailing)", "input is not valid JSON"},
      {R"({"argv": )" + deep + "}", "nested too deeply"},
      {R"(["ls"])", "input must be a JSON object, got an array"},
      {R"({})", "'argv' is required"},
      {R"({"argv": "ls -l"})",
       "argv must be an array of strings, got a string"},
      {R"({"argv": []})", "argv must not be empty"},
      {R"({"argv": ["ls", 1]})", "argv[1] must be a string, got a number"},
      {R"({"argv": [""]})", "argv[0] (the program) must not be empty"},
      {R"({"argv": ["l\u0000s"]})", "argv[0] contains a NUL character"},
      {R"({"argv": ["ls"], "argv": ["rm"]})", "duplicate key 'argv'"},
      {R"({"argv": ["ls"], "shell": true})",
       "unknown key 'shell' (expected: argv, env, cwd, stdin, limits)"},
      {R"({"argv": ["ls"], "env": {"LD_PRELOAD": "/tmp/x.so"}})",
       "env name 'LD_PRELOAD' is reserved"},
      {R"({"argv": ["ls"], "env": {"PATH": "/tmp"}})",
       "env name 'PATH' is reserved"},
      {R"({"argv": ["ls"], "env": {"DROVER_CHECKPOINT": "x"}})",
       "env name 'DROVER_CHECKPOINT' is reserved"},
      {R"({"argv": ["ls"], "limits": {"cpu_seconds": 0}})",
       "limits.cpu_seconds must be an integer in [1, "},
      {R"({"argv": ["ls"], "limits": {"cpu_seconds": 3601}})",
       "limits.cpu_seconds must be within [1, 3600] (this node's limit)"},
      {R"({"argv": ["ls"], "limits": {"memory": 1}})",
       "limits: unknown key 'memory'"},
      {R"({"argv": ["ls"], "env": ["A=1"]})",
       "env must be an object of strings, got an array"},
      {R"({"argv": ["ls"], "env": {"A": 1}})",
       "env value of 'A' must be a string, got a number"},
      {R"({"argv": ["ls"], "env": {"A=B": "1"}})",
       "env name 'A=B' must not contain '='"},
      {R"({"argv": ["ls"], "env": {"": "1"}})", "env names must not be empty"},
      {R"({"argv": ["ls"], "env": {"A": "1", "A": "2"}})",
       "env name 'A' appears twice"},
      {R"({"argv": ["ls"], "cwd": 5})", "cwd must be a string, got a number"},
      {R"({"argv": ["ls"], "cwd": ""})", "cwd must not be empty"},
      {R"({"argv": ["ls"], "cwd": "/nonexistent/drover-dir"})",
       "cwd '/nonexistent/drover-dir': No such file or directory"},
      {R"({"argv": ["ls"], "cwd": "/etc/passwd"})",
       "cwd '/etc/passwd' is not a directory"},
      {R"({"argv": ["ls"], "stdin": ["a"]})",
       "stdin must be a string, got an array"},
  };
  for (const auto& ex : examples) {
    INFO("input: " << ex.input);
    require_invalid_input(run_job("exec", ex.input), ex.message_part);
  }
}
