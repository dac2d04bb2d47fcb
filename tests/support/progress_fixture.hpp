#pragma once

// The fixture of the progress publisher tests
// (tests/actors/progress_publisher_*_test.cpp). Everything runs under CAF's
// deterministic test coordinator: no threads, no sleeps; time moves only
// when the test advances the actor clock. Subscribers are small recorder
// actors that note what they receive and when (on the actor clock).

#include "actors/progress_publisher.hpp"

#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace drover::testing::progress_fixture {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

using time_point = caf::actor_clock::time_point;

inline caf::actor_system_config& testing_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  register_types(cfg);
  return cfg;
}

/// One message a subscriber received.
struct received {
  bool is_final = false;
  progress_update update; // when !is_final
  job_record record;      // when is_final
  time_point at;
};

/// What one subscriber received, in arrival order.
struct recording {
  std::vector<received> events;

  std::vector<progress_update> updates(const std::string& job_id = {}) const {
    std::vector<progress_update> result;
    for (const auto& e : events)
      if (!e.is_final && (job_id.empty() || e.update.job_id == job_id))
        result.push_back(e.update);
    return result;
  }

  std::vector<job_record> finals() const {
    std::vector<job_record> result;
    for (const auto& e : events)
      if (e.is_final)
        result.push_back(e.record);
    return result;
  }
};

inline caf::behavior recorder(caf::event_based_actor* self,
                              std::shared_ptr<recording> out) {
  return {
      [self, out](progress_atom, progress_update& u) {
        received r;
        r.update = std::move(u);
        r.at = self->clock().now();
        out->events.push_back(std::move(r));
      },
      [self, out](final_atom, job_record& rec) {
        received r;
        r.is_final = true;
        r.record = std::move(rec);
        r.at = self->clock().now();
        out->events.push_back(std::move(r));
      },
  };
}

inline progress_update update(std::string job_id, double percent, int64_t at_ms,
                              uint32_t attempt = 1,
                              std::vector<stage> stages = {}) {
  progress_update u;
  u.job_id = std::move(job_id);
  u.percent = percent;
  u.at_ms = at_ms;
  u.attempt = attempt;
  u.stages = std::move(stages);
  return u;
}

inline job_record final_record(std::string job_id, uint32_t attempt = 1,
                               job_status status = job_status::completed) {
  job_record r;
  r.job_id = std::move(job_id);
  r.attempt = attempt;
  r.status = status;
  r.progress = 100;
  return r;
}

inline progress_options options(milliseconds interval = 100ms,
                                milliseconds retention = 60s,
                                size_t max_finals = 10000) {
  progress_options o;
  o.coalesce_interval = interval;
  o.final_retention = retention;
  o.max_retained_finals = max_finals;
  return o;
}

struct subscriber {
  caf::actor handle;
  std::shared_ptr<recording> log;
};

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  progress_actor pub;
  std::vector<caf::actor> recorders;
  time_point start;

  explicit fixture(progress_options opts = options())
      : sys(testing_config(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys, true) {
    pub = spawn_progress_publisher(sys, opts);
    run();
    start = now();
  }

  ~fixture() {
    // Leave no actor behind: the system's destructor waits for all of them.
    self->send_exit(pub, caf::exit_reason::kill);
    for (auto& r : recorders)
      self->send_exit(r, caf::exit_reason::kill);
    run();
  }

  void run() {
    sched.run();
  }

  void advance(caf::timespan d) {
    sched.advance_time(d);
    run();
  }

  time_point now() {
    return sys.clock().now();
  }

  /// Time since the fixture started, on the actor clock.
  milliseconds elapsed(time_point t) const {
    return std::chrono::duration_cast<milliseconds>(t - start);
  }

  subscriber make_subscriber() {
    auto log = std::make_shared<recording>();
    auto h = sys.spawn(recorder, log);
    recorders.push_back(h);
    return {h, log};
  }

  void subscribe(const std::string& job_id, const subscriber& s) {
    self->send(pub, subscribe_atom::value, job_id, s.handle);
    run();
    bool ok = false;
    self->receive([&](ok_atom) { ok = true; }, caf::after(0s) >> [] {});
    REQUIRE(ok);
  }

  subscriber subscribed(const std::string& job_id) {
    auto s = make_subscriber();
    subscribe(job_id, s);
    return s;
  }

  void unsubscribe(const std::string& job_id, const subscriber& s) {
    self->send(pub, unsubscribe_atom::value, job_id, s.handle);
    run();
  }

  void publish(progress_update u) {
    self->send(pub, publish_atom::value, std::move(u));
    run();
  }

  void finish(job_record r) {
    self->send(pub, final_atom::value, std::move(r));
    run();
  }

  void changed(const std::string& job_id) {
    self->send(pub, changed_atom::value, job_id);
    run();
  }
};

inline stage make_stage(std::string name, double percent, stage_state state) {
  stage s;
  s.name = std::move(name);
  s.percent = percent;
  s.state = state;
  return s;
}

} // namespace drover::testing::progress_fixture
