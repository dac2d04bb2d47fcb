// drover_bench_lifecycle's job system runs: a job system with no-op
// handlers on the memory store (start, stop, stats), the throughput run
// (preload N jobs with the first attempts held back, then drain), submits
// through the client API in process, and the one-at-a-time latency run.
// main and the report are in lifecycle_bench.cpp.

#include "benchmarks/lifecycle_bench.hpp"

#include "gateway/local_client.hpp"

#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/submit.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace drover::bench::lifecycle {

// -- Drover
// ------------------------------------------------------------------------

const char* to_string(exec_mode m) {
  return m == exec_mode::thread ? "thread per attempt" : "inline (analysis)";
}

namespace {

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

} // namespace

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

submit_request noop_request(const std::string& type) {
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

throughput_result drover_throughput(caf::actor_system& sys, const options& opt,
                                    exec_mode mode, bool wait_late) {
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

} // namespace drover::bench::lifecycle
