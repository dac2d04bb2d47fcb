// The fixture of the queue tests whose partitions come and go
// (tests/actors/partitions_test.cpp, adoption_test.cpp): a queue over a
// memory store on CAF's deterministic test coordinator, stand-ins for a
// worker node's slots, and a store proxy that fails a chosen recovery read.

#pragma once

#include "actors/detail/queue_state.hpp"
#include "actors/progress_publisher.hpp"
#include "actors/queue.hpp"
#include "actors/store.hpp"
#include "actors/worker.hpp"
#include "runtime/circuit_breaker.hpp"
#include "runtime/errors.hpp"
#include "runtime/partition.hpp"
#include "runtime/task.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <deque>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <tuple>

namespace drover::testing::partitions {

/// A stand-in for a worker node's slot: takes what a job supervisor sends
/// a worker and does nothing with it.
inline worker_actor spawn_idle_slot(caf::actor_system& sys) {
  return sys.spawn([]() -> worker_actor::behavior_type {
    return {[](run_atom, lease&, job_supervisor_actor&) {},
            [](cancel_atom, std::string&, uint32_t) {},
            [](abandon_atom, std::string&, uint32_t) {},
            [](handover_atom, std::string&, uint32_t) {}};
  });
}

inline constexpr int64_t epoch_ms = 1'800'000'000'000;

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys{drover::testing::testing_config(cfg)};
  caf::scheduler::test_coordinator& sched{
      dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())};
  caf::scoped_actor self{sys, true};
  std::shared_ptr<handler_registry> handlers
      = std::make_shared<handler_registry>();
  store_actor store = spawn_memory_store(sys);
  queue_actor queue;
  /// The queue's clock (Unix ms), moved on with the scheduler's.
  std::shared_ptr<int64_t> clock = std::make_shared<int64_t>(epoch_ms);
  /// A step of the wall clock (ms) that the monotonic clock does not take.
  std::shared_ptr<int64_t> wall_step = std::make_shared<int64_t>(0);

  /// `adopt`: the adoption grace and the wait for a partition not owned
  /// (queue_options::adopt_grace, adopt_wait).
  explicit fixture(std::chrono::milliseconds handover_grace = {},
                   std::chrono::milliseconds adopt = {}) {
    REQUIRE_FALSE(handlers->register_handler(
        "noop", [](task_context&) { return task_outcome::success(); }));
    queue_options qo;
    qo.handover_grace = handover_grace;
    qo.adopt_grace = adopt;
    qo.adopt_wait = adopt;
    qo.clock_ms = [c = clock, w = wall_step] { return *c + *w; };
    qo.flow_clock_ms = [c = clock] { return *c; }; // adoption graces
    qo.seed = 5;
    qo.partitions = {0, 1};
    qo.partition_count = 2;
    queue = spawn_queue(sys, {store, spawn_progress_publisher(sys), handlers},
                        qo);
    sched.run();
  }

  /// A local worker whose attempts wait in `bodies` until the test runs
  /// them.
  local_worker_actor worker(std::deque<std::function<void()>>& bodies) {
    worker_config wc;
    wc.worker_id = "cpu-0";
    wc.home = queue;
    wc.handlers = handlers;
    wc.clock_ms = [c = clock] { return *c; };
    wc.executor = [&bodies](std::function<void()> body) {
      bodies.push_back(std::move(body));
    };
    auto w = spawn_worker(sys, wc);
    sched.run();
    return w;
  }

  ~fixture() {
    // Timers still pending (delayed jobs) keep the queue alive otherwise,
    // and the actor system would wait for it.
    self->send_exit(queue, caf::exit_reason::user_shutdown);
    self->send_exit(store, caf::exit_reason::user_shutdown);
    sched.run();
    // The publisher's expiry of a final record it keeps holds it alive.
    sched.advance_time(std::chrono::hours{1});
    sched.run();
  }

  caf::expected<job_record> submit(submit_request req) {
    return submit_to(queue, std::move(req));
  }

  /// Submits `req` to `q` (another coordinator's queue, say).
  caf::expected<job_record> submit_to(const queue_actor& q,
                                      submit_request req) {
    caf::expected<job_record> out{caf::error{}};
    self->send(q, submit_atom::value, std::move(req));
    sched.run();
    self->receive([&](job_record& rec) { out = std::move(rec); },
                  [&](caf::error& err) { out = std::move(err); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to a submit"); });
    return out;
  }

  void own(std::vector<int32_t> partitions) {
    self->send(queue, partitions_atom::value, std::move(partitions));
    sched.run();
    self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to partitions"); });
  }

  /// The refusal an adoption request got (within a second); `adopted` and
  /// `silent` name the failure when it was adopted or not answered.
  caf::error adoption_refusal(const char* adopted, const char* silent) {
    caf::error refused;
    self->receive([adopted](job_supervisor_actor&) { FAIL(adopted); },
                  [&](caf::error& err) { refused = err; },
                  caf::after(std::chrono::seconds{1}) >>
                      [silent] { FAIL(silent); });
    return refused;
  }

  /// The job supervisor an adoption request got (within a second);
  /// `silent` names the failure when it was refused or not answered.
  job_supervisor_actor adopted(const char* silent) {
    job_supervisor_actor js;
    self->receive([&](job_supervisor_actor& a) { js = a; },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [silent] { FAIL(silent); });
    return js;
  }

  queue_stats stats() {
    queue_stats out;
    self->send(queue, stats_atom::value);
    sched.run();
    self->receive([&](queue_stats& st) { out = std::move(st); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to stats"); });
    return out;
  }

  uint64_t waiting() {
    auto st = stats();
    return std::accumulate(st.depth.begin(), st.depth.end(), uint64_t{0})
           + st.delayed;
  }

  std::vector<job_event> events(const std::string& job_id) {
    std::vector<job_event> out;
    self->send(store, events_atom::value, job_id);
    sched.run();
    self->receive([&](std::vector<job_event>& evs) { out = std::move(evs); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to events"); });
    return out;
  }
};

// A store that forwards to `real` but fails recover request number
// `*fail_at` (1-based) with `unavailable`, and records what it was asked;
// with `hold_cancels`, it holds writes of a cancel_requested event unanswered
// and unwritten in `held` until it is pinged (then it writes and answers
// them, but fails the first `fail_held` of them unwritten); it refuses the next
// `fail_openings` control-log writes of a breaker's opening; it leaves the
// control-log entries whose sequences are in `uncommitted` out of what it
// answers to a follow read (an entry whose sequence was taken but whose
// transaction has not committed yet), and counts those reads.
struct proxy_state {
  int recovers = 0;
  std::vector<std::tuple<int32_t, std::string>> asked;
  bool hold_cancels = false;
  /// Holds writes of `retry_scheduled` too (an attempt's outcome), and of
  /// `cancelled` (a waiting job's cancel).
  bool hold_retries = false;
  bool hold_cancelled = false;
  /// Writes of `cancelled` still to refuse (errc::unavailable).
  int fail_cancelled = 0;
  int fail_held = 0;
  /// Writes of a breaker's opening to the control log still to refuse.
  int fail_openings = 0;
  std::set<std::string> uncommitted;
  int follow_reads = 0;
  int full_reads = 0;
  std::vector<
      std::pair<caf::typed_response_promise<ok_atom>, std::vector<job_event>>>
      held;
};
using proxy_ptr = std::shared_ptr<proxy_state>;

inline store_actor::behavior_type proxy_impl(store_actor::pointer self,
                                             store_actor real, proxy_ptr ps,
                                             int fail_at) {
  return {
      [=](submit_atom a, job_event& ev) {
        return self->delegate(real, a, std::move(ev));
      },
      [=](submit_atom a, std::vector<job_event>& evs) {
        return self->delegate(real, a, std::move(evs));
      },
      [=](append_atom a, std::vector<job_event>& evs) -> caf::result<ok_atom> {
        auto has = [&](event_kind kind) {
          return std::any_of(evs.begin(), evs.end(), [&](const job_event& ev) {
            return ev.kind == kind;
          });
        };
        if (ps->fail_cancelled > 0 && has(event_kind::cancelled)) {
          --ps->fail_cancelled;
          return make_error(errc::unavailable, "injected write failure");
        }
        if ((ps->hold_cancels && has(event_kind::cancel_requested))
            || (ps->hold_retries && has(event_kind::retry_scheduled))
            || (ps->hold_cancelled && has(event_kind::cancelled))) {
          ps->held.emplace_back(self->make_response_promise<ok_atom>(),
                                std::move(evs));
          return ps->held.back().first;
        }
        return self->delegate(real, a, std::move(evs));
      },
      [=](get_atom a, std::string& id) {
        return self->delegate(real, a, std::move(id));
      },
      [=](events_atom a, std::string& id) {
        return self->delegate(real, a, std::move(id));
      },
      [=](events_atom a, std::string& id, uint64_t after, uint32_t limit) {
        return self->delegate(real, a, std::move(id), after, limit);
      },
      [=](list_atom a, job_query& q) {
        return self->delegate(real, a, std::move(q));
      },
      [=](recover_atom a, int32_t p, std::string& after,
          uint32_t limit) -> caf::result<std::vector<job_record>> {
        ps->asked.emplace_back(p, after);
        if (++ps->recovers == fail_at)
          return make_error(errc::unavailable, "injected recovery failure");
        return self->delegate(real, a, p, std::move(after), limit);
      },
      [=](ping_atom a) -> caf::result<ok_atom> {
        if (ps->held.empty())
          return self->delegate(real, a);
        for (auto& [rp, evs] : ps->held) {
          if (ps->fail_held > 0) {
            --ps->fail_held;
            rp.deliver(make_error(errc::unavailable, "injected write failure"));
            continue;
          }
          self->request(real, caf::infinite, append_atom::value, std::move(evs))
              .then([rp = rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                    [rp = rp](caf::error& err) mutable {
                      rp.deliver(std::move(err));
                    });
        }
        ps->held.clear();
        return ok_atom::value;
      },
      [=](partitions_atom a, std::vector<int32_t>& ps2,
          std::vector<int64_t>& es) {
        return self->delegate(real, a, std::move(ps2), std::move(es));
      },
      [=](webhooks_atom a, std::string& after, uint32_t limit) {
        return self->delegate(real, a, std::move(after), limit);
      },
      [=](nodes_atom a) { return self->delegate(real, a); },
      [=](control_atom a, int64_t at, std::string& k, std::string& key,
          std::string& st, std::string& d) -> caf::result<ok_atom> {
        if (st == "open" && ps->fail_openings > 0) {
          --ps->fail_openings;
          return make_error(errc::unavailable, "injected control-log failure");
        }
        return self->delegate(real, a, at, std::move(k), std::move(key),
                              std::move(st), std::move(d));
      },
      [=](control_atom a, uint32_t n) { return self->delegate(real, a, n); },
      [=](control_atom a, get_atom g) { return self->delegate(real, a, g); },
      [=](control_atom a, follow_atom o,
          int64_t after) -> caf::result<std::vector<std::string>> {
        ++ps->follow_reads;
        if (ps->uncommitted.empty())
          return self->delegate(real, a, o, after);
        auto rp = self->make_response_promise<std::vector<std::string>>();
        self->request(real, caf::infinite, a, o, after)
            .then(
                [=](std::vector<std::string>& six) mutable {
                  std::vector<std::string> seen;
                  for (size_t i = 0; i + 5 < six.size(); i += 6)
                    if (ps->uncommitted.count(six[i]) == 0)
                      seen.insert(seen.end(), six.begin() + i,
                                  six.begin() + i + 6);
                  rp.deliver(std::move(seen));
                },
                [=](caf::error& err) mutable { rp.deliver(std::move(err)); });
        return rp;
      },
      [=](control_atom a, configured_atom c) {
        ++ps->full_reads;
        return self->delegate(real, a, c);
      },
      [=](control_atom a, std::string& kind) {
        return self->delegate(real, a, std::move(kind));
      },
      [=](permit_atom a, std::string& key, uint32_t limit, uint32_t most_new,
          std::vector<std::string>& ids) {
        return self->delegate(real, a, std::move(key), limit, most_new,
                              std::move(ids));
      },
  };
}

/// Another coordinator's queue over `store` that owns `partition` (the
/// fixture's attempts there wait 10 s to be adopted).
inline queue_actor spawn_taker(fixture& f, const store_actor& store,
                               int32_t partition, uint64_t seed) {
  queue_options qo;
  qo.adopt_grace = qo.adopt_wait = std::chrono::seconds{10};
  qo.clock_ms = [c = f.clock] { return *c; };
  qo.flow_clock_ms = qo.clock_ms;
  qo.seed = seed;
  qo.partitions = {partition};
  qo.partition_count = 2;
  auto q = spawn_queue(
      f.sys, {store, spawn_progress_publisher(f.sys), f.handlers}, qo);
  f.sched.run();
  return q;
}

/// The fixture's partitions (0 and 1) but `p`.
inline std::vector<int32_t> all_but(int32_t p) {
  std::vector<int32_t> rest;
  for (int32_t q : {0, 1})
    if (q != p)
      rest.push_back(q);
  return rest;
}

inline submit_request noop(int64_t delay_ms = 0) {
  submit_request req;
  req.type = "noop";
  if (delay_ms > 0)
    req.delay_ms = delay_ms;
  return req;
}

/// A job running on the worker node slot `worker_id` (stand-in `sink`)
/// whose partition then goes to "another coordinator": the store says it
/// runs, the queue holds nothing of it.
inline job_record running_then_handed_away(fixture& f,
                                           const std::string& worker_id,
                                           const worker_actor& sink) {
  auto rec = f.submit(noop());
  REQUIRE(rec);
  f.self->send(f.queue, ready_atom::value, std::string{"cpu"}, worker_id, sink);
  f.sched.run();
  REQUIRE(f.stats().running == 1);
  f.own(all_but(partition_of_id(rec->job_id)));
  REQUIRE(f.stats().running == 0);
  return *rec;
}

/// running_then_handed_away(), then the partition taken back: recovered,
/// the attempt waits to be adopted (within the fixture's grace).
inline job_record waiting_for_adoption(fixture& f, const std::string& worker_id,
                                       const worker_actor& sink) {
  auto rec = running_then_handed_away(f, worker_id, sink);
  f.own({0, 1});
  f.sched.run();
  return rec;
}

/// A worker node slot's stand-in that counts the cancels it was sent.
inline worker_actor spawn_counting_slot(caf::actor_system& sys,
                                        std::shared_ptr<int> cancels) {
  return sys.spawn([cancels]() -> worker_actor::behavior_type {
    return {[](run_atom, lease&, job_supervisor_actor&) {},
            [cancels](cancel_atom, std::string&, uint32_t) { ++*cancels; },
            [](abandon_atom, std::string&, uint32_t) {},
            [](handover_atom, std::string&, uint32_t) {}};
  });
}

/// The kinds of `job_id`'s events, in order.
inline std::vector<event_kind> kinds_of(fixture& f, const std::string& job_id) {
  std::vector<event_kind> kinds;
  for (const auto& ev : f.events(job_id))
    kinds.push_back(ev.kind);
  return kinds;
}

inline job_record record_of(fixture& f, const std::string& job_id) {
  job_record out;
  f.self->send(f.store, get_atom::value, job_id);
  f.sched.run();
  f.self->receive([&](job_record& rec) { out = std::move(rec); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to get"); });
  return out;
}

/// Cancels `job_id` through the fixture's queue ("user asked"); fails the
/// test unless the cancel is acknowledged.
inline void cancel(fixture& f, const std::string& job_id) {
  f.self->send(f.queue, cancel_atom::value, job_id, std::string{"user asked"});
  f.sched.run();
  f.self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("no answer to the cancel"); });
}

} // namespace drover::testing::partitions
