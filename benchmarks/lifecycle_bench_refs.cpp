// drover_bench_lifecycle's CAF references: CAF's own message rates (plain
// send, request/response with a window of outstanding requests, spawn +
// request) and std::thread start, measured in the same run as the job
// lifecycle (lifecycle_bench.cpp).

#include "benchmarks/lifecycle_bench.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

using namespace std::chrono_literals;

namespace drover::bench::lifecycle {

// -- CAF references
// ---------------------------------------------------------------

/// Plain asynchronous sends between two local actors: a sender pushes
/// `n` messages in chunks of 1,000 (re-scheduling itself between chunks),
/// a receiver counts them. Messages per second, first send to last receipt.
double caf_send_rate(caf::actor_system& sys, uint64_t n) {
  std::promise<double> done;
  auto fut = done.get_future();
  auto t0 = std::make_shared<steady::time_point>();
  auto receiver = sys.spawn(
      [n, t0, &done](caf::event_based_actor* self) -> caf::behavior {
        auto count = std::make_shared<uint64_t>(0);
        return {[self, n, t0, count, &done](int32_t) {
          if (++*count == n) {
            done.set_value(seconds_since(*t0));
            self->quit();
          }
        }};
      });
  auto sender
      = sys.spawn([n, receiver](caf::event_based_actor* self) -> caf::behavior {
          auto left = std::make_shared<uint64_t>(n);
          return {[self, left, receiver](go_atom) {
            auto chunk = std::min<uint64_t>(*left, 1000);
            for (uint64_t i = 0; i < chunk; ++i)
              self->send(receiver, static_cast<int32_t>(i));
            *left -= chunk;
            if (*left > 0)
              self->send(self, go_atom::value);
            else
              self->quit();
          }};
        });
  *t0 = steady::now();
  caf::anon_send(sender, go_atom::value);
  auto secs = fut.get();
  return static_cast<double>(n) / secs;
}

/// Request/response between two local actors, `window` outstanding.
/// With `timeout` != infinite, every request also registers a timeout in
/// CAF's actor clock (as the queue's and job supervisors' store requests
/// do, with 30 s).
double caf_request_rate(caf::actor_system& sys, uint64_t n, uint64_t window,
                        caf::duration timeout) {
  auto server = sys.spawn(
      []() -> caf::behavior { return {[](int32_t x) { return x; }}; });
  auto r
      = run_windowed(sys, n, window,
                     [server, timeout](caf::event_based_actor* self, uint64_t i,
                                       std::function<void(bool)> done) {
                       self->request(server, timeout, static_cast<int32_t>(i))
                           .then([done](int32_t) { done(true); },
                                 [done](caf::error&) { done(false); });
                     });
  caf::anon_send_exit(server, caf::exit_reason::user_shutdown);
  return static_cast<double>(r.ok) / r.seconds;
}

/// Spawn an actor, one request/response with it, the actor quits: what a
/// job supervisor costs at the least. `window` outstanding.
double caf_spawn_rate(caf::actor_system& sys, uint64_t n, uint64_t window) {
  auto r = run_windowed(
      sys, n, window,
      [](caf::event_based_actor* self, uint64_t i,
         std::function<void(bool)> done) {
        auto a = self->spawn([](caf::event_based_actor* s) -> caf::behavior {
          return {[s](int32_t x) {
            s->quit();
            return x;
          }};
        });
        self->request(a, caf::infinite, static_cast<int32_t>(i))
            .then([done](int32_t) { done(true); },
                  [done](caf::error&) { done(false); });
      });
  return static_cast<double>(r.ok) / r.seconds;
}

/// std::thread start (detached, trivial body): what the default executor
/// pays per attempt. Threads per second, first start to last body.
double thread_start_rate(uint64_t n) {
  std::atomic<uint64_t> finished{0};
  std::mutex mx;
  std::condition_variable cv;
  auto t0 = steady::now();
  for (uint64_t i = 0; i < n; ++i)
    std::thread{[&] {
      if (finished.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> guard{mx};
        cv.notify_all();
      }
    }}.detach();
  std::unique_lock<std::mutex> lock{mx};
  cv.wait(lock, [&] { return finished.load() == n; });
  auto secs = seconds_since(t0);
  lock.unlock();
  std::this_thread::sleep_for(20ms); // let the last threads exit
  return static_cast<double>(n) / secs;
}

} // namespace drover::bench::lifecycle
