// Runs attempt bodies on reused threads.
//
// A job attempt runs on a thread of its own (handlers block, sleep, wait
// for child processes). Starting and ending a thread per attempt cost a
// quarter of the process's CPU in the D2 drain profile (docs/benchmarks.md).
// A thread_cache keeps finished threads parked for a while and hands them
// the next body instead: still one thread per running body -- post() never
// queues a body behind another, so a stuck handler never delays a
// different job -- but no clone/mmap/munmap per attempt.

#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>

namespace drover {

class thread_cache {
public:
  struct stats {
    /// Threads alive: running a body or parked.
    size_t threads = 0;
    /// Parked threads waiting for a body.
    size_t idle = 0;
    /// Threads started since construction.
    size_t started = 0;
  };

  /// A parked thread ends after `keep_alive` without work.
  explicit thread_cache(std::chrono::milliseconds keep_alive
                        = std::chrono::seconds{30});

  /// Wakes the parked threads so they end; running bodies finish on their
  /// own threads (which then end). Never blocks on a running body.
  ~thread_cache();

  thread_cache(const thread_cache&) = delete;
  thread_cache& operator=(const thread_cache&) = delete;

  /// Runs `body` now on a parked thread, or on a new one when none is
  /// parked. Throws std::system_error if no thread can be started.
  void post(std::function<void()> body);

  stats current() const;

  /// Waits until `pred(current())` holds or `timeout` passed; returns
  /// whether it holds. Woken by every change of the counters (a thread
  /// starting, parking, taking a body or ending), never by polling.
  bool wait_for(const std::function<bool(const stats&)>& pred,
                std::chrono::milliseconds timeout) const;

  /// An executor for job_system_config / worker_config that posts to a
  /// process-wide cache.
  static std::function<void(std::function<void()>)> shared_executor();

private:
  struct state;
  /// A cached thread's life: runs `body`, parks, runs what it is handed.
  static void park_loop(std::shared_ptr<state> st, std::function<void()> body);
  std::shared_ptr<state> st_;
};

} // namespace drover
