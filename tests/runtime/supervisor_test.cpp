// Supervision library tests. Everything runs under CAF's deterministic test
// coordinator: no threads, no sleeps; time moves only when the test
// advances the actor clock.

#include "runtime/supervisor.hpp"

#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scheduler/test_coordinator.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <memory>
#include <random>

using namespace drover;
using namespace std::chrono_literals;
using std::chrono::milliseconds;

namespace {

using crash_atom = caf::atom_constant<caf::atom("crash")>;
using finish_atom = caf::atom_constant<caf::atom("finish")>;

caf::actor_system_config& testing_config(caf::actor_system_config& cfg) {
  cfg.set("scheduler.policy", caf::atom("testing"));
  register_types(cfg);
  return cfg;
}

/// Records every incarnation a child factory starts, in start order.
struct probe {
  struct start {
    std::string name;
    caf::actor handle;
    caf::actor_clock::time_point at;
  };
  std::vector<start> starts;

  size_t count(const std::string& name) const {
    return static_cast<size_t>(
        std::count_if(starts.begin(), starts.end(),
                      [&](const start& s) { return s.name == name; }));
  }

  caf::actor latest(const std::string& name) const {
    for (auto i = starts.rbegin(); i != starts.rend(); ++i)
      if (i->name == name)
        return i->handle;
    return {};
  }
};

/// A worker that crashes on `crash`, exits normally on `finish` and, when
/// `stubborn`, ignores requests to stop.
caf::behavior test_worker(caf::event_based_actor* self, bool stubborn) {
  if (stubborn)
    self->set_exit_handler([](caf::exit_msg&) {});
  return {
      [self](crash_atom) { self->quit(caf::sec::runtime_error); },
      [self](finish_atom) { self->quit(); },
  };
}

child_spec worker(std::string name, std::shared_ptr<probe> p,
                  restart_type restart = restart_type::permanent,
                  bool stubborn = false,
                  milliseconds shutdown_timeout = 100ms) {
  child_spec spec;
  spec.name = name;
  spec.restart = restart;
  spec.shutdown_timeout = shutdown_timeout;
  spec.start
      = [p, name, stubborn](caf::actor_system& sys, const caf::actor_addr&) {
          auto h = sys.spawn(test_worker, stubborn);
          p->starts.push_back({name, h, sys.clock().now()});
          return h;
        };
  return spec;
}

supervisor_flags flags(strategy strat = strategy::one_for_one,
                       uint32_t intensity = 3, milliseconds period = 5s) {
  supervisor_flags f;
  f.strat = strat;
  f.intensity = intensity;
  f.period = period;
  f.backoff.initial = 10ms;
  f.backoff.max = 1000ms;
  f.backoff.multiplier = 2.0;
  f.backoff.jitter = 0.2;
  f.seed = 42;
  return f;
}

struct fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scheduler::test_coordinator& sched;
  caf::scoped_actor self;
  std::shared_ptr<probe> p = std::make_shared<probe>();

  fixture()
      : sys(testing_config(cfg)),
        sched(dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler())),
        self(sys, true) {
    // nop
  }

  void run() {
    sched.run();
  }

  void advance(milliseconds d) {
    sched.advance_time(d);
    sched.run();
  }

  std::vector<supervisor_actor> supervisors;

  supervisor_actor start(supervisor_spec spec) {
    auto sup = spawn_supervisor(sys, std::move(spec));
    REQUIRE(sup);
    supervisors.push_back(*sup);
    run();
    return *sup;
  }

  void crash(const std::string& name) {
    auto h = p->latest(name);
    REQUIRE(h);
    self->send(h, crash_atom::value);
    run();
  }

  tree_node describe(const supervisor_actor& sup) {
    self->send(sup, describe_atom::value);
    run();
    tree_node result;
    bool answered = false;
    self->receive(
        [&](tree_node& t) {
          result = std::move(t);
          answered = true;
        },
        caf::after(0s) >> [] {});
    REQUIRE(answered);
    return result;
  }

  /// The down messages that arrived so far, in arrival order.
  std::vector<caf::down_msg> downs() {
    std::vector<caf::down_msg> result;
    bool more = true;
    while (more)
      self->receive([&](caf::down_msg& dm) { result.push_back(std::move(dm)); },
                    caf::after(0s) >> [&] { more = false; });
    return result;
  }

  ~fixture() {
    // Leave no actor behind: the system's destructor waits for all of them.
    // Killing a supervisor takes its linked children with it.
    for (auto& s : supervisors)
      self->send_exit(s, caf::exit_reason::kill);
    for (auto& s : p->starts)
      self->send_exit(s.handle, caf::exit_reason::kill);
    run();
  }
};

const tree_node& child_named(const tree_node& n, const std::string& name) {
  for (const auto& c : n.children)
    if (c.name == name)
      return c;
  FAIL("no child named " << name);
  return n;
}

} // namespace

TEST_CASE("backoff delays grow and stay within bounds", "[supervisor]") {
  restart_backoff b;
  b.initial = 10ms;
  b.max = 1000ms;
  b.multiplier = 2.0;
  b.jitter = 0.25;
  auto seed = std::random_device{}();
  INFO("seed " << seed);
  std::mt19937 rng{seed};
  std::uniform_real_distribution<double> u{0.0, 1.0};
  milliseconds previous_base{0};
  for (uint32_t n = 0; n < 40; ++n) {
    auto base = backoff_delay(b, n, 0.0); // no jitter drawn: the base
    CHECK(base >= previous_base);         // grows (monotonic)
    CHECK(base <= b.max);                 // and is capped
    previous_base = base;
    for (int i = 0; i < 100; ++i) {
      auto d = backoff_delay(b, n, u(rng));
      CHECK(d <= base);
      CHECK(d.count() >= static_cast<int64_t>(base.count() * 0.75) - 1);
      CHECK(d.count() >= static_cast<int64_t>(b.initial.count() * 0.75) - 1);
    }
  }
  CHECK(backoff_delay(b, 0, 0.0) == 10ms);
  CHECK(backoff_delay(b, 3, 0.0) == 80ms);
  CHECK(backoff_delay(b, 7, 0.0) == 1000ms); // 1280 capped
  CHECK(backoff_delay(b, 1000000, 0.0) == 1000ms);
}

TEST_CASE("a crashing child is restarted after its backoff, siblings untouched",
          "[supervisor]") {
  fixture fx;
  auto sup
      = fx.start({"root", flags(), {worker("a", fx.p), worker("b", fx.p)}});
  REQUIRE(fx.p->count("a") == 1);
  auto b_before = fx.p->latest("b");
  fx.crash("a");
  // Down, waiting out the backoff (>= 10ms * 0.8): not restarted yet.
  CHECK(fx.p->count("a") == 1);
  CHECK(child_named(fx.describe(sup), "a").state == child_state::restarting);
  fx.advance(7ms);
  CHECK(fx.p->count("a") == 1);
  fx.advance(3ms);
  REQUIRE(fx.p->count("a") == 2);
  CHECK(fx.p->latest("b") == b_before);
  auto tree = fx.describe(sup);
  CHECK(child_named(tree, "a").state == child_state::running);
  CHECK(child_named(tree, "a").restarts == 1);
  CHECK(child_named(tree, "a").last_exit.find("runtime_error")
        != std::string::npos);
  CHECK(child_named(tree, "b").restarts == 0);
}

TEST_CASE("consecutive crashes back off exponentially", "[supervisor]") {
  fixture fx;
  auto f = flags(strategy::one_for_one, 10, 60s);
  f.backoff.jitter = 0.0; // exact delays: 10, 20, 40, 80 ms
  fx.start({"root", f, {worker("a", fx.p)}});
  milliseconds expected{10};
  for (int i = 0; i < 4; ++i) {
    auto before = fx.p->count("a");
    fx.crash("a");
    fx.advance(expected - 1ms);
    CHECK(fx.p->count("a") == before); // not a millisecond early
    fx.advance(1ms);
    REQUIRE(fx.p->count("a") == before + 1);
    expected *= 2;
  }
}

TEST_CASE("restart intensity exceeded: supervisor stops children and escalates",
          "[supervisor]") {
  fixture fx;
  auto sup = fx.start({"root",
                       flags(strategy::one_for_one, 2, 1s),
                       {worker("a", fx.p), worker("b", fx.p)}});
  fx.self->monitor(sup);
  auto b = fx.p->latest("b");
  fx.self->monitor(b);
  fx.crash("a");
  fx.advance(100ms);
  fx.crash("a");
  fx.advance(100ms);
  CHECK(fx.downs().empty()); // two restarts within 1s: still allowed
  fx.crash("a");             // the third one is too many
  auto downs = fx.downs();
  REQUIRE(downs.size() == 2);
  CHECK(downs[0].source == b.address()); // b stopped before the supervisor
  CHECK(downs[1].source == sup.address());
  CHECK(is(downs[1].reason, errc::escalated));
  CHECK(describe(downs[1].reason).find("'a' restarted more than 2 times")
        != std::string::npos);
}

TEST_CASE("restarts spread wider than the period never escalate",
          "[supervisor]") {
  fixture fx;
  auto sup = fx.start(
      {"root", flags(strategy::one_for_one, 1, 1s), {worker("a", fx.p)}});
  fx.self->monitor(sup);
  for (int i = 0; i < 5; ++i) {
    fx.crash("a");
    fx.advance(1001ms);
  }
  CHECK(fx.downs().empty());
  CHECK(fx.p->count("a") == 6);
  CHECK(child_named(fx.describe(sup), "a").restarts == 5);
}

TEST_CASE("escalation reaches the parent, which restarts the whole subtree",
          "[supervisor]") {
  fixture fx;
  supervisor_spec inner{
      "inner", flags(strategy::one_for_one, 1, 10s), {worker("w", fx.p)}};
  auto sup = fx.start({"outer",
                       flags(strategy::one_for_one, 5, 10s),
                       {supervisor_child(inner), worker("x", fx.p)}});
  auto x = fx.p->latest("x");
  fx.crash("w");
  fx.advance(100ms);
  REQUIRE(fx.p->count("w") == 2);
  fx.crash("w"); // second restart in 10s: inner gives up
  auto tree = fx.describe(sup);
  const auto& inner_node = child_named(tree, "inner");
  CHECK(inner_node.state == child_state::restarting);
  CHECK(inner_node.restarts == 1);
  CHECK(inner_node.last_exit.find("escalated") != std::string::npos);
  fx.advance(100ms);              // outer's backoff for inner
  REQUIRE(fx.p->count("w") == 3); // fresh subtree, fresh worker
  CHECK(fx.p->latest("x") == x);  // one_for_one: x untouched
  tree = fx.describe(sup);
  CHECK(child_named(tree, "inner").state == child_state::running);
  CHECK(child_named(child_named(tree, "inner"), "w").restarts == 0);
}

TEST_CASE("one_for_all stops the siblings in reverse order and restarts all",
          "[supervisor]") {
  fixture fx;
  auto sup
      = fx.start({"root",
                  flags(strategy::one_for_all),
                  {worker("a", fx.p), worker("b", fx.p), worker("c", fx.p)}});
  auto a = fx.p->latest("a");
  auto c = fx.p->latest("c");
  fx.self->monitor(a);
  fx.self->monitor(c);
  fx.crash("b");
  auto downs = fx.downs();
  REQUIRE(downs.size() == 2);
  CHECK(downs[0].source == c.address());
  CHECK(downs[1].source == a.address());
  CHECK(downs[0].reason == caf::exit_reason::user_shutdown);
  auto tree = fx.describe(sup);
  for (const auto& n : tree.children)
    CHECK(n.state == child_state::restarting);
  fx.advance(10ms);
  REQUIRE(fx.p->starts.size() == 6);
  CHECK(fx.p->starts[3].name == "a"); // restarted in start order
  CHECK(fx.p->starts[4].name == "b");
  CHECK(fx.p->starts[5].name == "c");
  tree = fx.describe(sup);
  CHECK(child_named(tree, "b").restarts == 1);
  for (const auto& n : tree.children)
    CHECK(n.state == child_state::running);
}

TEST_CASE("restart types: transient and temporary children", "[supervisor]") {
  fixture fx;
  auto sup = fx.start({"root",
                       flags(),
                       {worker("t1", fx.p, restart_type::transient),
                        worker("t2", fx.p, restart_type::transient),
                        worker("tmp", fx.p, restart_type::temporary)}});
  fx.self->send(fx.p->latest("t1"), finish_atom::value); // normal exit
  fx.run();
  fx.crash("t2");
  fx.crash("tmp");
  fx.advance(50ms);
  CHECK(fx.p->count("t1") == 1); // normal exit: not restarted
  CHECK(fx.p->count("t2") == 2); // abnormal exit: restarted
  CHECK(fx.p->count("tmp") == 1);
  auto tree = fx.describe(sup);
  REQUIRE(tree.children.size() == 2); // temporary child forgotten
  CHECK(child_named(tree, "t1").state == child_state::stopped);
  CHECK(child_named(tree, "t2").state == child_state::running);
}

TEST_CASE("orderly shutdown stops children in reverse order, killing laggards",
          "[supervisor]") {
  fixture fx;
  auto sup = fx.start(
      {"root",
       flags(),
       {worker("a", fx.p), worker("b", fx.p),
        worker("stubborn", fx.p, restart_type::permanent, true, 250ms)}});
  for (auto& s : fx.p->starts)
    fx.self->monitor(s.handle);
  fx.self->monitor(sup);
  fx.self->send_exit(sup, caf::exit_reason::user_shutdown);
  fx.run();
  CHECK(fx.downs().empty()); // the stubborn child ignores the request...
  fx.advance(249ms);
  CHECK(fx.downs().empty());
  fx.advance(1ms); // ...until its shutdown timeout: killed
  auto downs = fx.downs();
  REQUIRE(downs.size() == 4);
  CHECK(downs[0].source == fx.p->latest("stubborn").address());
  CHECK(downs[0].reason == caf::exit_reason::kill);
  CHECK(downs[1].source == fx.p->latest("b").address());
  CHECK(downs[2].source == fx.p->latest("a").address());
  CHECK(downs[3].source == sup.address());
  CHECK(downs[3].reason == caf::exit_reason::user_shutdown);
  CHECK(fx.p->starts.size() == 3); // nothing restarted during shutdown
}

TEST_CASE("describe returns the real tree with live uptimes", "[supervisor]") {
  fixture fx;
  supervisor_spec inner{"workers",
                        flags(strategy::one_for_all),
                        {worker("w1", fx.p), worker("w2", fx.p)}};
  auto f = flags();
  f.backoff.jitter = 0.0; // exact restart time, exact uptime
  auto sup = fx.start(
      {"node:test", f, {worker("store", fx.p), supervisor_child(inner)}});
  fx.advance(1500ms);
  fx.crash("store");
  fx.advance(10ms);
  fx.advance(90ms);
  auto tree = fx.describe(sup);
  CHECK(tree.name == "node:test");
  CHECK(tree.kind == child_kind::supervisor);
  CHECK(tree.strat == strategy::one_for_one);
  CHECK(tree.uptime_ms == 1600);
  REQUIRE(tree.children.size() == 2);
  CHECK(tree.children[0].name == "store");
  CHECK(tree.children[0].kind == child_kind::worker);
  CHECK(tree.children[0].restarts == 1);
  CHECK(tree.children[0].uptime_ms == 90);
  const auto& w = tree.children[1];
  CHECK(w.name == "workers");
  CHECK(w.kind == child_kind::supervisor);
  CHECK(w.strat == strategy::one_for_all);
  CHECK(w.uptime_ms == 1600);
  REQUIRE(w.children.size() == 2);
  CHECK(w.children[0].name == "w1");
  CHECK(w.children[1].name == "w2");
  CHECK(w.children[1].state == child_state::running);
}

TEST_CASE("a child that cannot start fails the supervisor's start",
          "[supervisor]") {
  fixture fx;
  child_spec broken;
  broken.name = "broken";
  broken.start = [](caf::actor_system&, const caf::actor_addr&) -> caf::actor {
    throw std::runtime_error("no database");
  };
  auto sup = spawn_supervisor(
      fx.sys, {"root", flags(), {worker("a", fx.p), std::move(broken)}});
  REQUIRE(sup);
  fx.self->monitor(*sup);
  fx.run(); // the supervisor's start runs here
  auto downs = fx.downs();
  REQUIRE(downs.size() == 1);
  CHECK(is(downs[0].reason, errc::escalated));
  CHECK(describe(downs[0].reason).find("no database") != std::string::npos);
  // The sibling that did start was stopped again, not leaked (monitoring a
  // dead actor yields its down message at once).
  auto a = fx.p->latest("a");
  REQUIRE(a);
  fx.self->monitor(a);
  downs = fx.downs();
  REQUIRE(downs.size() == 1);
  CHECK(downs[0].reason == caf::exit_reason::user_shutdown);
}

TEST_CASE("invalid supervisor specs are rejected and spawn nothing",
          "[supervisor]") {
  fixture fx;
  auto expect_bad = [&](supervisor_spec spec, const std::string& fragment) {
    auto sup = spawn_supervisor(fx.sys, std::move(spec));
    REQUIRE_FALSE(sup);
    CHECK(is(sup.error(), errc::bad_config));
    CHECK(describe(sup.error()).find(fragment) != std::string::npos);
  };
  expect_bad({"", flags(), {}}, "name must not be empty");
  expect_bad({"s", flags(), {worker("a", fx.p), worker("a", fx.p)}},
             "duplicate child name 'a'");
  auto f = flags();
  f.backoff.jitter = 1.5;
  expect_bad({"s", f, {}}, "jitter");
  f = flags();
  f.backoff.initial = 2s;
  expect_bad({"s", f, {}}, "initial delay");
  f = flags();
  f.period = 0ms;
  expect_bad({"s", f, {}}, "period");
  child_spec no_factory;
  no_factory.name = "x";
  expect_bad({"s", flags(), {no_factory}}, "no start function");
  CHECK(fx.p->starts.empty());
}

TEST_CASE("a killed child is restarted, a killed supervisor takes its "
          "children along",
          "[supervisor]") {
  fixture fx;
  auto sup = fx.start({"root", flags(), {worker("a", fx.p)}});
  fx.self->monitor(sup);
  auto first = fx.p->latest("a");
  fx.self->send_exit(first, caf::exit_reason::kill);
  fx.run();
  fx.advance(10ms);
  CHECK(fx.downs().empty()); // the supervisor survived
  REQUIRE(fx.p->count("a") == 2);
  auto second = fx.p->latest("a");
  fx.self->monitor(second);
  fx.self->send_exit(sup, caf::exit_reason::kill);
  fx.run();
  auto downs = fx.downs();
  REQUIRE(downs.size() == 2);
  bool child_down = false;
  for (auto& dm : downs)
    if (dm.source == second.address())
      child_down = dm.reason == caf::exit_reason::kill;
  CHECK(child_down); // no orphan left running
}
