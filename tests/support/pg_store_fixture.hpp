#pragma once

// Helpers of the PostgreSQL store tests (tests/actors/pg_store_*_test.cpp):
// a node's job system on a test database's store, a fenced store on its
// own, and bursts of requests with their answers in order.

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"
#include "support/direct_client.hpp"
#include "support/test_db.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

namespace drover::testing::pg_store_fixture {

using namespace std::chrono_literals;

inline std::shared_ptr<handler_registry> test_handlers() {
  auto r = std::make_shared<handler_registry>();

  handler_options fast;
  fast.retry.max_attempts = 3;
  fast.retry.backoff = {10, 100, 2.0, 0.0};
  REQUIRE_FALSE(register_builtin_handlers(*r));
  REQUIRE_FALSE(r->register_handler(
      "flaky",
      [](task_context& ctx) {
        if (ctx.attempt() == 1)
          return task_outcome::retryable("flaky", "first attempt fails");
        return task_outcome::success(R"({"attempt": 2})");
      },
      fast));
  REQUIRE_FALSE(r->register_handler(
      "fatal",
      [](task_context&) {
        return task_outcome::permanent("bad_input", "never works");
      },
      fast));
  return r;
}

/// A node's job system on the PostgreSQL store of `db`.
struct pg_node {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  supervisor_actor root;
  test::direct_client client;

  explicit pg_node(const std::string& url,
                   std::map<std::string, uint32_t> slots = {{"cpu", 2}},
                   size_t max_cached_jobs = pg_store_config{}.max_cached_jobs,
                   std::function<void(pg_store_config&)> tweak = {})
      : sys(real_config(cfg)), client(sys, handles, 30s) {
    job_system_config jc;
    jc.slots = std::move(slots);
    jc.handlers = test_handlers();
    pg_store_config pc;
    pc.conninfo = url;
    pc.max_cached_jobs = max_cached_jobs;
    if (tweak)
      tweak(pc);
    jc.make_store
        = [pc](caf::actor_system& s) { return spawn_pg_store(s, pc); };
    auto sup = spawn_supervisor(
        sys, {"node:pg", {}, {job_system_child(jc, handles)}});
    REQUIRE(sup);
    root = *sup;
  }

  ~pg_node() {
    caf::scoped_actor self{sys};
    self->monitor(root);
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
  }

  /// Submits, retrying while the store is still connecting.
  job_record submit(submit_request req) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    for (;;) {
      auto rec = client.submit(req);
      if (rec)
        return *rec;
      if (!is(rec.error(), errc::unavailable)
          || std::chrono::steady_clock::now() > deadline)
        FAIL(describe(rec.error()));
      caf::scoped_actor self{sys};
      self->receive(caf::after(20ms) >> [] {});
    }
  }
};

inline submit_request request(const std::string& type, std::string input = {}) {
  submit_request req;
  req.type = type;
  req.input = std::move(input);
  return req;
}

inline int64_t commits_of(test_db& db) {
  auto conn = db.connect();
  auto r = must(conn.exec("SELECT xact_commit FROM pg_stat_database "
                          "WHERE datname = current_database()"));
  return std::stoll(std::string{r.value(0, 0)});
}

/// A `submitted` event for the store, bypassing the queue's validation.
inline job_event submitted_event(const std::string& id,
                                 const std::string& key) {
  job_event ev;
  ev.job_id = id;
  ev.kind = event_kind::submitted;
  ev.at_ms = 1000;
  ev.spec.tenant = "t";
  ev.spec.type = "sleep";
  ev.spec.input = R"({"ms":0})";
  ev.spec.idempotency_key = key;
  return ev;
}

/// A PostgreSQL store on its own (no job system) that holds the leases of
/// every partition of `db` through one grant, as a coordinator's store does,
/// and an unfenced store on the same database for setting jobs up behind
/// its back (a tool's, or another coordinator's, writes).
struct fenced_store {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  pg::lease_grant grant;
  store_actor store;
  store_actor other;
  caf::scoped_actor self;
  std::atomic<int> deposed{0};
  std::mutex mx;
  std::string reason;
  /// Actors of the test (send_burst), stopped before the stores.
  std::vector<caf::actor> helpers;

  explicit fenced_store(test_db& db,
                        std::function<void(pg_store_config&)> tweak = {})
      : sys(real_config(cfg)), self(sys) {
    {
      auto s = db.session();
      auto attempt
          = must(pg::try_acquire_all(s, pg::this_process("store"), 600000ms));
      REQUIRE(attempt.grant);
      grant = *attempt.grant;
    }
    pg_store_config pc;
    pc.conninfo = db.url();
    other = spawn_pg_store(sys, pc);
    pc.fence = grant.fence();
    pc.on_deposed = [this](const std::string& why) {
      std::lock_guard<std::mutex> guard{mx};
      reason = why;
      ++deposed;
    };
    if (tweak)
      tweak(pc);
    store = spawn_pg_store(sys, pc);
  }

  ~fenced_store() {
    // Helpers first: a reply's timeout, pending until it fires, would keep
    // one alive (and the actor system waiting) for its whole 30 s.
    for (auto& h : helpers)
      self->send_exit(h, caf::exit_reason::kill);
    for (auto& s : {store, other}) {
      self->monitor(s);
      self->send_exit(s, caf::exit_reason::user_shutdown);
      self->receive([](caf::down_msg&) {});
    }
  }

  /// The epochs the grant holds `partitions` at.
  std::vector<int64_t> epochs_of(const std::vector<int32_t>& partitions) {
    std::vector<int64_t> out;
    for (auto p : partitions)
      out.push_back(grant.epochs.at(static_cast<size_t>(p)));
    return out;
  }

  /// Asks `to` and waits for the answer (30 s at most).
  template <class T, class... Ts>
  caf::expected<T> ask(const store_actor& to, Ts&&... xs) {
    caf::expected<T> out{make_error(errc::unavailable, "no answer")};
    self->request(to, 30s, std::forward<Ts>(xs)...)
        .receive([&](T& x) { out = std::move(x); },
                 [&](caf::error& err) { out = std::move(err); });
    return out;
  }

  caf::expected<ok_atom> own(const std::vector<int32_t>& partitions) {
    return ask<ok_atom>(store, partitions_atom::value, partitions,
                        epochs_of(partitions));
  }

  caf::expected<job_record> submit(const store_actor& to, const std::string& id,
                                   const std::string& key = {}) {
    return ask<job_record>(to, submit_atom::value, submitted_event(id, key));
  }

  caf::error cancel(const store_actor& to, const std::string& id) {
    job_event ev;
    ev.job_id = id;
    ev.kind = event_kind::cancelled;
    ev.at_ms = 1500;
    ev.reason = "test";
    auto r = ask<ok_atom>(to, append_atom::value, std::vector<job_event>{ev});
    return r ? caf::error{} : std::move(r.error());
  }
};

/// Answers to requests, in the order they arrived, by the label of the
/// request.
struct answer_log {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<std::pair<std::string, caf::error>> items;

  void add(const std::string& label, caf::error err) {
    std::lock_guard<std::mutex> guard{mx};
    items.emplace_back(label, std::move(err));
    cv.notify_all();
  }

  /// The first `n` answers; fails the test if they take over 30 s.
  std::vector<std::pair<std::string, caf::error>> wait_for(size_t n) {
    std::unique_lock<std::mutex> guard{mx};
    if (!cv.wait_for(guard, 30s, [&] { return items.size() >= n; }))
      FAIL("only " << items.size() << " of " << n << " answers in 30 s");
    return items;
  }

  /// Where `label` was answered; items.size() if it was not.
  static size_t
  position(const std::vector<std::pair<std::string, caf::error>>& xs,
           const std::string& label) {
    for (size_t i = 0; i < xs.size(); ++i)
      if (xs[i].first == label)
        return i;
    return xs.size();
  }
};

/// One request of a burst (see send_burst): sends it and records its
/// answer under `label`.
using burst_step = std::function<void(caf::event_based_actor*)>;

template <class T, class... Ts>
burst_step step(std::shared_ptr<answer_log> log, caf::actor to,
                std::string label, Ts... xs) {
  return [log, to, label, xs...](caf::event_based_actor* self) {
    self->request(to, 30s, xs...)
        .then([log, label](T&) { log->add(label, {}); },
              [log, label](caf::error& err) { log->add(label, err); });
  };
}

/// Sends every step's request at once, in order, from one actor: the store
/// receives them in that order before it answers any. The actor stays
/// until `fs` goes.
inline void send_burst(fenced_store& fs, std::vector<burst_step> steps) {
  fs.helpers.push_back(
      fs.sys.spawn([steps](caf::event_based_actor* self) -> caf::behavior {
        for (const auto& s : steps)
          s(self);
        return {[](ok_atom) {}};
      }));
}

inline std::string job_ids(test_db& db, const std::string& like) {
  auto conn = db.connect();
  auto r = must(conn.exec("SELECT coalesce(string_agg(job_id, ',' ORDER BY "
                          "job_id), '') FROM drover.jobs WHERE job_id LIKE $1",
                          pg::params{}.text(like)));
  return std::string{r.value(0, 0)};
}

} // namespace drover::testing::pg_store_fixture
