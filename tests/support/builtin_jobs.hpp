#pragma once

// Helpers of the tests of the built-in `exec` and `sleep` job types
// (tests/runtime/builtin_handlers_*_test.cpp): a handler runs on a thread
// of its own (job_run) while the test watches its progress reports
// (recording_sink) and cancels it; exec inputs and expected results, and
// checks of the processes, files and descriptors a program leaves behind.

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/task.hpp"
#include "support/process.hpp"

#include <catch2/catch.hpp>

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
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace drover::testing::builtin_jobs {

using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

/// For anything that should happen right away; generous because the test
/// machine is shared.
inline constexpr milliseconds prompt = 10s;

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

inline builtin_options test_options(milliseconds kill_grace = 200ms) {
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

inline task_outcome run_job(const std::string& type, std::string input,
                            const builtin_options& options = test_options(),
                            milliseconds timeout = prompt) {
  job_run job{type, std::move(input), options};
  return job.outcome(timeout);
}

/// A JSON string literal (runtime/json_text's json_quote, tested with
/// literal expectations in json_text_test.cpp).
inline std::string json_str(const std::string& str) {
  return json_quote(str);
}

/// `{"argv": [...]<more>}`; `more` starts with ", " when not empty.
inline std::string exec_input(const std::vector<std::string>& argv,
                              const std::string& more = {}) {
  std::string out = "{\"argv\": [";
  for (size_t i = 0; i < argv.size(); ++i)
    out += (i == 0 ? "" : ", ") + json_str(argv[i]);
  return out + "]" + more + "}";
}

inline std::string sh(const std::string& script, const std::string& more = {}) {
  return exec_input({"/bin/sh", "-c", script}, more);
}

inline std::string success_result(const std::string& stdout_tail) {
  return "{\"exit_code\":0,\"stdout_tail\":" + json_str(stdout_tail) + "}";
}

/// Pids a script printed as `PROGRESS 1 pids <shell> <background child>`.
struct script_pids {
  pid_t shell = 0;
  pid_t background = 0;
};

inline script_pids parse_pids(const std::string& stage) {
  std::istringstream in{stage};
  std::string word;
  script_pids pids;
  in >> word >> pids.shell >> pids.background;
  return pids;
}

using drover::testing::exits_within;

/// Gone entirely: not even a zombie (which would still answer kill 0).
inline bool reaped(pid_t pid) {
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

inline bool file_exists(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0;
}

inline size_t open_descriptor_count() {
  size_t count = 0;
  if (auto dir = opendir("/proc/self/fd")) {
    while (readdir(dir) != nullptr)
      ++count;
    closedir(dir);
  }
  return count;
}

inline void require_invalid_input(const task_outcome& outcome,
                                  const std::string& message_part) {
  CHECK(outcome.outcome() == completion_outcome::failed_permanent);
  CHECK(outcome.error().code == "invalid_input");
  CHECK(!outcome.error().retryable);
  CHECK_THAT(outcome.error().message, Catch::Contains(message_part));
}

} // namespace drover::testing::builtin_jobs
