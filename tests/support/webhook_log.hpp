#pragma once

// What a webhook dispatcher recorded (webhook_dispatcher_config::on_recorded),
// for the test thread to wait on.

#include "runtime/model.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace drover::testing {

struct recorded_log {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<job_event> events;

  /// Waits until `n` events were recorded or `patience` ran out; returns
  /// what was recorded.
  std::vector<job_event> wait_for(size_t n,
                                  std::chrono::milliseconds patience) {
    std::unique_lock<std::mutex> guard{mx};
    cv.wait_for(guard, patience, [&] { return events.size() >= n; });
    return events;
  }

  /// The callback for on_recorded; keeps `log` alive.
  static std::function<void(const job_event&)>
  recorder(std::shared_ptr<recorded_log> log) {
    return [log = std::move(log)](const job_event& ev) {
      {
        std::lock_guard<std::mutex> guard{log->mx};
        log->events.push_back(ev);
      }
      log->cv.notify_all();
    };
  }
};

} // namespace drover::testing
