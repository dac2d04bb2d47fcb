// runtime/thread_cache: one thread per running body, threads reused after
// their body ends, parked threads end after their keep-alive.

#include "runtime/thread_cache.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>
#include <thread>

using namespace drover;
using namespace std::chrono_literals;

namespace {

/// A counter the test waits on, with a deadline.
class counter {
public:
  void add(int n = 1) {
    {
      std::lock_guard<std::mutex> guard{mx_};
      value_ += n;
    }
    cv_.notify_all();
  }
  bool wait_for_at_least(int n, std::chrono::milliseconds deadline = 10s) {
    std::unique_lock<std::mutex> lock{mx_};
    return cv_.wait_for(lock, deadline, [&] { return value_ >= n; });
  }
  int value() const {
    std::lock_guard<std::mutex> guard{mx_};
    return value_;
  }

private:
  mutable std::mutex mx_;
  std::condition_variable cv_;
  int value_ = 0;
};

} // namespace

TEST_CASE("a finished body's thread runs the next body") {
  thread_cache cache;
  counter done;
  std::mutex mx;
  std::set<std::thread::id> ids;
  auto body = [&] {
    {
      std::lock_guard<std::mutex> guard{mx};
      ids.insert(std::this_thread::get_id());
    }
    done.add();
  };
  for (int i = 1; i <= 20; ++i) {
    cache.post(body);
    REQUIRE(done.wait_for_at_least(i));
    // Wait until the thread is parked again, so the next post finds it.
    REQUIRE(cache.wait_for([](auto s) { return s.idle == 1; }, 10s));
  }
  CHECK(cache.current().started == 1);
  CHECK(ids.size() == 1);
  CHECK(ids.count(std::this_thread::get_id()) == 0);
}

TEST_CASE("a blocked body never delays another: each runs on its own thread") {
  thread_cache cache;
  constexpr int n = 32;
  counter running;
  counter release;
  for (int i = 0; i < n; ++i)
    cache.post([&] {
      running.add();
      // Every body waits until all n run at once: only possible if none
      // waits for a thread behind another.
      release.wait_for_at_least(1);
    });
  CHECK(running.wait_for_at_least(n));
  CHECK(cache.current().threads == n);
  release.add();
  REQUIRE(cache.wait_for([](auto s) { return s.idle == n; }, 10s));
  // The parked threads serve the next bodies; no new thread starts.
  counter second;
  for (int i = 0; i < n; ++i)
    cache.post([&] { second.add(); });
  CHECK(second.wait_for_at_least(n));
  CHECK(cache.current().started == n);
  // A body may still be inside second.add() (notifying) when the count
  // is reached; `second` must outlive it: wait until every thread parked.
  REQUIRE(cache.wait_for([](auto s) { return s.idle == n; }, 10s));
}

TEST_CASE("a parked thread ends after its keep-alive") {
  thread_cache cache{20ms};
  counter done;
  cache.post([&] { done.add(); });
  REQUIRE(done.wait_for_at_least(1));
  CHECK(cache.wait_for([](auto s) { return s.threads == 0; }, 10s));
  // A body posted afterwards gets a new thread.
  cache.post([&] { done.add(); });
  CHECK(done.wait_for_at_least(2));
  CHECK(cache.current().started == 2);
  // The body may still be inside done.add() (notifying) when the count is
  // reached; `done` must outlive it: wait until its thread ended too.
  REQUIRE(cache.wait_for([](auto s) { return s.threads == 0; }, 10s));
}

TEST_CASE("a body still running when the cache goes away finishes") {
  counter started;
  counter release;
  auto finished = std::make_shared<counter>();
  {
    thread_cache cache;
    cache.post([&started, &release, finished] {
      started.add();
      release.wait_for_at_least(1);
      finished->add();
    });
    REQUIRE(started.wait_for_at_least(1));
  } // the destructor does not wait for the body
  CHECK(finished->value() == 0);
  release.add();
  CHECK(finished->wait_for_at_least(1));
}
