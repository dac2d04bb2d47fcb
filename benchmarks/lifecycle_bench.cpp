// drover_bench_lifecycle: the job lifecycle on one node, measured against
// CAF's own message rates in the same run (a benchmark, not a test; the
// results and their analysis are in docs/benchmarks.md).
//
//   drover_bench_lifecycle [--jobs N] [--slots N] [--threads N]
//                          [--latency-jobs N] [--runs N] [--window N]
//                          [--mem-jobs N] [--ref-msgs N] [--exec WHICH]
//                          [--only PART] [--no-heap-count]
//                          [--[no-]mem-wait] [--quick]
//
// Each measurement runs in an actor system of its own (real CAF scheduler,
// scheduler.max-threads = --threads):
//   1. bytes per queued job: global operator new/delete count live heap
//      bytes (malloc_usable_size); a whole job system whose jobs have no
//      worker of their class, then a memory store alone;
//   2. per run (--runs, default 3; interleaved so that background load hits
//      references and Drover alike): CAF reference rates (plain send,
//      request/response with a window of outstanding requests, with and
//      without a timeout, spawn + request, thread start), then Drover:
//      preload N no-op jobs through the queue's submit while the workers'
//      first attempts are held back, release them, measure the drain; once
//      with a thread per attempt, once with an inline executor (analysis);
//      and submits through the client API in process (local_client) for
//      comparison;
//   3. one-at-a-time latency: submit, wait for the final record, repeat;
//      plus plain request/responses from the same blocking client.
// The table shows medians over the runs and how busy other processes kept
// the machine meanwhile. Durability: the memory store (D0, nothing durable).

#include "actors/job_system.hpp"
#include "benchmarks/bench_support.hpp"
#include "gateway/local_client.hpp"

#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <new>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

// -- heap accounting ----------------------------------------------------------

namespace {

/// Live bytes handed out by operator new (usable size of each block).
std::atomic<int64_t> g_heap_live{0};
/// Constant-initialized, so it is valid before any dynamic initializer; main
/// may clear it (before any thread starts) and it is never set again.
bool g_heap_count = true;

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

int64_t heap_live() {
  return g_heap_live.load(std::memory_order_relaxed);
}

} // namespace

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

// -- the benchmark
// --------------------------------------------------------------

using namespace drover;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

using namespace drover::bench;

struct options {
  uint64_t jobs = 100000;
  uint32_t slots = 4;
  size_t threads = 2;
  uint64_t latency_jobs = 2000;
  uint64_t runs = 3;
  uint64_t window = 1000;
  uint64_t mem_jobs = 0; // 0 = jobs
  uint64_t ref_msgs = 1000000;
  uint64_t ref_spawns = 100000;
  uint64_t ref_threads = 20000;
  bool quick = false;
  /// Re-measure the queued jobs' heap 31 s later (default: not in --quick).
  int mem_wait = -1;
  /// Run only one part: all, memory, refs, throughput, latency.
  std::string only = "all";
  /// Executors of the throughput runs: both, thread, inline.
  std::string exec = "both";
};

int64_t rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  int64_t size = 0;
  int64_t resident = 0;
  in >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

/// How busy the machine was with *other* processes: system-wide busy CPU
/// time (/proc/stat) minus this process's (getrusage), per wall second.
class other_load {
public:
  other_load() {
    reset();
  }

  void reset() {
    t0_ = steady::now();
    busy0_ = system_busy_s();
    own0_ = own_cpu_s();
  }

  /// Average number of cores other processes kept busy since reset().
  double cores() const {
    auto wall = seconds_since(t0_);
    if (wall <= 0)
      return 0;
    auto others = (system_busy_s() - busy0_) - (own_cpu_s() - own0_);
    return std::max(0.0, others / wall);
  }

private:
  static double system_busy_s() {
    std::ifstream in{"/proc/stat"};
    std::string cpu;
    uint64_t user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0,
             softirq = 0, steal = 0;
    in >> cpu >> user >> nice >> sys >> idle >> iowait >> irq >> softirq
        >> steal;
    return static_cast<double>(user + nice + sys + irq + softirq + steal)
           / static_cast<double>(sysconf(_SC_CLK_TCK));
  }

  static double own_cpu_s() {
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    auto tv = [](const timeval& t) {
      return static_cast<double>(t.tv_sec)
             + static_cast<double>(t.tv_usec) / 1e6;
    };
    return tv(ru.ru_utime) + tv(ru.ru_stime);
  }

  steady::time_point t0_;
  double busy0_ = 0;
  double own0_ = 0;
};

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
                        caf::duration timeout = caf::infinite) {
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

// -- Drover
// ------------------------------------------------------------------------

enum class exec_mode {
  /// A thread per attempt: what the worker does without an executor.
  thread,
  /// The body runs on the worker's scheduler thread. Not a deployment
  /// option (handlers may block); it shows the actor pipeline's own cost.
  inline_
};

const char* to_string(exec_mode m) {
  return m == exec_mode::thread ? "thread per attempt" : "inline (analysis)";
}

/// Holds attempt bodies back until opened: lets the benchmark preload the
/// queue with every worker busy but no thread blocked.
struct gate {
  std::mutex mx;
  bool open = false;
  std::vector<std::function<void()>> parked;
  exec_mode mode = exec_mode::thread;

  void run(std::function<void()> body) {
    if (mode == exec_mode::thread)
      std::thread{std::move(body)}.detach();
    else
      body();
  }

  void submit(std::function<void()> body) {
    {
      std::lock_guard<std::mutex> guard{mx};
      if (!open) {
        parked.push_back(std::move(body));
        return;
      }
    }
    run(std::move(body));
  }

  void release() {
    std::vector<std::function<void()>> bodies;
    {
      std::lock_guard<std::mutex> guard{mx};
      open = true;
      bodies.swap(parked);
    }
    for (auto& b : bodies)
      run(std::move(b));
  }
};

/// Steady-clock ns at which the last attempt body started.
std::atomic<int64_t> g_last_start_ns{0};
/// Attempt bodies run (all types).
std::atomic<uint64_t> g_bodies_run{0};
std::mutex g_bodies_mx;
std::condition_variable g_bodies_cv;
uint64_t g_bodies_target = UINT64_MAX;

std::shared_ptr<handler_registry> make_handlers() {
  auto r = std::make_shared<handler_registry>();
  auto err = r->register_handler("noop", [](task_context&) {
    g_last_start_ns.store(now_ns(), std::memory_order_relaxed);
    auto n = g_bodies_run.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n >= g_bodies_target) {
      std::lock_guard<std::mutex> guard{g_bodies_mx};
      g_bodies_cv.notify_all();
    }
    return task_outcome::success();
  });
  // Jobs of a class no worker serves: they stay queued (memory phase).
  handler_options parked;
  parked.resource_class = "parked";
  if (!err)
    err = r->register_handler(
        "parked", [](task_context&) { return task_outcome::success(); },
        parked);
  if (err) {
    std::cerr << "cannot register handlers: " << describe(err) << std::endl;
    std::exit(2);
  }
  return r;
}

struct job_system_run {
  supervisor_actor root;
  std::shared_ptr<job_system_handles> handles;
};

/// Asks the queue for its stats; none on error.
caf::optional<queue_stats> stats(caf::scoped_actor& self,
                                 const queue_actor& queue) {
  caf::optional<queue_stats> result;
  self->request(queue, 5s, stats_atom::value)
      .receive([&](queue_stats& s) { result = s; }, [](caf::error&) {});
  return result;
}

job_system_run
start_job_system(caf::actor_system& sys, std::map<std::string, uint32_t> slots,
                 std::function<void(std::function<void()>)> executor) {
  job_system_config jc;
  jc.slots = slots;
  jc.handlers = make_handlers();
  jc.executor = std::move(executor);
  if (auto err = validate(jc)) {
    std::cerr << "bad job system config: " << describe(err) << std::endl;
    std::exit(2);
  }
  job_system_run run;
  run.handles = std::make_shared<job_system_handles>();
  supervisor_spec spec{"bench", {}, {job_system_child(jc, run.handles)}};
  auto sup = spawn_supervisor(sys, spec);
  if (!sup) {
    std::cerr << "cannot start the job system: " << describe(sup.error())
              << std::endl;
    std::exit(2);
  }
  run.root = *sup;
  // Ready = every worker announced itself to the queue.
  uint64_t expected = 0;
  for (auto& kv : slots)
    expected += kv.second;
  caf::scoped_actor self{sys};
  auto deadline = steady::now() + 10s;
  for (;;) {
    if (auto q = run.handles->queue())
      if (auto s = stats(self, q); s && s->idle_workers == expected)
        break;
    if (steady::now() > deadline) {
      std::cerr << "the job system did not become ready in 10 s" << std::endl;
      std::exit(3);
    }
    std::this_thread::sleep_for(1ms);
  }
  return run;
}

void stop_job_system(caf::actor_system& sys, job_system_run& run) {
  caf::scoped_actor self{sys};
  self->monitor(run.root);
  self->send_exit(run.root, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {},
                caf::after(60s) >>
                    [] {
                      std::cerr
                          << "WARNING: the job system did not stop in 60 s"
                          << std::endl;
                    });
}

submit_request noop_request(const std::string& type = "noop") {
  submit_request req;
  req.type = type;
  req.input = R"({"n":1})";
  return req;
}

issue_fn submit_issuer(queue_actor queue, submit_request req,
                       std::shared_ptr<std::string> first_error) {
  return [queue, req, first_error](caf::event_based_actor* self, uint64_t,
                                   std::function<void(bool)> done) {
    self->request(queue, caf::infinite, submit_atom::value, req)
        .then([done](job_record&) { done(true); },
              [done, first_error](caf::error& err) {
                if (first_error->empty())
                  *first_error = describe(err);
                done(false);
              });
  };
}

struct throughput_result {
  double submit_rate = 0; // acks/s
  double drain_rate = 0;  // jobs/s
  double retained_bytes_per_job = 0;
  /// The same 31 s later (CAF's request timeouts expired); -1 = not measured.
  double retained_late = -1;
  bool ok = true;
  std::string problem;
};

throughput_result drover_throughput(caf::actor_system& sys, const options& opt,
                                    exec_mode mode, bool wait_late = false) {
  throughput_result res;
  auto g = std::make_shared<gate>();
  g->mode = mode;
  auto run = start_job_system(
      sys, {{"cpu", opt.slots}},
      [g](std::function<void()> body) { g->submit(std::move(body)); });
  auto queue = run.handles->queue();
  {
    std::lock_guard<std::mutex> guard{g_bodies_mx};
    g_bodies_run = 0;
    g_bodies_target = opt.jobs;
  }
  auto heap0 = heap_live();
  auto first_error = std::make_shared<std::string>();
  auto sub = run_windowed(sys, opt.jobs, opt.window,
                          submit_issuer(queue, noop_request(), first_error));
  res.submit_rate = static_cast<double>(sub.ok) / sub.seconds;
  if (sub.errors > 0) {
    res.ok = false;
    res.problem = std::to_string(sub.errors)
                  + " submissions failed, first: " + *first_error;
  }
  // Drain: release the held-back first attempts; wait (event) until every
  // body ran, then poll the queue's `completed` counter for the tail.
  auto t0 = steady::now();
  g->release();
  {
    std::unique_lock<std::mutex> lock{g_bodies_mx};
    auto last = g_bodies_run.load();
    while (!g_bodies_cv.wait_for(lock, 10s,
                                 [&] { return g_bodies_run >= sub.ok; })) {
      auto now = g_bodies_run.load();
      if (now == last) {
        res.ok = false;
        res.problem = "HANG: no attempt ran for 10 s; " + std::to_string(now)
                      + " of " + std::to_string(sub.ok) + " ran";
        break;
      }
      last = now;
    }
  }
  caf::scoped_actor self{sys};
  queue_stats s;
  auto stall_deadline = steady::now() + 10s;
  uint64_t last_completed = 0;
  for (;;) {
    auto st = stats(self, queue);
    if (st) {
      s = *st;
      if (s.completed + s.failed + s.cancelled >= sub.ok)
        break;
      if (s.completed != last_completed) {
        last_completed = s.completed;
        stall_deadline = steady::now() + 10s;
      }
    }
    if (steady::now() > stall_deadline) {
      res.ok = false;
      res.problem += " HANG: completed " + std::to_string(s.completed) + " of "
                     + std::to_string(sub.ok) + " (failed "
                     + std::to_string(s.failed) + ", running "
                     + std::to_string(s.running) + ")";
      break;
    }
    std::this_thread::sleep_for(1ms);
  }
  auto drain_secs = seconds_since(t0);
  res.drain_rate = static_cast<double>(s.completed) / drain_secs;
  if (s.failed > 0 || s.cancelled > 0) {
    res.ok = false;
    res.problem += " failed " + std::to_string(s.failed) + ", cancelled "
                   + std::to_string(s.cancelled);
  }
  std::this_thread::sleep_for(50ms);
  res.retained_bytes_per_job = static_cast<double>(heap_live() - heap0)
                               / static_cast<double>(opt.jobs);
  if (wait_late) {
    std::this_thread::sleep_for(31s);
    res.retained_late = static_cast<double>(heap_live() - heap0)
                        / static_cast<double>(opt.jobs);
  }
  stop_job_system(sys, run);
  {
    std::lock_guard<std::mutex> guard{g_bodies_mx};
    g_bodies_target = UINT64_MAX;
  }
  return res;
}

/// The alternative submit path: the client API in process (gateway/
/// local_client.hpp: client door, key check, node API, a generated
/// idempotency key per submit), one client shared by `threads` threads,
/// each call waiting for its ack. Jobs of a class without workers, so only
/// the submit path runs. Acks per second.
double client_submit_rate(caf::actor_system& sys, uint64_t n,
                          uint64_t threads) {
  auto run = start_job_system(sys, {{"cpu", 1}}, {});
  auto req = noop_request("parked");
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> ok{0};
  auto client = local_client(sys, run.handles);
  if (!client) {
    std::cerr << "local_client: " << describe(client.error()) << std::endl;
    stop_job_system(sys, run);
    return 0;
  }
  auto t0 = steady::now();
  std::vector<std::thread> pool;
  for (uint64_t t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      while (next.fetch_add(1) < n)
        if ((*client)->submit(req))
          ++ok;
    });
  for (auto& th : pool)
    th.join();
  auto secs = seconds_since(t0);
  client->reset();
  stop_job_system(sys, run);
  return static_cast<double>(ok.load()) / secs;
}

struct latency_result {
  std::vector<double> ack_us, start_us, done_us;
  /// Reference: a blocking request/response to a local actor, same client.
  std::vector<double> caf_us;
  uint64_t failures = 0;
  std::string problem;
};

latency_result drover_latency(caf::actor_system& sys, const options& opt) {
  latency_result res;
  auto run = start_job_system(sys, {{"cpu", opt.slots}}, {});
  auto queue = run.handles->queue();
  auto publisher = run.handles->publisher();
  caf::scoped_actor self{sys};
  auto req = noop_request();
  for (uint64_t i = 0; i < opt.latency_jobs; ++i) {
    auto t0 = now_ns();
    std::string id;
    int64_t t_ack = 0;
    self->request(queue, 30s, submit_atom::value, req)
        .receive(
            [&](job_record& rec) {
              t_ack = now_ns();
              id = rec.job_id;
            },
            [&](caf::error& err) {
              if (res.problem.empty())
                res.problem = "submit: " + describe(err);
            });
    if (id.empty()) {
      ++res.failures;
      continue;
    }
    bool subscribed = false;
    self->request(publisher, 30s, subscribe_atom::value, id, caf::actor{self})
        .receive([&](ok_atom) { subscribed = true; },
                 [&](caf::error& err) {
                   if (res.problem.empty())
                     res.problem = "subscribe: " + describe(err);
                 });
    if (!subscribed) {
      ++res.failures;
      continue;
    }
    int64_t t_done = 0;
    bool waiting = true;
    while (waiting)
      self->receive(
          [&](final_atom, job_record& rec) {
            if (rec.job_id != id)
              return;
            t_done = now_ns();
            waiting = false;
            if (rec.status != job_status::completed) {
              ++res.failures;
              if (res.problem.empty())
                res.problem = "job ended "
                              + std::to_string(static_cast<int>(rec.status));
            }
          },
          [&](progress_atom, progress_update&) {},
          caf::after(30s) >>
              [&] {
                waiting = false;
                ++res.failures;
                res.problem = "HANG: no final record for " + id + " in 30 s";
              });
    if (t_done == 0)
      continue;
    auto t_start = g_last_start_ns.load();
    res.ack_us.push_back(static_cast<double>(t_ack - t0) / 1e3);
    res.start_us.push_back(static_cast<double>(t_start - t0) / 1e3);
    res.done_us.push_back(static_cast<double>(t_done - t0) / 1e3);
  }
  stop_job_system(sys, run);
  // The reference: the same blocking client, a plain request/response.
  auto server = sys.spawn(
      []() -> caf::behavior { return {[](int32_t x) { return x; }}; });
  for (uint64_t i = 0; i < opt.latency_jobs; ++i) {
    auto t0 = now_ns();
    int64_t t1 = 0;
    self->request(server, 30s, static_cast<int32_t>(i))
        .receive([&](int32_t) { t1 = now_ns(); }, [](caf::error&) {});
    if (t1 != 0)
      res.caf_us.push_back(static_cast<double>(t1 - t0) / 1e3);
  }
  self->send_exit(server, caf::exit_reason::user_shutdown);
  return res;
}

// -- memory
// --------------------------------------------------------------------------

struct memory_result {
  double store_bytes = 0;        // memory store alone, per submitted job
  double system_bytes = 0;       // whole job system, per queued job
  double system_rss = 0;         // RSS growth per queued job (cross-check)
  double system_bytes_late = -1; // heap, 31 s later (after CAF's timeouts)
  uint64_t queued = 0;
};

void settle() {
  std::this_thread::sleep_for(100ms);
}

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

// -- main
// ---------------------------------------------------------------------------

void usage() {
  std::cout
      << "usage: drover_bench_lifecycle [options]\n"
         "  --jobs N          jobs preloaded per throughput run (100000)\n"
         "  --slots N         worker slots of class cpu (4)\n"
         "  --threads N       CAF scheduler threads, scheduler.max-threads "
         "(2)\n"
         "  --latency-jobs N  one-at-a-time jobs per latency run (2000)\n"
         "  --runs N          repetitions; the table shows medians (3)\n"
         "  --window N        outstanding requests of a driver (1000)\n"
         "  --mem-jobs N      jobs of the memory phase (= --jobs)\n"
         "  --ref-msgs N      messages of the CAF references (1000000)\n"
         "  --no-heap-count   no heap accounting (skips the memory phase)\n"
         "  --mem-wait / --no-mem-wait\n"
         "                    re-measure queued jobs' heap 31 s later (on;\n"
         "                    off with --quick)\n"
         "  --only PART       all, memory, refs, throughput, latency (all)\n"
         "  --exec WHICH      throughput runs: both, thread, inline (both)\n"
         "  --quick           small N everywhere: a smoke run\n";
}

bool parse(int argc, char** argv, options& opt) {
  auto num = [&](int& i) -> uint64_t {
    if (i + 1 >= argc)
      throw std::invalid_argument{std::string{argv[i]} + " needs a value"};
    return std::stoull(argv[++i]);
  };
  bool jobs_set = false, lat_set = false, ref_set = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--jobs") {
        opt.jobs = num(i);
        jobs_set = true;
      } else if (a == "--slots")
        opt.slots = static_cast<uint32_t>(num(i));
      else if (a == "--threads")
        opt.threads = num(i);
      else if (a == "--latency-jobs") {
        opt.latency_jobs = num(i);
        lat_set = true;
      } else if (a == "--runs")
        opt.runs = std::max<uint64_t>(1, num(i));
      else if (a == "--window")
        opt.window = std::max<uint64_t>(1, num(i));
      else if (a == "--mem-jobs")
        opt.mem_jobs = num(i);
      else if (a == "--ref-msgs") {
        opt.ref_msgs = num(i);
        ref_set = true;
      } else if (a == "--no-heap-count")
        g_heap_count = false;
      else if (a == "--quick")
        opt.quick = true;
      else if (a == "--mem-wait")
        opt.mem_wait = 1;
      else if (a == "--no-mem-wait")
        opt.mem_wait = 0;
      else if (a == "--exec") {
        if (i + 1 >= argc)
          throw std::invalid_argument{"--exec needs a value"};
        opt.exec = argv[++i];
        if (opt.exec != "both" && opt.exec != "thread" && opt.exec != "inline")
          throw std::invalid_argument{"unknown executor " + opt.exec};
      } else if (a == "--only") {
        if (i + 1 >= argc)
          throw std::invalid_argument{"--only needs a value"};
        opt.only = argv[++i];
        if (opt.only != "all" && opt.only != "memory" && opt.only != "refs"
            && opt.only != "throughput" && opt.only != "latency")
          throw std::invalid_argument{"unknown part " + opt.only};
      } else if (a == "--help" || a == "-h") {
        usage();
        std::exit(0);
      } else
        throw std::invalid_argument{"unknown option " + a};
    }
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    usage();
    return false;
  }
  if (opt.quick) {
    if (!jobs_set)
      opt.jobs = 5000;
    if (!lat_set)
      opt.latency_jobs = 200;
    if (!ref_set)
      opt.ref_msgs = 100000;
    opt.ref_spawns = 10000;
    opt.ref_threads = 2000;
  }
  if (opt.mem_jobs == 0)
    opt.mem_jobs = opt.jobs;
  if (opt.mem_wait < 0)
    opt.mem_wait = opt.quick ? 0 : 1;
  if (opt.jobs == 0 || opt.slots == 0 || opt.threads == 0) {
    std::cerr << "--jobs, --slots and --threads must be positive\n";
    return false;
  }
  return true;
}

std::string cpu_model() {
  std::ifstream in{"/proc/cpuinfo"};
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) {
      auto c = line.find(':');
      return c == std::string::npos ? line : line.substr(c + 2);
    }
  return "unknown";
}

/// Runs `f` in an actor system of its own: each measurement starts with an
/// empty actor clock (CAF 0.17 keeps every request timeout in it until the
/// deadline, answered or not) and leaves nothing behind for the next one.
template <class F>
auto in_fresh_system(const options& opt, F f) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", opt.threads);
  register_types(cfg);
  caf::actor_system sys{cfg};
  return f(sys);
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  if (!parse(argc, argv, opt))
    return 1;
  auto part
      = [&](const char* name) { return opt.only == "all" || opt.only == name; };
  std::cout << "# drover_bench_lifecycle\n\n"
            << "machine: " << std::thread::hardware_concurrency()
            << " hardware threads, " << cpu_model() << "\n"
            << "durability: D0 (memory store; nothing is durable)\n"
            << "settings: jobs=" << opt.jobs << " slots=" << opt.slots
            << " (class cpu) scheduler.max-threads=" << opt.threads
            << " latency-jobs=" << opt.latency_jobs << " runs=" << opt.runs
            << " window=" << opt.window << " mem-jobs=" << opt.mem_jobs
            << " ref-msgs=" << opt.ref_msgs << " only=" << opt.only
            << (g_heap_count ? "" : " (heap accounting off)") << "\n"
            << "submit driver: one event-based actor keeping " << opt.window
            << " submit requests to the queue outstanding\n"
            << "each measurement runs in a fresh actor system\n"
            << std::endl;

  // 1. Memory first, while the heap is fresh (RSS is then meaningful too).
  bool have_mem = g_heap_count && part("memory");
  memory_result mem;
  if (have_mem) {
    std::cout << "[memory] " << opt.mem_jobs << " queued jobs"
              << (opt.mem_wait ? " (then 31 s wait)" : "") << "..."
              << std::endl;
    mem = in_fresh_system(
        opt, [&](caf::actor_system& sys) { return drover_memory(sys, opt); });
  }

  // 2. Rates, interleaved per run so that background load hits all alike.
  bool have_refs = part("refs");
  bool have_tp = part("throughput");
  bool have_lat = part("latency");
  std::vector<double> send_rates, req_rates, req_to_rates, spawn_rates,
      thread_rates;
  std::vector<double> submit_t, drain_t, retained_t, submit_i, drain_i,
      client_rates;
  std::vector<std::string> problems;
  std::vector<double> run_loads;
  double retained_late = -1;
  for (uint64_t r = 0; (have_refs || have_tp) && r < opt.runs; ++r) {
    auto tag = "[run " + std::to_string(r + 1) + "/" + std::to_string(opt.runs)
               + "] ";
    other_load run_load;
    if (have_refs) {
      std::cout << tag << "CAF references..." << std::endl;
      send_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_send_rate(sys, opt.ref_msgs);
      }));
      req_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_request_rate(sys, opt.ref_msgs, opt.window);
      }));
      req_to_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_request_rate(sys, opt.ref_msgs, opt.window,
                                caf::duration{30s});
      }));
      spawn_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return caf_spawn_rate(sys, opt.ref_spawns, opt.window);
      }));
      thread_rates.push_back(thread_start_rate(opt.ref_threads));
      std::cout << "  send " << fmt(send_rates.back()) << "/s, request "
                << fmt(req_rates.back()) << "/s, request with timeout "
                << fmt(req_to_rates.back()) << "/s, spawn "
                << fmt(spawn_rates.back()) << "/s, thread "
                << fmt(thread_rates.back()) << "/s" << std::endl;
    }
    if (have_tp) {
      throughput_result t, i;
      if (opt.exec != "inline") {
        std::cout << tag << "Drover, " << to_string(exec_mode::thread) << "..."
                  << std::endl;
        // The first run also re-measures the retained heap 31 s later.
        auto late = g_heap_count && opt.mem_wait && r == 0;
        t = in_fresh_system(opt, [&](caf::actor_system& sys) {
          return drover_throughput(sys, opt, exec_mode::thread, late);
        });
        if (t.retained_late >= 0)
          retained_late = t.retained_late;
        if (!t.ok)
          problems.push_back(tag + "thread: " + t.problem);
        submit_t.push_back(t.submit_rate);
        drain_t.push_back(t.drain_rate);
        retained_t.push_back(t.retained_bytes_per_job);
      }
      client_rates.push_back(in_fresh_system(opt, [&](caf::actor_system& sys) {
        return client_submit_rate(sys, std::min<uint64_t>(opt.jobs, 20000), 4);
      }));
      if (opt.exec != "thread") {
        std::cout << tag << "Drover, " << to_string(exec_mode::inline_) << "..."
                  << std::endl;
        i = in_fresh_system(opt, [&](caf::actor_system& sys) {
          return drover_throughput(sys, opt, exec_mode::inline_);
        });
        if (!i.ok)
          problems.push_back(tag + "inline: " + i.problem);
        submit_i.push_back(i.submit_rate);
        drain_i.push_back(i.drain_rate);
      }
      std::cout << "  client API in process x4 threads: submit "
                << fmt(client_rates.back()) << "/s" << std::endl;
      std::cout << "  submit " << fmt(t.submit_rate) << "/s, drain "
                << fmt(t.drain_rate) << "/s; inline: submit "
                << fmt(i.submit_rate) << "/s, drain " << fmt(i.drain_rate)
                << "/s" << std::endl;
    }
    run_loads.push_back(run_load.cores());
    std::cout << "  other processes kept " << fmt(run_loads.back(), 2)
              << " cores busy during this run" << std::endl;
  }

  // 3. One-at-a-time latency.
  std::vector<double> ack50, ack99, start50, start99, done50, done99, caf50,
      caf99;
  uint64_t lat_failures = 0;
  other_load lat_load;
  for (uint64_t r = 0; have_lat && r < opt.runs; ++r) {
    std::cout << "[latency " << r + 1 << "/" << opt.runs << "] "
              << opt.latency_jobs << " jobs one at a time..." << std::endl;
    auto l = in_fresh_system(
        opt, [&](caf::actor_system& sys) { return drover_latency(sys, opt); });
    lat_failures += l.failures;
    if (!l.problem.empty())
      problems.push_back("latency run " + std::to_string(r + 1) + ": "
                         + l.problem);
    ack50.push_back(percentile(l.ack_us, 0.5));
    ack99.push_back(percentile(l.ack_us, 0.99));
    start50.push_back(percentile(l.start_us, 0.5));
    start99.push_back(percentile(l.start_us, 0.99));
    done50.push_back(percentile(l.done_us, 0.5));
    done99.push_back(percentile(l.done_us, 0.99));
    caf50.push_back(percentile(l.caf_us, 0.5));
    caf99.push_back(percentile(l.caf_us, 0.99));
  }

  auto lat_cores = lat_load.cores();
  auto range2 = [](const std::vector<double>& xs) {
    std::string out;
    for (auto x : xs)
      out += (out.empty() ? "" : ", ") + fmt(x, 2);
    return out;
  };
  auto range = [](const std::vector<double>& xs) {
    return fmt(*std::min_element(xs.begin(), xs.end())) + " – "
           + fmt(*std::max_element(xs.begin(), xs.end()));
  };
  auto row = [&](const std::string& name, const std::vector<double>& xs) {
    if (xs.empty())
      return;
    std::cout << "| " << name << " | " << fmt(median(xs)) << " | " << range(xs)
              << " |\n";
  };
  auto lat_row = [&](const std::string& name, const std::vector<double>& p50,
                     const std::vector<double>& p99) {
    std::cout << "| " << name << " | " << fmt(median(p50)) << " / "
              << fmt(median(p99)) << " | " << range(p50) << " / " << range(p99)
              << " |\n";
  };
  std::cout << "\n## Results (median of " << opt.runs
            << " runs; range = min – max over the runs)\n\n";
  if (!run_loads.empty())
    std::cout << "Other processes kept " << fmt(median(run_loads), 2) << " of "
              << std::thread::hardware_concurrency()
              << " cores busy during the rate runs (median; per run: "
              << range2(run_loads) << ")";
  if (have_lat)
    std::cout << (run_loads.empty() ? "Other processes kept " : "; ")
              << fmt(lat_cores, 2) << " cores busy during the latency runs";
  std::cout << ".\n\n"
            << "| figure | median | range |\n|---|---:|---:|\n";
  if (have_refs) {
    row("CAF local send, msg/s", send_rates);
    row("CAF request/response, " + std::to_string(opt.window)
            + " outstanding, no timeout, req/s",
        req_rates);
    row("CAF request/response, " + std::to_string(opt.window)
            + " outstanding, 30 s timeout, req/s",
        req_to_rates);
    row("CAF spawn + 1 request/response + quit, /s", spawn_rates);
    row("std::thread start (detached, empty body), /s", thread_rates);
  }
  if (have_tp) {
    row("Drover submit, acks/s (" + std::to_string(opt.jobs) + " preloaded)",
        submit_t);
    row("Drover drain, no-op jobs/s (" + std::to_string(opt.slots)
            + " slots, thread per attempt)",
        drain_t);
    row("Drover submit, acks/s, inline-executor run", submit_i);
    row("Drover submit via the client API in process, 4 threads, acks/s "
        "(alternative driver, "
            + std::to_string(std::min<uint64_t>(opt.jobs, 20000)) + " jobs)",
        client_rates);
    row("Drover drain, jobs/s, inline executor (analysis only)", drain_i);
    if (g_heap_count)
      row("heap retained per completed job 50 ms after the drain, B",
          retained_t);
    if (retained_late >= 0)
      row("heap retained per completed job 31 s after the drain (run 1), B",
          {retained_late});
  }
  if (have_lat) {
    lat_row("one at a time: CAF request/response (blocking client, "
            "reference), p50 / p99 µs",
            caf50, caf99);
    lat_row("one at a time: submit → ack, p50 / p99 µs", ack50, ack99);
    lat_row("one at a time: submit → handler start, p50 / p99 µs", start50,
            start99);
    lat_row("one at a time: submit → final record at client, p50 / p99 µs",
            done50, done99);
  }
  if (have_refs && have_tp && !drain_t.empty() && !drain_i.empty()) {
    auto req = median(req_rates);
    auto req_to = median(req_to_rates);
    auto send = median(send_rates);
    auto drain = median(drain_t);
    auto sub = median(submit_t);
    std::cout << "\n## Ratios (of medians)\n\n"
              << "| ratio | value |\n|---|---:|\n"
              << "| Drover drain / CAF request-response (no timeout) | "
              << fmt(drain / req, 4) << " (a job costs " << fmt(req / drain, 1)
              << " request-responses) |\n"
              << "| Drover drain / CAF request-response (30 s timeout) | "
              << fmt(drain / req_to, 4) << " (" << fmt(req_to / drain, 1)
              << ") |\n"
              << "| Drover drain / CAF local send | " << fmt(drain / send, 4)
              << " (a job costs " << fmt(send / drain, 1) << " sends) |\n"
              << "| Drover drain, inline executor / CAF request-response | "
              << fmt(median(drain_i) / req, 4) << " |\n"
              << "| Drover submit / CAF request-response (no timeout) | "
              << fmt(sub / req, 4) << " |\n"
              << "| Drover submit / CAF request-response (30 s timeout) | "
              << fmt(sub / req_to, 4) << " |\n";
  }
  if (have_mem) {
    std::cout << "\n## Memory per queued job (" << opt.mem_jobs
              << " jobs of a class without workers, input "
              << noop_request().input.size() << " B of JSON; heap = live "
              << "bytes of operator new, malloc_usable_size)\n\n"
              << "| figure | bytes |\n|---|---:|\n"
              << "| whole job system, heap, per queued job | "
              << fmt(mem.system_bytes) << " |\n";
    if (mem.system_bytes_late >= 0)
      std::cout << "| whole job system, heap, per queued job, 31 s later | "
                << fmt(mem.system_bytes_late) << " |\n";
    std::cout << "| memory store alone (record + `submitted` event + map "
                 "node), per job | "
              << fmt(mem.store_bytes) << " |\n"
              << "| the rest (whole − store alone) | "
              << fmt(mem.system_bytes - mem.store_bytes) << " |\n";
    if (mem.system_bytes_late >= 0)
      std::cout << "| the rest, 31 s later (= the queue's own share) | "
                << fmt(mem.system_bytes_late - mem.store_bytes) << " |\n";
    std::cout << "| whole job system, RSS growth, per queued job | "
              << fmt(mem.system_rss) << " |\n"
              << "| jobs the queue reported queued | " << mem.queued << " |\n"
              << "| sizeof(job_record) | " << sizeof(job_record) << " |\n"
              << "| sizeof(job_spec) | " << sizeof(job_spec) << " |\n"
              << "| sizeof(job_event) | " << sizeof(job_event) << " |\n"
              << "| sizeof(std::string) | " << sizeof(std::string) << " |\n";
  }
  if (lat_failures > 0)
    problems.push_back(std::to_string(lat_failures)
                       + " latency jobs failed or timed out");
  if (!problems.empty()) {
    std::cout << "\n## PROBLEMS\n\n";
    for (auto& p : problems)
      std::cout << "- " << p << "\n";
  }
  std::cout << std::flush;
  return problems.empty() ? 0 : 4;
}
