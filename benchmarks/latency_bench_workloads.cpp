// drover_bench_latency's workloads (latency_bench.cpp describes them and
// holds main): the no-op handler that records each probe's start, the
// open-loop generator, one job system per phase or rate (PostgreSQL or
// memory store), and the B3 and B2 drivers with their JSON lines.

#include "benchmarks/latency_bench.hpp"

#include "benchmarks/issue6_support.hpp"

#include <caf/send.hpp>

#include <atomic>
#include <future>
#include <memory>

using namespace std::chrono_literals;

namespace drover::bench::latency {

namespace {

using fire_atom = caf::atom_constant<caf::atom("b_fire")>;
using stop_atom = caf::atom_constant<caf::atom("b_stop")>;

// -- start times recorded by the handler
// --------------------------------------------

/// Probe i's handler start (steady ns); 0 until it started.
struct start_board {
  explicit start_board(size_t n) : n(n), at(new std::atomic<int64_t>[n]) {
    for (size_t i = 0; i < n; ++i)
      at[i].store(0);
  }
  size_t n;
  std::unique_ptr<std::atomic<int64_t>[]> at;
};

std::atomic<uint64_t> g_handled{0};

std::shared_ptr<handler_registry>
make_handlers(std::shared_ptr<start_board> board) {
  auto r = std::make_shared<handler_registry>();
  r->register_handler("noop", [board](task_context& ctx) {
    auto t = now_ns();
    // Probes carry {"i":N}; background jobs carry no input.
    auto& in = ctx.input();
    auto p = in.find("\"i\":");
    if (p != std::string::npos && board) {
      auto i = std::strtoull(in.c_str() + p + 4, nullptr, 10);
      if (i < board->n)
        board->at[i].store(t, std::memory_order_release);
    }
    g_handled.fetch_add(1, std::memory_order_relaxed);
    return task_outcome::success();
  });
  return r;
}

// -- the open-loop generator
// ----------------------------------------------------------

struct open_loop_result {
  uint64_t sent = 0;
  uint64_t acked = 0;
  uint64_t errors = 0;
  bool capped = false;            // hit max_outstanding
  double last_ack_s = 0;          // since t0
  std::vector<double> latency_us; // intended send -> ack, after warm-up
  std::string first_error;
};

struct open_loop_state {
  queue_actor queue;
  submit_request req;
  double rate = 0;
  steady::time_point t0;
  double warmup_s = 0;
  uint64_t max_outstanding = 0;
  uint64_t target = 0;
  bool stopping = false;
  open_loop_result res;
  std::promise<open_loop_result>* done = nullptr;
};

using open_loop_ptr = caf::stateful_actor<open_loop_state>*;

void maybe_finish(open_loop_ptr self) {
  auto& st = self->state;
  if (st.stopping && st.res.acked + st.res.errors == st.res.sent && st.done) {
    st.done->set_value(std::move(st.res));
    st.done = nullptr;
    self->quit();
  }
}

caf::behavior open_loop(open_loop_ptr self, queue_actor queue,
                        submit_request req, double rate, steady::time_point t0,
                        double warmup_s, uint64_t max_outstanding,
                        std::promise<open_loop_result>* done) {
  auto& st = self->state;
  st.queue = std::move(queue);
  st.req = std::move(req);
  st.rate = rate;
  st.t0 = t0;
  st.warmup_s = warmup_s;
  st.max_outstanding = max_outstanding;
  st.done = done;
  return {
      [self](fire_atom, uint64_t target) {
        auto& st = self->state;
        while (st.res.sent < target && !st.stopping) {
          if (st.res.sent - st.res.acked - st.res.errors
              >= st.max_outstanding) {
            st.res.capped = true;
            break;
          }
          auto i = st.res.sent++;
          auto intended = st.t0
                          + std::chrono::duration_cast<steady::duration>(
                              std::chrono::duration<double>(i / st.rate));
          auto count = std::chrono::duration<double>(intended - st.t0).count()
                       >= st.warmup_s;
          self->request(st.queue, caf::infinite, submit_atom::value, st.req)
              .then(
                  [self, intended, count](job_record&) {
                    auto& st = self->state;
                    ++st.res.acked;
                    auto now = steady::now();
                    if (count)
                      st.res.latency_us.push_back(
                          std::chrono::duration<double, std::micro>(now
                                                                    - intended)
                              .count());
                    st.res.last_ack_s
                        = std::chrono::duration<double>(now - st.t0).count();
                    maybe_finish(self);
                  },
                  [self](caf::error& err) {
                    auto& st = self->state;
                    ++st.res.errors;
                    if (st.res.first_error.empty())
                      st.res.first_error = describe(err);
                    maybe_finish(self);
                  });
        }
      },
      [self](stop_atom) {
        self->state.stopping = true;
        maybe_finish(self);
      },
  };
}

/// Runs an open-loop generator at `rate` for `seconds` (0 = until `stop`
/// is set) from a timer thread; returns once every submit was answered.
class open_loop_run {
public:
  open_loop_run(caf::actor_system& sys, queue_actor queue, submit_request req,
                double rate, double seconds, double warmup_s,
                uint64_t max_outstanding)
      : t0_(steady::now()) {
    fut_ = promise_.get_future();
    actor_ = sys.spawn(open_loop, std::move(queue), std::move(req), rate, t0_,
                       warmup_s, max_outstanding, &promise_);
    timer_ = std::thread{[this, rate, seconds] {
      uint64_t last = 0;
      auto total
          = seconds > 0 ? static_cast<uint64_t>(rate * seconds) : UINT64_MAX;
      auto next = t0_;
      while (!stop_.load() && last < total) {
        next += 100us;
        std::this_thread::sleep_until(next);
        auto elapsed
            = std::chrono::duration<double>(steady::now() - t0_).count();
        auto target
            = std::min<uint64_t>(total, static_cast<uint64_t>(elapsed * rate));
        if (target > last) {
          caf::anon_send(actor_, fire_atom::value, target);
          last = target;
        }
      }
      caf::anon_send(actor_, stop_atom::value);
    }};
  }

  void stop() {
    stop_ = true;
  }

  open_loop_result wait() {
    timer_.join();
    auto r = fut_.get();
    actor_ = nullptr;
    return r;
  }

  steady::time_point t0() const {
    return t0_;
  }

private:
  steady::time_point t0_;
  std::promise<open_loop_result> promise_;
  std::future<open_loop_result> fut_;
  caf::actor actor_;
  std::atomic<bool> stop_{false};
  std::thread timer_;
};

// -- one system
// ------------------------------------------------------------------------

struct bench_env {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::string db, db_url;
  running_system rs;
};

void open_env(bench_env& env, const options& opt, const std::string& tag,
              std::shared_ptr<start_board> board) {
  register_types(env.cfg);
  env.cfg.set("scheduler.max-threads", opt.threads);
  env.cfg.set("scheduler.policy", caf::atom_from_string(opt.scheduler));
  env.sys = std::make_unique<caf::actor_system>(env.cfg);
  if (opt.store == "postgres") {
    env.db = "drover_bench_lat_" + std::to_string(getpid()) + "_" + tag;
    env.db_url = create_db(opt.pg_url, env.db);
    require_d2(env.db_url);
  }
  env.rs = start_system(*env.sys, {{"cpu", opt.slots}}, make_handlers(board),
                        env.db_url);
  caf::scoped_actor self{*env.sys};
  wait_idle_workers(self, env.rs, opt.slots);
}

/// Stops the system; verifies in PostgreSQL that `expected` jobs completed.
bool close_env(bench_env& env, const options& opt, uint64_t expected,
               std::string& problem) {
  stop_system(*env.sys, env.rs);
  bool ok = true;
  if (!env.db_url.empty()) {
    auto n = sql_value(
        env.db_url,
        "SELECT count(*) FROM drover.jobs WHERE status = "
            + std::to_string(static_cast<int>(job_status::completed)));
    auto all = sql_value(env.db_url, "SELECT count(*) FROM drover.jobs");
    if (std::strtoull(n.c_str(), nullptr, 10) != expected
        || std::strtoull(all.c_str(), nullptr, 10) != expected) {
      ok = false;
      problem += " verification: " + n + " completed of " + all
                 + " jobs, expected " + std::to_string(expected);
    }
    drop_db(opt.pg_url, env.db);
  }
  env.sys.reset();
  return ok;
}

/// Waits until the queue counted `n` completions (false after 60 s stalled).
bool wait_completed(caf::actor_system& sys, const running_system& rs,
                    uint64_t n) {
  caf::scoped_actor self{sys};
  uint64_t last = 0;
  auto since = steady::now();
  for (;;) {
    auto s = get_stats(self, rs);
    auto done = s ? s->completed + s->failed + s->cancelled : last;
    if (done >= n)
      return s && s->failed == 0 && s->cancelled == 0;
    if (done != last) {
      last = done;
      since = steady::now();
    } else if (steady::now() - since > 60s) {
      return false;
    }
    std::this_thread::sleep_for(5ms);
  }
}

// -- B3
// ---------------------------------------------------------------------------------

struct probe_result {
  std::vector<double> start_us, ack_us;
  uint64_t lost = 0;
};

probe_result run_probes(caf::actor_system& sys, const running_system& rs,
                        start_board& board, uint64_t first, uint64_t n,
                        int64_t gap_ms) {
  probe_result out;
  caf::scoped_actor self{sys};
  auto queue = rs.handles->queue();
  for (uint64_t k = 0; k < n; ++k) {
    auto i = first + k;
    submit_request req;
    req.type = "noop";
    req.input = "{\"i\":" + std::to_string(i) + "}";
    auto t0 = now_ns();
    int64_t t_ack = 0;
    self->request(queue, caf::infinite, submit_atom::value, req)
        .receive([&](job_record&) { t_ack = now_ns(); },
                 [&](caf::error& err) {
                   std::cerr << "probe submit failed: " << describe(err)
                             << std::endl;
                 });
    auto deadline = steady::now() + 30s;
    int64_t t_start = 0;
    while ((t_start = board.at[i].load(std::memory_order_acquire)) == 0
           && steady::now() < deadline)
      std::this_thread::sleep_for(20us);
    if (t_start == 0 || t_ack == 0) {
      // Not started within 30 s: the system is overloaded (its backlog
      // grows); later probes would only wait behind it too.
      ++out.lost;
      std::cerr << "probe " << i << " did not start within 30 s: stopping"
                << std::endl;
      break;
    } else {
      out.start_us.push_back((t_start - t0) / 1e3);
      out.ack_us.push_back((t_ack - t0) / 1e3);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{gap_ms});
  }
  return out;
}

} // namespace

int run_b3(const options& opt) {
  auto board = std::make_shared<start_board>(2 * opt.probes);
  bench_env env;
  open_env(env, opt, "b3", board);
  auto durability = opt.store == "postgres" ? "D2" : "D0";
  bool ok = true;
  std::string problem;
  uint64_t expected = 0;
  auto report = [&](const char* phase, const probe_result& p, double bg_rate,
                    const open_loop_result* bg) {
    json_line j;
    j.str("system", "drover")
        .str("scheduler", opt.scheduler)
        .str("workload", "B3")
        .str("durability", durability)
        .str("store", opt.store)
        .str("phase", phase)
        .integer("slots", opt.slots)
        .integer("probes", static_cast<int64_t>(opt.probes))
        .integer("gap_ms", opt.gap_ms)
        .num("background_rate_per_s", bg_rate);
    if (bg)
      j.num("background_acked_per_s",
            bg->last_ack_s > 0 ? bg->acked / bg->last_ack_s : 0);
    add_latency(j, "submit_to_start", p.start_us);
    add_latency(j, "submit_to_ack", p.ack_us);
    j.integer("lost", static_cast<int64_t>(p.lost))
        .load()
        .boolean("ok", p.lost == 0);
    j.print();
  };
  // Idle.
  {
    // A few unmeasured probes first: connections, caches.
    run_probes(*env.sys, env.rs, *board, opt.probes, 5, opt.gap_ms);
    auto p = run_probes(*env.sys, env.rs, *board, 0, opt.probes, opt.gap_ms);
    expected += opt.probes + 5;
    ok = ok && p.lost == 0;
    report("idle", p, 0, nullptr);
  }
  // Half-loaded.
  if (opt.bg_rate > 0) {
    for (size_t i = 0; i < board->n; ++i)
      board->at[i].store(0);
    submit_request bg_req;
    bg_req.type = "noop";
    auto warm = opt.warmup_s >= 0 ? opt.warmup_s : 2;
    open_loop_run bg{*env.sys, env.rs.handles->queue(), bg_req, opt.bg_rate, 0,
                     0,        opt.max_outstanding};
    std::this_thread::sleep_for(std::chrono::duration<double>(warm));
    auto p = run_probes(*env.sys, env.rs, *board, 0, opt.probes, opt.gap_ms);
    bg.stop();
    auto bgr = bg.wait();
    expected += opt.probes + bgr.acked;
    ok = ok && p.lost == 0 && bgr.errors == 0;
    if (bgr.errors > 0)
      problem += " background submits failed: " + bgr.first_error;
    report("half_loaded", p, opt.bg_rate, &bgr);
  }
  if (!wait_completed(*env.sys, env.rs, expected)) {
    ok = false;
    problem += " not every job completed";
  }
  ok = close_env(env, opt, expected, problem) && ok;
  if (!ok)
    std::cerr << "PROBLEMS:" << problem << std::endl;
  return ok ? 0 : 4;
}

// -- B2
// ---------------------------------------------------------------------------------

int run_b2(const options& opt) {
  auto durability = opt.store == "postgres" ? "D2" : "D0";
  bool all_ok = true;
  double best_bounded = 0, best_keeping_up = 0;
  struct row {
    double rate, p99_us;
  };
  std::vector<row> rows;
  auto warm = opt.warmup_s >= 0 ? opt.warmup_s : 1;
  for (size_t k = 0; k < opt.rates.size(); ++k) {
    auto rate = opt.rates[k];
    bench_env env;
    open_env(env, opt, "b2_" + std::to_string(k), nullptr);
    caf::optional<queue_stats> s1;
    uint64_t c0 = 0;
    {
      caf::scoped_actor self{*env.sys};
      if (auto s0 = get_stats(self, env.rs))
        c0 = s0->completed;
    }
    submit_request req;
    req.type = "noop";
    open_loop_run gen{*env.sys, env.rs.handles->queue(), req, rate, opt.seconds,
                      warm,     opt.max_outstanding};
    auto load_start = loadavg();
    auto res = gen.wait();
    // Jobs completed while submitting (up to the last ack) and backlog then.
    {
      caf::scoped_actor self{*env.sys};
      s1 = get_stats(self, env.rs);
    }
    uint64_t completed_in_window = s1 ? s1->completed - c0 : 0;
    uint64_t backlog = s1 ? depth_of(*s1) + s1->running : 0;
    std::string problem;
    bool ok = res.errors == 0;
    if (!ok)
      problem
          = std::to_string(res.errors) + " submits failed: " + res.first_error;
    if (!wait_completed(*env.sys, env.rs, res.acked)) {
      ok = false;
      problem += " not every job completed";
    }
    ok = close_env(env, opt, res.acked, problem) && ok;
    all_ok = all_ok && ok;
    auto achieved = res.last_ack_s > 0 ? res.acked / res.last_ack_s : 0;
    auto p99 = percentile(res.latency_us, 0.99);
    bool saturated = res.capped || achieved < 0.9 * rate || p99 > 1e6;
    bool bounded = !saturated && p99 <= opt.p99_bound_ms * 1000;
    bool keeping_up = !saturated && completed_in_window >= 0.9 * res.acked;
    if (bounded)
      best_bounded = std::max(best_bounded, rate);
    if (bounded && keeping_up)
      best_keeping_up = std::max(best_keeping_up, rate);
    rows.push_back({rate, p99});
    json_line j;
    j.str("system", "drover")
        .str("scheduler", opt.scheduler)
        .str("workload", "B2")
        .str("durability", durability)
        .str("store", opt.store)
        .integer("slots", opt.slots)
        .num("offered_per_s", rate)
        .num("seconds", opt.seconds, 1)
        .integer("sent", static_cast<int64_t>(res.sent))
        .integer("acked", static_cast<int64_t>(res.acked))
        .num("acked_per_s", achieved);
    add_latency(j, "ack", res.latency_us);
    j.integer("completed_while_submitting",
              static_cast<int64_t>(completed_in_window))
        .integer("backlog_at_end", static_cast<int64_t>(backlog))
        .boolean("saturated", saturated)
        .boolean("p99_bounded", bounded)
        .boolean("execution_kept_up", keeping_up)
        .load("loadavg_at_start", load_start)
        .load("loadavg_at_end")
        .boolean("ok", ok);
    if (!ok)
      j.str("problem", problem);
    j.print();
    if (saturated)
      break;
  }
  // The p99 at the offered rate nearest half the highest bounded one.
  double half_p99 = -1, half_rate = 0;
  for (auto& r : rows)
    if (best_bounded > 0
        && (half_p99 < 0
            || std::abs(r.rate - best_bounded / 2)
                   < std::abs(half_rate - best_bounded / 2))) {
      half_rate = r.rate;
      half_p99 = r.p99_us;
    }
  json_line j;
  j.boolean("summary", true)
      .str("system", "drover")
      .str("scheduler", opt.scheduler)
      .str("workload", "B2")
      .str("durability", durability)
      .integer("slots", opt.slots)
      .num("p99_bound_ms", opt.p99_bound_ms)
      .num("max_rate_p99_bounded", best_bounded)
      .num("max_rate_p99_bounded_and_kept_up", best_keeping_up)
      .num("half_rate", half_rate)
      .num("ack_p99_us_at_half_rate", half_p99)
      .load();
  j.print();
  return all_ok ? 0 : 4;
}

} // namespace drover::bench::latency
