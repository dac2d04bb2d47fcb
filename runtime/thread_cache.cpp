#include "runtime/thread_cache.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace drover {

struct thread_cache::state {
  std::chrono::milliseconds keep_alive;
  mutable std::mutex mtx;
  std::condition_variable cv;
  /// Signalled whenever threads, idle or started change (wait_for).
  mutable std::condition_variable changed;
  // Bodies handed to parked threads, not yet picked up. post() claims a
  // parked thread (--idle) for each body it puts here.
  std::deque<std::function<void()>> handed;
  size_t threads = 0;
  size_t idle = 0;
  size_t started = 0;
  bool closing = false;
};

void thread_cache::park_loop(std::shared_ptr<state> st,
                             std::function<void()> body) {
  for (;;) {
    body();
    body = nullptr; // release what the body captured before parking
    std::unique_lock<std::mutex> guard{st->mtx};
    ++st->idle;
    st->changed.notify_all();
    bool got = st->cv.wait_for(guard, st->keep_alive, [&st] {
      return !st->handed.empty() || st->closing;
    });
    if (!got || st->handed.empty()) {
      // Timed out or closing: this thread ends. (A body handed to the
      // cache while closing is still picked up above.)
      --st->idle;
      --st->threads;
      st->changed.notify_all();
      return;
    }
    body = std::move(st->handed.front());
    st->handed.pop_front();
    // post() took this thread out of `idle` when it handed the body over.
  }
}

thread_cache::thread_cache(std::chrono::milliseconds keep_alive)
    : st_(std::make_shared<state>()) {
  st_->keep_alive = keep_alive;
}

thread_cache::~thread_cache() {
  std::lock_guard<std::mutex> guard{st_->mtx};
  st_->closing = true;
  st_->cv.notify_all();
}

void thread_cache::post(std::function<void()> body) {
  {
    std::lock_guard<std::mutex> guard{st_->mtx};
    if (st_->idle > 0) {
      --st_->idle;
      st_->handed.push_back(std::move(body));
      st_->cv.notify_one();
      st_->changed.notify_all();
      return;
    }
    ++st_->threads;
    ++st_->started;
    st_->changed.notify_all();
  }
  try {
    std::thread{park_loop, st_, std::move(body)}.detach();
  } catch (...) {
    std::lock_guard<std::mutex> guard{st_->mtx};
    --st_->threads;
    --st_->started;
    st_->changed.notify_all();
    throw;
  }
}

thread_cache::stats thread_cache::current() const {
  std::lock_guard<std::mutex> guard{st_->mtx};
  return {st_->threads, st_->idle, st_->started};
}

bool thread_cache::wait_for(const std::function<bool(const stats&)>& pred,
                            std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> guard{st_->mtx};
  return st_->changed.wait_for(guard, timeout, [&] {
    return pred(stats{st_->threads, st_->idle, st_->started});
  });
}

std::function<void(std::function<void()>)> thread_cache::shared_executor() {
  // Never destroyed: detached attempt threads may still post() while the
  // process exits.
  static auto* cache = new thread_cache{};
  return [](std::function<void()> body) { cache->post(std::move(body)); };
}

} // namespace drover
