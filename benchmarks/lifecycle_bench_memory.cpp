// drover_bench_lifecycle's memory accounting: the global operator new and
// delete that count live heap bytes (malloc_usable_size), and the memory
// phase (bytes per queued job: a whole job system whose jobs have no worker
// of their class, then a memory store alone). main and the report are in
// lifecycle_bench.cpp.

#include "benchmarks/lifecycle_bench.hpp"

#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/submit.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <malloc.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <new>
#include <string>
#include <thread>

// -- heap accounting ----------------------------------------------------------

namespace drover::bench::lifecycle {

namespace {

/// Live bytes handed out by operator new (usable size of each block).
std::atomic<int64_t> g_heap_live{0};

} // namespace

/// Constant-initialized, so it is valid before any dynamic initializer; main
/// may clear it (before any thread starts) and it is never set again.
bool g_heap_count = true;

namespace {

inline void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (p != nullptr && g_heap_count)
    g_heap_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p)),
                          std::memory_order_relaxed);
  return p;
}

inline void* counted_aligned_alloc(std::size_t n, std::size_t align) {
  void* p = nullptr;
  if (align < sizeof(void*))
    align = sizeof(void*);
  if (posix_memalign(&p, align, n == 0 ? 1 : n) != 0)
    return nullptr;
  if (g_heap_count)
    g_heap_live.fetch_add(static_cast<int64_t>(malloc_usable_size(p)),
                          std::memory_order_relaxed);
  return p;
}

inline void counted_free(void* p) noexcept {
  if (p == nullptr)
    return;
  if (g_heap_count)
    g_heap_live.fetch_sub(static_cast<int64_t>(malloc_usable_size(p)),
                          std::memory_order_relaxed);
  std::free(p);
}

} // namespace

int64_t heap_live() {
  return g_heap_live.load(std::memory_order_relaxed);
}

} // namespace drover::bench::lifecycle

using namespace drover::bench::lifecycle;

void* operator new(std::size_t n) {
  if (auto p = counted_alloc(n))
    return p;
  throw std::bad_alloc{};
}
void* operator new[](std::size_t n) {
  if (auto p = counted_alloc(n))
    return p;
  throw std::bad_alloc{};
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  return counted_alloc(n);
}
void* operator new(std::size_t n, std::align_val_t a) {
  if (auto p = counted_aligned_alloc(n, static_cast<std::size_t>(a)))
    return p;
  throw std::bad_alloc{};
}
void* operator new[](std::size_t n, std::align_val_t a) {
  if (auto p = counted_aligned_alloc(n, static_cast<std::size_t>(a)))
    return p;
  throw std::bad_alloc{};
}
void* operator new(std::size_t n, std::align_val_t a,
                   const std::nothrow_t&) noexcept {
  return counted_aligned_alloc(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a,
                     const std::nothrow_t&) noexcept {
  return counted_aligned_alloc(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept {
  counted_free(p);
}
void operator delete[](void* p) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  counted_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept {
  counted_free(p);
}
void operator delete(void* p, std::align_val_t,
                     const std::nothrow_t&) noexcept {
  counted_free(p);
}
void operator delete[](void* p, std::align_val_t,
                       const std::nothrow_t&) noexcept {
  counted_free(p);
}

using namespace std::chrono_literals;

namespace drover::bench::lifecycle {

// -- memory
// --------------------------------------------------------------------------

namespace {

int64_t rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  int64_t size = 0;
  int64_t resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

void settle() {
  std::this_thread::sleep_for(100ms);
}

} // namespace

memory_result drover_memory(caf::actor_system& sys, const options& opt) {
  memory_result res;
  auto n = opt.mem_jobs;
  auto handlers = make_handlers();
  // 1. The whole job system; the jobs' class has no workers. First, so
  //    that the RSS growth is not hidden by reuse of freed memory.
  {
    auto run = start_job_system(sys, {{"cpu", 1}}, {});
    auto queue = run.handles->queue();
    settle();
    auto heap0 = heap_live();
    auto rss0 = rss_bytes();
    auto first_error = std::make_shared<std::string>();
    auto r = run_windowed(
        sys, n, opt.window,
        submit_issuer(queue, noop_request("parked"), first_error));
    if (r.errors > 0)
      std::cerr << "job system: " << r.errors
                << " submissions failed, first: " << *first_error << std::endl;
    settle();
    res.system_bytes
        = static_cast<double>(heap_live() - heap0) / static_cast<double>(n);
    res.system_rss
        = static_cast<double>(rss_bytes() - rss0) / static_cast<double>(n);
    if (opt.mem_wait) {
      // Requests with a timeout (the queue's store requests: 30 s) keep an
      // entry in CAF's actor clock until the timeout would fire.
      std::this_thread::sleep_for(31s);
      res.system_bytes_late
          = static_cast<double>(heap_live() - heap0) / static_cast<double>(n);
    }
    caf::scoped_actor self{sys};
    if (auto s = stats(self, queue))
      res.queued = s->depth[0] + s->depth[1] + s->depth[2];
    stop_job_system(sys, run);
  }
  // 2. A memory store alone, fed `submitted` events like the queue's.
  {
    auto store = spawn_memory_store(sys);
    settle();
    auto heap0 = heap_live();
    auto ids = std::make_shared<job_id_generator>(42);
    auto req = noop_request("parked");
    auto first_error = std::make_shared<std::string>();
    auto r = run_windowed(
        sys, n, opt.window,
        [store, ids, req, handlers,
         first_error](caf::event_based_actor* self, uint64_t,
                      std::function<void(bool)> done) {
          auto now = system_clock_ms();
          job_event ev;
          ev.job_id = ids->next(now, 0);
          ev.kind = event_kind::submitted;
          ev.at_ms = now;
          ev.spec = *prepare_spec(req, *handlers, submit_limits{}, now);
          self->request(store, caf::infinite, submit_atom::value, std::move(ev))
              .then([done](job_record&) { done(true); },
                    [done, first_error](caf::error& err) {
                      if (first_error->empty())
                        *first_error = describe(err);
                      done(false);
                    });
        });
    if (r.errors > 0)
      std::cerr << "memory store: " << r.errors
                << " submissions failed, first: " << *first_error << std::endl;
    settle();
    res.store_bytes
        = static_cast<double>(heap_live() - heap0) / static_cast<double>(n);
    caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
    settle();
  }
  return res;
}

} // namespace drover::bench::lifecycle
