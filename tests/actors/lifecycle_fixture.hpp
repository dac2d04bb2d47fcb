#pragma once

// The in-process job system of the lifecycle tests: CAF's test coordinator
// runs every actor on the test thread, the actor clock only moves when the
// test advances it, and handler bodies run when the test says so (a manual
// executor instead of a thread per attempt). Shared by the *_test.cpp files
// in tests/actors.

#include "actors/job_system.hpp"
#include "actors/worker.hpp"

#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <deque>
#include <map>

using namespace drover;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

using drover::testing::stop_actors;
using drover::testing::testing_config;

namespace drover::testing::lifecycle {

constexpr int64_t epoch_ms = 1'800'000'000'000;

/// Attempt bodies, run by the test (in order) on the test thread.
struct manual_executor {
  std::deque<std::function<void()>> bodies;
};

/// What the test handlers did, for assertions.
struct journal {
  std::vector<std::string> ran; // job input of each attempt, in order
  std::map<std::string, std::string> seen_checkpoint;
  std::vector<std::string> progress_errors;
  int flaky_failures_left = 0;
  bool fail_permanently = true;
};

inline std::shared_ptr<handler_registry>
make_handlers(std::shared_ptr<journal> j) {
  auto r = std::make_shared<handler_registry>();
  handler_options fast;
  fast.retry.max_attempts = 3;
  fast.retry.backoff = {1000, 60000, 2.0, 0.0}; // exact delays: 1s, 2s, 4s
  fast.cancel_grace = 500ms;
  REQUIRE_FALSE(r->register_handler(
      "noop",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        return task_outcome::success(R"({"ok": true})");
      },
      fast));
  REQUIRE_FALSE(r->register_handler(
      "flaky",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        if (j->flaky_failures_left > 0) {
          --j->flaky_failures_left;
          return task_outcome::retryable("flaky", "try again");
        }
        return task_outcome::success();
      },
      fast));
  REQUIRE_FALSE(r->register_handler(
      "fatal",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        if (j->fail_permanently)
          return task_outcome::permanent("bad_input", "cannot work with this");
        return task_outcome::success();
      },
      fast));
  REQUIRE_FALSE(r->register_handler(
      "thrower",
      [j](task_context& ctx) -> task_outcome {
        j->ran.push_back(ctx.input());
        throw std::runtime_error("handler blew up");
      },
      fast));
  // Waits "forever" unless cancelled: the body returns cancelled if the
  // cancel flag is set when the test runs it, success otherwise.
  REQUIRE_FALSE(r->register_handler(
      "blocker",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        return ctx.cancelled() ? task_outcome::cancelled()
                               : task_outcome::success();
      },
      fast));
  // Stages and checkpoints: attempt 1 does two stages, checkpoints, fails;
  // later attempts resume from the checkpoint.
  REQUIRE_FALSE(r->register_handler(
      "staged",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        j->seen_checkpoint[std::to_string(ctx.attempt())]
            = ctx.last_checkpoint();
        REQUIRE_FALSE(ctx.declare_stages({"fetch", "render", "upload"}));
        if (ctx.last_checkpoint().empty()) {
          REQUIRE_FALSE(ctx.progress(10, "fetch"));
          REQUIRE_FALSE(ctx.progress(50, "render"));
          REQUIRE_FALSE(ctx.checkpoint("rendered"));
          if (auto err = ctx.progress(30, "render")) // backwards: refused
            j->progress_errors.push_back(describe(err));
          if (auto err = ctx.progress(101))
            j->progress_errors.push_back(describe(err));
          return task_outcome::retryable("upload_failed", "network");
        }
        REQUIRE_FALSE(ctx.progress(60, "upload"));
        REQUIRE_FALSE(ctx.progress(100, "upload"));
        return task_outcome::success(R"({"resumed_from": ")"
                                     + ctx.last_checkpoint() + "\"}");
      },
      fast));
  handler_options gpu = fast;
  gpu.resource_class = "gpu";
  REQUIRE_FALSE(r->register_handler(
      "render3d",
      [j](task_context& ctx) {
        j->ran.push_back(ctx.input());
        return task_outcome::success();
      },
      gpu));
  // Run only by worker nodes (a coordinator's --remote-job-types): local
  // workers never take it.
  REQUIRE_FALSE(r->declare_remote("remote_only"));
  return r;
}

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  std::shared_ptr<journal> j = std::make_shared<journal>();
  std::shared_ptr<manual_executor> exec = std::make_shared<manual_executor>();
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  /// Every worker incarnation, in start order.
  std::vector<std::pair<std::string, local_worker_actor>> workers;
  supervisor_actor root;

  explicit fixture(std::map<std::string, uint32_t> slots = {{"cpu", 1}},
                   milliseconds aging = 10s,
                   std::function<void(queue_options&)> tweak = {})
      : sys(testing_config(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys, true) {
    job_system_config jc;
    jc.slots = std::move(slots);
    jc.handlers = make_handlers(j);
    jc.queue.aging_interval = aging;
    jc.queue.seed = 7;
    jc.queue.progress_persist_interval = 1s;
    if (tweak)
      tweak(jc.queue);
    auto* sys_ptr = &sys;
    // Rate limiters and breakers run on the actor clock too.
    jc.queue.flow_clock_ms = [sys_ptr] {
      return std::chrono::duration_cast<milliseconds>(
                 sys_ptr->clock().now().time_since_epoch())
          .count();
    };
    jc.queue.clock_ms = [sys_ptr] {
      return epoch_ms
             + std::chrono::duration_cast<milliseconds>(
                   sys_ptr->clock().now().time_since_epoch())
                   .count();
    };
    jc.progress.coalesce_interval = 100ms;
    jc.executor = [e = exec](std::function<void()> body) {
      e->bodies.push_back(std::move(body));
    };
    jc.flags.seed = 3;
    jc.on_worker_started
        = [this](const std::string& id, const local_worker_actor& w) {
            workers.emplace_back(id, w);
          };
    supervisor_spec spec{"node:test", {}, {job_system_child(jc, handles)}};
    auto sup = spawn_supervisor(sys, spec);
    REQUIRE(sup);
    root = *sup;
    run();
  }

  ~fixture() {
    self->send_exit(root, caf::exit_reason::kill);
    run();
  }

  void run() {
    sched.run();
  }

  void advance(milliseconds d) {
    sched.advance_time(d);
    run();
  }

  int64_t now() {
    return epoch_ms
           + std::chrono::duration_cast<milliseconds>(
                 sys.clock().now().time_since_epoch())
                 .count();
  }

  /// Runs the oldest pending attempt body; false if none is pending.
  bool run_body() {
    if (exec->bodies.empty())
      return false;
    auto body = std::move(exec->bodies.front());
    exec->bodies.pop_front();
    body();
    run();
    return true;
  }

  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& dest, Ts&&... xs) {
    self->send(dest, std::forward<Ts>(xs)...);
    run();
    caf::expected<T> result{make_error(errc::unavailable, "no answer")};
    self->receive([&](T& x) { result = std::move(x); },
                  [&](caf::error& err) { result = std::move(err); },
                  caf::after(0s) >> [] {});
    return result;
  }

  job_record submit(submit_request req) {
    auto rec = ask<job_record>(handles->queue(), submit_atom::value, req);
    INFO((rec ? "" : describe(rec.error())));
    REQUIRE(rec);
    return *rec;
  }

  job_record submit(const std::string& type, const std::string& input = "",
                    int prio = 1) {
    submit_request req;
    req.type = type;
    req.input = input;
    req.priority = prio;
    return submit(std::move(req));
  }

  job_record get(const std::string& id) {
    auto rec = ask<job_record>(handles->store(), get_atom::value, id);
    REQUIRE(rec);
    return *rec;
  }

  std::vector<event_kind> kinds(const std::string& id) {
    auto evs
        = ask<std::vector<job_event>>(handles->store(), events_atom::value, id);
    REQUIRE(evs);
    std::vector<event_kind> result;
    for (auto& ev : *evs)
      result.push_back(ev.kind);
    return result;
  }

  std::vector<job_event> events(const std::string& id) {
    auto evs
        = ask<std::vector<job_event>>(handles->store(), events_atom::value, id);
    REQUIRE(evs);
    return *evs;
  }

  queue_stats stats() {
    auto s = ask<queue_stats>(handles->queue(), stats_atom::value);
    REQUIRE(s);
    return *s;
  }

  caf::error cancel(const std::string& id) {
    auto r = ask<ok_atom>(handles->queue(), cancel_atom::value, id);
    return r ? caf::error{} : r.error();
  }

  /// Everything the test's scoped actor received as a subscriber.
  std::vector<caf::message> inbox() {
    std::vector<caf::message> result;
    bool more = true;
    while (more)
      self->receive(
          [&](progress_atom, progress_update& u) {
            result.push_back(caf::make_message(progress_atom::value, u));
          },
          [&](final_atom, job_record& r) {
            result.push_back(caf::make_message(final_atom::value, r));
          },
          caf::after(0s) >> [&] { more = false; });
    return result;
  }
};

using ek = event_kind;

} // namespace drover::testing::lifecycle
