// Tests of the built-in `exec` and `sleep` job types, driven through a
// handler_registry and a task_context like the worker drives them: each
// handler runs on a thread of its own while the test watches its progress
// reports and cancels it. Nothing sleeps: the test waits for events (a
// progress report, the outcome, a process's exit) with generous deadlines.
// The exec tests start real processes (/bin/sh, /bin/echo, ...).

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/task.hpp"

#include <catch2/catch.hpp>

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

using namespace drover;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

namespace {

/// For anything that should happen right away; generous because the test
/// machine is shared.
constexpr milliseconds prompt = 10s;

/// Records every progress report; safe to read from the test thread while
/// the handler's thread reports.
class recording_sink : public task_sink {
public:
  void on_progress(const progress_update& update) override {
    {
      std::lock_guard<std::mutex> guard{mx_};
      updates_.push_back(update);
    }
    cv_.notify_all();
  }

  void on_checkpoint(const std::string&, uint32_t,
                     const std::string& bytes) override {
    std::lock_guard<std::mutex> guard{mx_};
    checkpoints_.push_back(bytes);
  }

  /// Checkpoints saved so far (exec's CHECKPOINT lines), in order.
  std::vector<std::string> checkpoints() const {
    std::lock_guard<std::mutex> guard{mx_};
    return checkpoints_;
  }

  std::vector<progress_update> updates() const {
    std::lock_guard<std::mutex> guard{mx_};
    return updates_;
  }

  /// The stage of the first report whose stage starts with `prefix`;
  /// nullopt if none arrives within `timeout`.
  std::optional<std::string> wait_for_stage(const std::string& prefix,
                                            milliseconds timeout = prompt) {
    std::unique_lock<std::mutex> guard{mx_};
    std::optional<std::string> found;
    cv_.wait_for(guard, timeout, [&] {
      for (const auto& update : updates_)
        if (update.stage.compare(0, prefix.size(), prefix) == 0) {
          found = update.stage;
          return true;
        }
      return false;
    });
    return found;
  }

  /// Waits until at least `count` reports arrived.
  bool wait_for_count(size_t count, milliseconds timeout = prompt) {
    std::unique_lock<std::mutex> guard{mx_};
    return cv_.wait_for(guard, timeout,
                        [&] { return updates_.size() >= count; });
  }

private:
  mutable std::mutex mx_;
  std::condition_variable cv_;
  std::vector<progress_update> updates_;
  std::vector<std::string> checkpoints_;
};

builtin_options test_options(milliseconds kill_grace = 200ms) {
  builtin_options options;
  options.exec_kill_grace = kill_grace;
  // Development mode: any program (the allow-list has tests of its own).
  options.exec.allow_any = true;
  return options;
}

/// One attempt of a built-in job type, running on its own thread. The
/// destructor cancels a handler that is still running and waits for it.
class job_run {
public:
  job_run(const std::string& type, std::string input,
          const builtin_options& options = test_options(),
          bool block_term_in_handler_thread = false, uint32_t attempt = 1,
          std::string last_checkpoint = {}) {
    handler_registry registry;
    REQUIRE(!register_builtin_handlers(registry, options));
    auto handler = registry.find(type);
    REQUIRE(handler != nullptr);
    ctx_ = std::make_unique<task_context>("job-1", attempt, std::move(input),
                                          std::move(last_checkpoint), sink_,
                                          [] { return int64_t{0}; });
    started_ = steady_clock::now();
    outcome_
        = std::async(std::launch::async, [fn = handler->fn, ctx = ctx_.get(),
                                          block_term_in_handler_thread] {
            if (block_term_in_handler_thread) {
              // What drover-node does in every thread.
              sigset_t set;
              sigemptyset(&set);
              sigaddset(&set, SIGTERM);
              sigaddset(&set, SIGINT);
              pthread_sigmask(SIG_BLOCK, &set, nullptr);
            }
            return fn(*ctx);
          });
  }

  job_run(const job_run&) = delete;
  job_run& operator=(const job_run&) = delete;

  ~job_run() {
    if (outcome_.valid()) {
      ctx_->request_cancel();
      outcome_.wait();
    }
  }

  task_context& ctx() {
    return *ctx_;
  }

  recording_sink& sink() {
    return *sink_;
  }

  /// Fails the test unless the handler returns within `timeout`.
  task_outcome outcome(milliseconds timeout = prompt) {
    REQUIRE(outcome_.wait_for(timeout) == std::future_status::ready);
    finished_ = steady_clock::now();
    return outcome_.get();
  }

  milliseconds running_time() const {
    return std::chrono::duration_cast<milliseconds>(finished_ - started_);
  }

private:
  std::shared_ptr<recording_sink> sink_ = std::make_shared<recording_sink>();
  std::unique_ptr<task_context> ctx_;
  std::future<task_outcome> outcome_;
  steady_clock::time_point started_;
  steady_clock::time_point finished_;
};

task_outcome run_job(const std::string& type, std::string input,
                     const builtin_options& options = test_options(),
                     milliseconds timeout = prompt) {
  job_run job{type, std::move(input), options};
  return job.outcome(timeout);
}

/// A JSON string literal (runtime/json_text's json_quote, tested with
/// literal expectations in json_text_test.cpp).
std::string json_str(const std::string& str) {
  return json_quote(str);
}

/// `{"argv": [...]<more>}`; `more` starts with ", " when not empty.
std::string exec_input(const std::vector<std::string>& argv,
                       const std::string& more = {}) {
  std::string out = "{\"argv\": [";
  for (size_t i = 0; i < argv.size(); ++i)
    out += (i == 0 ? "" : ", ") + json_str(argv[i]);
  return out + "]" + more + "}";
}

std::string sh(const std::string& script, const std::string& more = {}) {
  return exec_input({"/bin/sh", "-c", script}, more);
}

std::string success_result(const std::string& stdout_tail) {
  return "{\"exit_code\":0,\"stdout_tail\":" + json_str(stdout_tail) + "}";
}

/// Pids a script printed as `PROGRESS 1 pids <shell> <background child>`.
struct script_pids {
  pid_t shell = 0;
  pid_t background = 0;
};

script_pids parse_pids(const std::string& stage) {
  std::istringstream in{stage};
  std::string word;
  script_pids pids;
  in >> word >> pids.shell >> pids.background;
  return pids;
}

/// True once `pid` no longer runs (exited, maybe not yet reaped by its
/// parent), waiting at most `timeout` on a pidfd.
bool exits_within(pid_t pid, milliseconds timeout) {
  int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0)
    return errno == ESRCH;
  pollfd pfd{fd, POLLIN, 0};
  int ready = poll(&pfd, 1, static_cast<int>(timeout.count()));
  close(fd);
  return ready == 1;
}

/// Gone entirely: not even a zombie (which would still answer kill 0).
bool reaped(pid_t pid) {
  return kill(pid, 0) == -1 && errno == ESRCH;
}

/// A fresh directory under /tmp, removed with its files afterwards.
class temp_dir {
public:
  temp_dir() {
    char name[] = "/tmp/drover-exec-test-XXXXXX";
    REQUIRE(mkdtemp(name) != nullptr);
    path_ = name;
  }
  ~temp_dir() {
    if (auto dir = opendir(path_.c_str())) {
      while (auto entry = readdir(dir))
        if (std::string{entry->d_name} != "."
            && entry->d_name != std::string{".."})
          unlink((path_ + "/" + entry->d_name).c_str());
      closedir(dir);
    }
    rmdir(path_.c_str());
  }
  const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

bool file_exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

size_t open_descriptor_count() {
  size_t count = 0;
  if (auto dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr)
      ++count;
    closedir(dir);
  }
  return count;
}

void require_invalid_input(const task_outcome& outcome,
                           const std::string& message_part) {
  CHECK(outcome.outcome() == completion_outcome::failed_permanent);
  CHECK(outcome.error().code == "invalid_input");
  CHECK(!outcome.error().retryable);
  CHECK_THAT(outcome.error().message, Catch::Contains(message_part));
}

} // namespace

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

// -- sleep --------------------------------------------------------------------

TEST_CASE("sleep: ms 0 succeeds at once", "[sleep]") {
  job_run job{"sleep", R"({"ms": 0, "steps": 5})"};
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::succeeded);
  CHECK(outcome.result() == R"({"slept_ms":0})");
  CHECK(job.sink().updates().empty());
}

TEST_CASE("sleep: reports progress after each of K steps", "[sleep]") {
  SECTION("four steps") {
    job_run job{"sleep", R"({"ms": 40, "steps": 4})"};
    auto outcome = job.outcome();
    CHECK(outcome.result() == R"({"slept_ms":40})");
    CHECK(job.running_time() >= 40ms);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 4);
    for (size_t i = 0; i < 4; ++i) {
      CHECK(updates[i].percent == 25.0 * static_cast<double>(i + 1));
      CHECK(updates[i].stage.empty());
    }
  }
  SECTION("three steps") {
    job_run job{"sleep", R"({"ms": 10, "steps": 3})"};
    CHECK(job.outcome().outcome() == completion_outcome::succeeded);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 3);
    CHECK(updates[0].percent == Approx(100.0 / 3));
    CHECK(updates[1].percent == Approx(200.0 / 3));
    CHECK(updates[2].percent == 100);
  }
  SECTION("steps defaults to 1") {
    job_run job{"sleep", R"({"ms": 5})"};
    CHECK(job.outcome().outcome() == completion_outcome::succeeded);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 1);
    CHECK(updates[0].percent == 100);
  }
  SECTION("zero steps report nothing") {
    job_run job{"sleep", R"({"ms": 5, "steps": 0})"};
    CHECK(job.outcome().result() == R"({"slept_ms":5})");
    CHECK(job.sink().updates().empty());
  }
}

TEST_CASE("sleep: cancel interrupts a long sleep at once", "[sleep]") {
  // An hour in 10000 steps: the first report comes after 360 ms.
  job_run job{"sleep", R"({"ms": 3600000, "steps": 10000})"};
  REQUIRE(job.sink().wait_for_count(1));
  auto cancelled_at = steady_clock::now();
  job.ctx().request_cancel();
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::cancelled);
  CHECK(steady_clock::now() - cancelled_at < 5s);
  CHECK(job.sink().updates().front().percent == Approx(0.01));
}

TEST_CASE("sleep: invalid input fails permanently with a specific message",
          "[sleep]") {
  struct example {
    std::string input;
    std::string message_part;
  };
  std::vector<example> examples{
      {"", "input must be a JSON object, got nothing"},
      {"{", "input is not valid JSON"},
      {"5", "input must be a JSON object, got a number"},
      {R"({})", "'ms' is required"},
      {R"({"ms": "100"})",
       "ms must be an integer in [0, 86400000], got a string"},
      {R"({"ms": -1})", "ms must be an integer in [0, 86400000], got -1"},
      {R"({"ms": 1.5})", "got 1.5"},
      {R"({"ms": 86400001})", "got 86400001"},
      {R"({"ms": 1e400})", "got inf"},
      {R"({"ms": 10, "steps": 10001})",
       "steps must be an integer in [0, 10000], got 10001"},
      {R"({"ms": 10, "steps": null})",
       "steps must be an integer in [0, 10000], got null"},
      {R"({"ms": 10, "seconds": 1})",
       "unknown key 'seconds' (expected: ms, steps, tokens)"},
      {R"({"ms": 10, "ms": 20})", "duplicate key 'ms'"},
      {R"({"ms": 0, "tokens": -1})",
       "tokens must be an integer in [0, 1000000], got -1"},
      {R"({"ms": 0, "tokens": 1000001})", "got 1000001"},
  };
  for (const auto& ex : examples) {
    INFO("input: " << ex.input);
    require_invalid_input(run_job("sleep", ex.input), ex.message_part);
  }
}
