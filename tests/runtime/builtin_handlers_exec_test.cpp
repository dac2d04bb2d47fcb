// Tests of the built-in `exec` job type, driven through a handler_registry
// and a task_context like the worker drives them (the helpers are in
// tests/support/builtin_jobs.hpp): the registration of the built-in types,
// the results of a run, and what the program sees (argv, environment,
// working directory, stdin, descriptors, signal dispositions). Nothing
// sleeps: the test waits for events (a progress report, the outcome, a
// process's exit) with generous deadlines. The tests start real processes
// (/bin/sh, /bin/echo, ...).

#include "support/builtin_jobs.hpp"

#include "runtime/errors.hpp"
#include "runtime/task.hpp"

#include <catch2/catch.hpp>

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <cstdlib>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

using namespace drover;
using namespace drover::testing::builtin_jobs;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// -- registration -------------------------------------------------------------

TEST_CASE("register_builtin_handlers adds exec and sleep", "[builtin]") {
  handler_registry registry;
  REQUIRE(!register_builtin_handlers(registry, test_options(1500ms)));
  auto exec = registry.find("exec");
  auto sleep = registry.find("sleep");
  REQUIRE(exec != nullptr);
  REQUIRE(sleep != nullptr);
  CHECK(exec->options.resource_class == "cpu");
  CHECK(sleep->options.resource_class == "cpu");
  // The runtime forces a stop only after our own SIGKILL had its chance.
  CHECK(exec->options.cancel_grace > 1500ms);
  SECTION("twice is a configuration error") {
    auto err = register_builtin_handlers(registry, test_options());
    CHECK(is(err, errc::bad_config));
  }
  SECTION("a negative kill grace is a configuration error") {
    handler_registry other;
    auto err = register_builtin_handlers(other, test_options(-1ms));
    CHECK(is(err, errc::bad_config));
    CHECK(other.types().empty());
  }
}

// -- exec: results ------------------------------------------------------------

TEST_CASE("exec: exit 0 succeeds with the stdout tail", "[exec]") {
  auto outcome = run_job("exec", exec_input({"/bin/echo", "hello", "world"}));
  CHECK(outcome.outcome() == completion_outcome::succeeded);
  CHECK(outcome.result() == success_result("hello world\n"));
}

TEST_CASE("exec: PROGRESS lines become progress reports", "[exec]") {
  job_run job{"exec",
              sh("echo 'PROGRESS 10 download'; echo hello;"
                 " echo 'PROGRESS 5 backwards'; echo 'PROGRESS 150';"
                 " echo 'PROGRESS abc'; printf 'PROGRESS 60   resize  images"
                 "  \\r\\n'; echo bye; printf 'PROGRESS 100 done'")};
  auto outcome = job.outcome();
  REQUIRE(outcome.outcome() == completion_outcome::succeeded);
  // Rejected reports (backwards, > 100) are dropped, not fatal; a line that
  // isn't a report stays output; the last line needs no newline.
  CHECK(outcome.result() == success_result("hello\nPROGRESS abc\nbye\n"));
  auto updates = job.sink().updates();
  REQUIRE(updates.size() == 3);
  CHECK(updates[0].percent == 10);
  CHECK(updates[0].stage == "download");
  CHECK(updates[1].percent == 60);
  CHECK(updates[1].stage == "resize  images");
  CHECK(updates[2].percent == 100);
  CHECK(updates[2].stage == "done");
  REQUIRE(updates[2].stages.size() == 3);
  CHECK(updates[2].stages[0].name == "download");
  CHECK(updates[2].stages[0].state == stage_state::done);
  CHECK(updates[2].stages[2].name == "done");
  CHECK(updates[2].stages[2].state == stage_state::running);
}

TEST_CASE("exec: a report without a stage and a fractional percent", "[exec]") {
  job_run job{"exec", sh("echo 'PROGRESS 12.5'")};
  CHECK(job.outcome().result() == success_result(""));
  auto updates = job.sink().updates();
  REQUIRE(updates.size() == 1);
  CHECK(updates[0].percent == 12.5);
  CHECK(updates[0].stage.empty());
}

TEST_CASE("exec: the stdout tail is bounded and valid JSON", "[exec]") {
  SECTION("only the last 4 KiB") {
    auto outcome = run_job(
        "exec", sh("i=0; while [ $i -lt 2000 ]; do echo line$i; i=$((i+1));"
                   " done; echo END"));
    REQUIRE(outcome.outcome() == completion_outcome::succeeded);
    auto prefix = std::string{"{\"exit_code\":0,\"stdout_tail\":\""};
    REQUIRE(outcome.result().compare(0, prefix.size(), prefix) == 0);
    auto tail = outcome.result().substr(prefix.size());
    CHECK(tail.size() <= 4096 * 2 + 2); // "\n" escapes double the newlines
    CHECK_THAT(tail, Catch::EndsWith("line1999\\nEND\\n\"}"));
    CHECK(tail.find("line1000\\n") == std::string::npos);
  }
  SECTION("quotes, control characters and invalid UTF-8 are escaped") {
    auto outcome = run_job("exec", sh("printf 'q\"b\\\\\\t\\001\\033\\377x'"));
    REQUIRE(outcome.outcome() == completion_outcome::succeeded);
    CHECK(outcome.result()
          == "{\"exit_code\":0,\"stdout_tail\":"
             "\"q\\\"b\\\\\\t\\u0001\\u001b\xEF\xBF\xBDx\"}");
    // And Cap'n Proto's decoder accepts it as JSON.
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<capnp::JsonValue>();
    capnp::JsonCodec codec;
    codec.decodeRaw(kj::ArrayPtr<const char>{outcome.result().data(),
                                             outcome.result().size()},
                    root);
    CHECK(root.isObject());
  }
}

TEST_CASE("exec: a non-zero exit is a retryable exit_<n> with stderr's tail",
          "[exec]") {
  SECTION("stderr becomes the message") {
    auto outcome = run_job("exec", sh("echo oops >&2; echo boom >&2; exit 3"));
    CHECK(outcome.outcome() == completion_outcome::failed_retryable);
    CHECK(outcome.error().code == "exit_3");
    CHECK(outcome.error().retryable);
    CHECK(outcome.error().message == "oops\nboom");
  }
  SECTION("only the configured number of bytes") {
    auto options = test_options();
    options.stderr_tail_bytes = 8;
    auto outcome
        = run_job("exec", sh("printf 0123456789abcdef >&2; exit 1"), options);
    CHECK(outcome.error().code == "exit_1");
    CHECK(outcome.error().message == "89abcdef");
  }
  SECTION("without stderr") {
    auto outcome = run_job("exec", sh("exit 3"));
    CHECK(outcome.error().code == "exit_3");
    CHECK(outcome.error().message == "exited with status 3");
  }
}

TEST_CASE("exec: a program killed by a signal is a retryable signal_<n>",
          "[exec]") {
  auto outcome = run_job("exec", sh("kill -USR1 $$"));
  CHECK(outcome.outcome() == completion_outcome::failed_retryable);
  CHECK(outcome.error().code == "signal_" + std::to_string(SIGUSR1));
  CHECK(outcome.error().message
        == "killed by signal " + std::to_string(SIGUSR1) + " (SIGUSR1)");
}

TEST_CASE("exec: a program that can't be executed fails permanently",
          "[exec]") {
  SECTION("no such file") {
    auto outcome
        = run_job("exec", exec_input({"/nonexistent/drover-no-program"}));
    CHECK(outcome.outcome() == completion_outcome::failed_permanent);
    CHECK(outcome.error().code == "exec_failed");
    CHECK(outcome.error().message
          == "cannot execute '/nonexistent/drover-no-program': "
             "No such file or directory");
  }
  SECTION("not in PATH") {
    auto outcome = run_job("exec", exec_input({"drover-no-such-program"}));
    CHECK(outcome.error().code == "exec_failed");
    CHECK_THAT(outcome.error().message,
               Catch::Contains("'drover-no-such-program'"));
  }
  SECTION("not executable") {
    auto outcome = run_job("exec", exec_input({"/etc/passwd"}));
    CHECK(outcome.error().code == "exec_failed");
    CHECK_THAT(outcome.error().message, Catch::Contains("Permission denied"));
  }
}

// -- exec: what the program sees ----------------------------------------------

TEST_CASE("exec: env, cwd and stdin are honoured", "[exec]") {
  temp_dir dir;
  char resolved[PATH_MAX];
  REQUIRE(realpath(dir.path().c_str(), resolved) != nullptr);
  auto value = std::string{"it's $HOME; \"quoted\" `x`"};
  auto input
      = sh("printf '%s|%s|%s|' \"$TEST_VALUE\" \"$HOME\""
           " \"$(pwd -P)\"; cat",
           ", \"env\": {\"TEST_VALUE\": " + json_str(value)
               + ", \"HOME\": \"/drover-home\"}, \"cwd\": "
               + json_str(dir.path()) + ", \"stdin\": \"line 1\\nline 2\\n\"");
  auto outcome = run_job("exec", input);
  REQUIRE(outcome.outcome() == completion_outcome::succeeded);
  CHECK(outcome.result()
        == success_result(value + "|/drover-home|" + resolved
                          + "|line 1\nline 2\n"));
}

TEST_CASE("exec: the node's environment is not passed on and PATH is fixed",
          "[exec]") {
  // The node's environment may hold secrets (exec_policy.hpp): a program
  // gets PATH, HOME, the job's env and the DROVER_ variables only.
  REQUIRE(setenv("DROVER_TEST_SECRET", "secret", 1) == 0);
  const char* old_path = std::getenv("PATH");
  std::string saved_path = old_path != nullptr ? old_path : "/usr/bin:/bin";
  REQUIRE(setenv("PATH", "/nonexistent-drover-path", 1) == 0);
  auto outcome = run_job("exec", sh("printf '%s|%s|%s|%s' "
                                    "\"${DROVER_TEST_SECRET-unset}\" "
                                    "\"$PATH\" \"$OTHER\" \"$DROVER_JOB_ID\"",
                                    ", \"env\": {\"OTHER\": \"x\"}"));
  unsetenv("DROVER_TEST_SECRET");
  setenv("PATH", saved_path.c_str(), 1);
  CHECK(
      outcome.result()
      == success_result(std::string{"unset|"} + fixed_exec_path + "|x|job-1"));
}

TEST_CASE("exec: without stdin the program reads /dev/null", "[exec]") {
  auto outcome = run_job("exec", exec_input({"/bin/cat"}));
  CHECK(outcome.result() == success_result(""));
}

TEST_CASE("exec: large stdin and stdout flow at the same time", "[exec]") {
  std::string big(300000, 'x');
  SECTION("cat echoes it back; the tail is its end") {
    auto outcome = run_job(
        "exec", exec_input({"/bin/cat"}, ", \"stdin\": \"" + big + "\""));
    CHECK(outcome.result() == success_result(std::string(4096, 'x')));
  }
  SECTION("all of it arrives") {
    auto outcome = run_job("exec", sh("wc -c", ", \"stdin\": \"" + big + "\""));
    CHECK(outcome.result() == success_result("300000\n"));
  }
  SECTION("a program that doesn't read it") {
    // Its stdin closes early: EPIPE for us, no SIGPIPE for the node.
    auto outcome = run_job(
        "exec", exec_input({"/bin/true"}, ", \"stdin\": \"" + big + "\""));
    CHECK(outcome.outcome() == completion_outcome::succeeded);
  }
}

TEST_CASE("exec: shell metacharacters in argv stay inert", "[exec]") {
  temp_dir dir;
  auto marker = dir.path() + "/pwned";
  auto keep = dir.path() + "/keep";
  int fd = open(keep.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  REQUIRE(fd >= 0);
  close(fd);
  auto arg = "$(touch " + marker + "); rm -rf " + keep + "; `touch " + marker
             + "` | tee " + marker + " && echo x > " + marker + " * ${HOME}";
  auto outcome = run_job("exec", exec_input({"/bin/echo", arg}));
  CHECK(outcome.result() == success_result(arg + "\n"));
  CHECK(!file_exists(marker));
  CHECK(file_exists(keep));
}

TEST_CASE("exec: JSON unicode escapes reach the program as characters",
          "[exec]") {
  // Cap'n Proto 0.9.2 alone would turn "\u00e9" into "I".
  auto outcome = run_job(
      "exec",
      R"({"argv": ["/bin/echo", )"
      R"("caf\u00e9 \u20AC \ud83d\ude00 \u0041 \u005c \u0022 \ud800 \\u00e9"]})");
  CHECK(outcome.result()
        == success_result("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 A \\ \" "
                          "\xEF\xBF\xBD \\u00e9\n"));
}

TEST_CASE("exec: the program inherits no descriptors but 0-2", "[exec]") {
  // Opened without O_CLOEXEC, as careless code elsewhere in a node might.
  int leaky = open("/dev/null", O_RDONLY);
  REQUIRE(leaky >= 0);
  auto outcome = run_job("exec", sh("ls /proc/$$/fd"));
  close(leaky);
  CHECK(outcome.result() == success_result("0\n1\n2\n"));
}

TEST_CASE("exec: every descriptor it opens is closed", "[exec]") {
  auto before = open_descriptor_count();
  {
    job_run job{"exec", sh("echo hi; echo err >&2", ", \"stdin\": \"x\"")};
    CHECK(job.outcome().outcome() == completion_outcome::succeeded);
    // A cancel after the end must be harmless.
    job.ctx().request_cancel();
  }
  CHECK(open_descriptor_count() == before);
}

TEST_CASE("exec: signal mask and ignored signals are reset for the program",
          "[exec]") {
  // The node blocks SIGTERM/SIGINT in all threads; an ignored signal would
  // be inherited through exec as well.
  struct sigaction ignore {};
  struct sigaction previous {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  REQUIRE(sigaction(SIGUSR2, &ignore, &previous) == 0);
  job_run job{
      "exec",
      exec_input({"/bin/grep", "-E", "^Sig(Blk|Ign):", "/proc/self/status"}),
      test_options(), true};
  auto outcome = job.outcome();
  sigaction(SIGUSR2, &previous, nullptr);
  CHECK(outcome.result()
        == success_result("SigBlk:\t0000000000000000\n"
                          "SigIgn:\t0000000000000000\n"));
}
