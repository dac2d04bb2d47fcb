// Circuit breakers of runtime/flow_control.hpp: in a row and by ratio, the
// codes that count, the gates jobs park at, the admin view and the control
// log, a restored state, and a breaker opened at another coordinator.

#include "runtime/flow_control.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("flow: a breaker opens after failures in a row, half-opens after "
          "its cooldown, probes, closes or opens again",
          "[flow]") {
  circuit_breaker b{{3, 1000, 1, {}, {}}};
  std::vector<flow_change> log;
  CHECK(b.may_run(0, log, "k"));
  CHECK(b.admit() == 0); // closed: no probe
  b.outcome(0, false, true, 10, log, "k", "e");
  b.outcome(0, false, true, 20, log, "k", "e");
  b.outcome(0, true, false, 30, log, "k", ""); // a success resets
  CHECK(b.failures_in_row() == 0);
  for (int i = 0; i < 3; ++i)
    b.outcome(0, false, true, 40 + i, log, "k", "e");
  CHECK(b.state() == breaker_state::open);
  REQUIRE(log.size() == 1);
  CHECK(log[0].state == "open");
  CHECK_FALSE(b.may_run(500, log, "k"));
  CHECK(b.half_open_at() == 1042);
  CHECK(b.may_run(1042, log, "k"));
  CHECK(b.state() == breaker_state::half_open);
  auto p1 = b.admit(); // the probe
  CHECK(p1 != 0);
  CHECK_FALSE(b.may_run(1043, log, "k")); // one probe at a time
  // The probe fails: open again, for another cooldown.
  CHECK_FALSE(b.outcome(p1, false, true, 1100, log, "k", "e"));
  CHECK(b.state() == breaker_state::open);
  CHECK_FALSE(b.may_run(2000, log, "k"));
  CHECK(b.may_run(2100, log, "k"));
  auto p2 = b.admit();
  CHECK(p2 != p1); // another half-open period
  // A probe that does not reach an outcome (cancelled) lets another go.
  CHECK(b.outcome(p2, false, false, 2150, log, "k", "cancelled"));
  CHECK(b.may_run(2160, log, "k"));
  auto p3 = b.admit();
  // A probe of an earlier period is an ordinary attempt: its success
  // neither closes the breaker nor frees this period's probe.
  CHECK_FALSE(b.outcome(p1, true, false, 2170, log, "k", ""));
  CHECK(b.state() == breaker_state::half_open);
  CHECK(b.probes_running() == 1);
  // This period's probe succeeds: closed, everything waiting may run.
  CHECK(b.outcome(p3, true, false, 2200, log, "k", ""));
  CHECK(b.state() == breaker_state::closed);
  CHECK(b.opened_count() == 2);
  std::vector<std::string> states;
  for (auto& c : log)
    states.push_back(c.state);
  CHECK(states
        == std::vector<std::string>{"open", "half_open", "open", "half_open",
                                    "closed"});
}

TEST_CASE("flow: a breaker opens at a failure ratio over its window, not "
          "below min_calls, and forgets outcomes older than the window",
          "[flow]") {
  // Half of at least 10 outcomes in 10 s; no rule in a row.
  breaker_config cfg;
  cfg.failures = 0;
  cfg.ratio = 0.5;
  cfg.window_ms = 10000;
  cfg.min_calls = 10;
  cfg.cooldown_ms = 1000;

  SECTION("at the ratio once min_calls outcomes are in") {
    circuit_breaker b{cfg};
    std::vector<flow_change> log;
    // 6 failures and 3 successes: 9 outcomes, below min_calls, however
    // bad the share (and 6 in a row would open a failures=5 breaker).
    for (int i = 0; i < 6; ++i)
      b.outcome(0, false, true, 100 + i, log, "k", "down");
    for (int i = 0; i < 3; ++i)
      b.outcome(0, true, false, 200 + i, log, "k", "");
    CHECK(b.state() == breaker_state::closed);
    CHECK(b.window(300).calls == 9);
    CHECK(b.window(300).failures == 6);
    // Outcomes not counted (a cancel, a lost worker) do not feed it.
    b.outcome(0, false, false, 300, log, "k", "worker_lost");
    CHECK(b.window(300).calls == 9);
    // A success makes 10 outcomes at 0.6 of failures: a success never
    // opens it; the next counted failure looks (7 of 11, 0.64).
    b.outcome(0, true, false, 400, log, "k", "");
    CHECK(b.state() == breaker_state::closed);
    b.outcome(0, false, true, 500, log, "k", "down");
    REQUIRE(b.state() == breaker_state::open);
    REQUIRE(log.size() == 1);
    INFO(log[0].detail);
    CHECK(log[0].detail.find("7 of 11 attempts failed in the last 10 s") == 0);
    CHECK(log[0].detail.find("opens at 0.5") != std::string::npos);
    CHECK(b.opened_count() == 1);
  }

  SECTION("not below the ratio") {
    circuit_breaker b{cfg};
    std::vector<flow_change> log;
    // 6 successes, then failures: 4 of 10, 5 of 11 stay closed; 6 of 12
    // is the ratio itself, and that is enough.
    for (int i = 0; i < 6; ++i)
      b.outcome(0, true, false, 100 + i, log, "k", "");
    for (int i = 0; i < 5; ++i)
      b.outcome(0, false, true, 200 + i, log, "k", "down");
    CHECK(b.window(300).calls == 11);
    CHECK(b.window(300).failures == 5);
    CHECK(b.state() == breaker_state::closed);
    b.outcome(0, false, true, 300, log, "k", "down");
    CHECK(b.state() == breaker_state::open);
  }

  SECTION("old outcomes fall out of the window") {
    circuit_breaker b{cfg};
    std::vector<flow_change> log;
    // 9 failures at t = 0..8 ms, then quiet.
    for (int i = 0; i < 9; ++i)
      b.outcome(0, false, true, i, log, "k", "down");
    CHECK(b.window(9000).calls == 9);
    // They count for more than 0.9 and at most 1 window (10 buckets of
    // 1 s): still in at 9.999 s, gone at 10 s.
    CHECK(b.window(9999).calls == 9);
    CHECK(b.window(10000).calls == 0);
    // A failure now is 1 of 1: below min_calls, closed.
    b.outcome(0, false, true, 10000, log, "k", "down");
    CHECK(b.state() == breaker_state::closed);
    CHECK(b.window(10000).calls == 1);
    // 9 successes at 12 s, 7 failures at 15 s: with the failure of 10 s,
    // 8 of 17, closed.
    for (int i = 0; i < 9; ++i)
      b.outcome(0, true, false, 12000 + i, log, "k", "");
    for (int i = 0; i < 7; ++i)
      b.outcome(0, false, true, 15000 + i, log, "k", "down");
    CHECK(b.window(15100).calls == 17);
    CHECK(b.window(15100).failures == 8);
    CHECK(b.state() == breaker_state::closed); // 8 of 17
    // A failure at 20 s: the one of 10 s is gone, so 8 of 17 again, not
    // 9 of 18 (which would open it).
    b.outcome(0, false, true, 20000, log, "k", "down");
    CHECK(b.window(20000).calls == 17);
    CHECK(b.state() == breaker_state::closed);
    // One more: 9 of 18.
    b.outcome(0, false, true, 20001, log, "k", "down");
    CHECK(b.state() == breaker_state::open);
  }

  SECTION("the window starts over when a probe closes it") {
    cfg.failures = 3; // both rules
    circuit_breaker b{cfg};
    std::vector<flow_change> log;
    for (int i = 0; i < 12; ++i)
      b.outcome(0, true, false, i, log, "k", "");
    for (int i = 0; i < 3; ++i)
      b.outcome(0, false, true, 100 + i, log, "k", "down");
    REQUIRE(b.state() == breaker_state::open); // 3 in a row; 3 of 15
    CHECK(log.back().detail.find("3 failure(s) in a row") == 0);
    // Attempts that ran on while it was open do not feed it.
    b.outcome(0, false, true, 200, log, "k", "down");
    CHECK(b.window(200).calls == 15);
    REQUIRE(b.may_run(1102, log, "k"));
    auto probe = b.admit();
    CHECK(b.outcome(probe, true, false, 1200, log, "k", ""));
    CHECK(b.state() == breaker_state::closed);
    CHECK(b.window(1200).calls == 0);
    // A fresh start: 5 of 10 opens it by the ratio (two in a row only).
    for (int i = 0; i < 5; ++i) {
      b.outcome(0, true, false, 1300 + 2 * i, log, "k", "");
      b.outcome(0, false, true, 1301 + 2 * i, log, "k", "down");
    }
    CHECK(b.state() == breaker_state::open);
    CHECK(log.back().detail.find("5 of 10 attempts failed") == 0);
  }
}

TEST_CASE("flow: only the listed codes count, and never a lost worker",
          "[flow]") {
  circuit_breaker b{{1, 1000, 1, {"down"}, {}}};
  CHECK(b.counts("down"));
  CHECK_FALSE(b.counts("invalid_input"));
  circuit_breaker any{{1, 1000, 1, {}, {}}};
  CHECK(any.counts("invalid_input"));
  CHECK(any.counts("timeout"));
  CHECK_FALSE(any.counts("worker_lost"));
  CHECK_FALSE(any.counts("cancelled"));
  CHECK_FALSE(any.counts("lease_expired"));
}

TEST_CASE("flow: gates park jobs, refuse undeclared keys and other tenants, "
          "count woken jobs, and record each state change",
          "[flow]") {
  flow_limits limits;
  limits.rates["smtp"] = {2, 1, {}};
  limits.breakers["sink"] = {2, 1000, 1, {}, {"acme"}};
  flow_control f{limits, 0};
  auto start = f.drain_changes();
  CHECK(start.size() == 1); // the limiter's authority started
  // Breakers hold every job until their last state is known.
  f.hold_breakers();
  auto both = f.intern("smtp", "sink");
  auto held = f.gate(both, 0);
  REQUIRE(held);
  CHECK(held->gate == "bsink");
  CHECK(held->until_ms == 0);
  f.restore_breakers({}, true, 100000, 0); // nothing recorded: closed
  auto restored = f.drain_changes();
  REQUIRE(restored.size() == 1);
  CHECK(restored[0].state == "closed");

  CHECK_FALSE(f.check("smtp", "sink", "acme"));
  CHECK(is(f.check("smtp", "sink", "globex"), errc::invalid_request));
  CHECK_FALSE(f.check("smtp", "", "globex")); // the limiter is everyone's
  CHECK(is(f.check("nope", "", "acme"), errc::invalid_request));
  CHECK(is(f.check("", "nope", "acme"), errc::invalid_request));
  CHECK(f.intern("", "") == 0);
  CHECK(both == f.intern("smtp", "sink"));
  CHECK(f.intern("gone", "") == 0); // recovered with a key no longer declared
  CHECK_FALSE(f.gate(0, 0));
  CHECK(f.gates_of(both) == std::vector<std::string>{"bsink", "rsmtp"});
  CHECK(f.gates_of(0).empty());

  auto w = f.gate(both, 0);
  REQUIRE(w);
  CHECK(w->gate == "rsmtp");
  CHECK(w->until_ms == 500);
  CHECK(f.wakeable("rsmtp", 499) == 0);
  CHECK(f.wakeable("rsmtp", 500) == 1);
  // One woken, not taken yet: nobody else may be woken for that token,
  // and the next look is at the token after it (burst 1: none to wait
  // for until the woken job leaves).
  f.woke("rsmtp", 1);
  CHECK(f.wakeable("rsmtp", 500) == 0);
  CHECK(f.next_check_ms("rsmtp", 500) == 0);
  f.unwoke("rsmtp");
  CHECK(f.next_check_ms("rsmtp", 500) == 500);
  CHECK_FALSE(f.gate(both, 500));
  CHECK(f.take(both, 500) == 0); // closed: not a probe
  CHECK(f.gate(both, 600));      // the token is spent
  CHECK(f.next_check_ms("rsmtp", 600) == 1000);

  // Two failures open the breaker; its jobs park behind it.
  f.outcome(both, 0, false, "down", 700);
  f.outcome(both, 0, false, "down", 800);
  w = f.gate(both, 1000);
  REQUIRE(w);
  CHECK(w->gate == "bsink");
  CHECK(w->until_ms == 1800);
  CHECK(f.next_check_ms("bsink", 1000) == 1800);
  CHECK(f.wakeable("bsink", 1000) == 0);
  CHECK(f.wakeable("bsink", 1800) == 1); // half-open: one probe
  CHECK_FALSE(f.gate(both, 1800));
  auto probe = f.take(both, 1800);
  CHECK(probe != 0);
  CHECK(f.wakeable("bsink", 1900) == 0);
  CHECK(f.next_check_ms("bsink", 1900) == 0); // until the probe reports
  f.outcome(both, probe, true, "", 2500);
  CHECK(f.breakers().at("sink").state() == breaker_state::closed);
  auto changes = f.drain_changes();
  REQUIRE(changes.size() == 3);
  CHECK(changes[0].state == "open");
  CHECK(changes[1].state == "half_open");
  CHECK(changes[2].state == "closed");
  auto json = f.to_json(2500, {{"rsmtp", 4}});
  CHECK(json.find("\"key\":\"smtp\"") != std::string::npos);
  CHECK(json.find("\"waiting\":4") != std::string::npos);
  CHECK(json.find("\"state\":\"closed\"") != std::string::npos);
  // No ratio rule: its settings and figures are null.
  CHECK(json.find("\"failure_ratio_to_open\":null,\"window_seconds\":null,"
                  "\"min_calls\":null,\"window_calls\":null,"
                  "\"window_failures\":null")
        != std::string::npos);
}

TEST_CASE("flow: the admin view shows a ratio breaker's settings and window, "
          "and the control log why it opened",
          "[flow]") {
  auto parsed = parse_breaker("api:ratio=0.5,window=30,min_calls=4");
  REQUIRE(parsed);
  flow_limits limits;
  limits.breakers[parsed->first] = parsed->second;
  flow_control f{limits, 0};
  f.hold_breakers();
  f.restore_breakers({}, true, 100000, 0);
  auto start = f.drain_changes();
  REQUIRE(start.size() == 1);
  CHECK(start[0].detail
        == "active: opens when at least 0.5 of the attempts in 30 s failed "
           "(once 4 or more ended)");
  auto flow = f.intern("", "api");
  f.outcome(flow, 0, true, "", 1000);
  f.outcome(flow, 0, false, "timeout", 2000);
  f.outcome(flow, 0, false, "cancelled", 2500); // not counted
  auto json = f.to_json(3000, {});
  INFO(json);
  CHECK(json.find("\"failures_to_open\":0,\"failure_ratio_to_open\":0.5,"
                  "\"window_seconds\":30,\"min_calls\":4,"
                  "\"window_calls\":2,\"window_failures\":1,")
        != std::string::npos);
  f.outcome(flow, 0, false, "timeout", 4000);
  CHECK(f.breakers().at("api").state() == breaker_state::closed); // 2 of 3
  f.outcome(flow, 0, true, "", 5000);
  f.outcome(flow, 0, false, "timeout", 6000); // 3 of 5
  auto changes = f.drain_changes();
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].state == "open");
  CHECK(changes[0].detail
        == "3 of 5 attempts failed in the last 30 s (ratio 0.6, opens at "
           "0.5), the last timeout");
  // 30 s later the window is empty; the figures say so.
  json = f.to_json(36000, {});
  CHECK(json.find("\"window_calls\":0,\"window_failures\":0")
        != std::string::npos);
}

TEST_CASE("flow: a new authority restores each breaker's last state",
          "[flow]") {
  flow_limits limits;
  limits.breakers["a"] = {2, 10000, 1, {}, {}};
  limits.breakers["b"] = {2, 10000, 1, {}, {}};
  limits.breakers["c"] = {2, 10000, 1, {}, {}};
  flow_control f{limits, 50};
  f.hold_breakers();
  // a opened 4 s ago (wall clock 100,000), b was half-open, c unknown.
  // (A run-time setting of b, "configured", is not a state.)
  f.restore_breakers({"a", "open", "96000", "", "b", "configured", "99500",
                      "failures=3", "b", "half_open", "99000", ""},
                     true, 100000, 50);
  CHECK(f.breakers().at("a").state() == breaker_state::open);
  CHECK(f.breakers().at("a").half_open_at() == 50 + 6000);
  CHECK(f.breakers().at("b").state() == breaker_state::half_open);
  CHECK(f.breakers().at("c").state() == breaker_state::closed);
  // Unreadable: every breaker probes first.
  flow_control g{limits, 0};
  g.hold_breakers();
  g.restore_breakers({}, false, 100000, 0);
  for (auto& [key, b] : g.breakers())
    CHECK(b.state() == breaker_state::half_open);
}

TEST_CASE("flow: a breaker opened at another coordinator opens this one, its "
          "cooldown counting from then, and an opening whose cooldown is "
          "over is not followed",
          "[flow]") {
  flow_limits limits;
  limits.breakers["a"] = {2, 10000, 1, {}, {}};
  limits.breakers["b"] = {2, 10000, 1, {}, {}};
  limits.breakers["c"] = {2, 10000, 1, {}, {}};
  flow_control f{limits, 0};
  f.hold_breakers();
  f.restore_breakers({}, true, 100000, 1000);
  f.drain_changes();
  // (sequence, key, wall-clock ms, detail); wall clock 100,000 at flow
  // time 1,000. a opened elsewhere 2 s ago; c's opening is over; d is not
  // declared here; malformed or unreachable times are skipped.
  CHECK(f.follow_opened({"5",
                         "a",
                         "98000",
                         "3 failure(s) in a row", //
                         "6",
                         "c",
                         "90000",
                         "long ago", //
                         "7",
                         "d",
                         "99000",
                         "", //
                         "8",
                         "b",
                         "99x",
                         "", //
                         "9",
                         "b",
                         "100000000000000000",
                         ""},
                        100000, 1000));
  CHECK(f.breakers().at("a").state() == breaker_state::open);
  CHECK(f.breakers().at("a").half_open_at() == 1000 - 2000 + 10000);
  CHECK(f.breakers().at("b").state() == breaker_state::closed);
  CHECK(f.breakers().at("c").state() == breaker_state::closed);
  // Counted apart from the openings on its own failures.
  CHECK(f.breakers().at("a").followed_count() == 1);
  CHECK(f.breakers().at("a").opened_count() == 0);
  CHECK(f.to_json(1000, {}).find("\"times_opened\":0,\"times_followed\":1,")
        != std::string::npos);
  auto log = f.drain_changes();
  REQUIRE(log.size() == 1);
  CHECK(log[0].key == "a");
  CHECK(log[0].state == "open");
  CHECK(log[0].wall_ms == 98000); // recorded with the time it opened there
  CHECK(log[0].detail
        == "opened at another coordinator: 3 failure(s) in a row");
  // While open: an echo (another's copy, the same time) changes nothing; a
  // later opening moves the cooldown's start; neither is recorded.
  CHECK_FALSE(f.follow_opened(
      {"10", "a", "98000", "opened at another coordinator: x"}, 100500, 1500));
  CHECK(f.breakers().at("a").half_open_at() == 9000);
  CHECK_FALSE(
      f.follow_opened({"11", "a", "99500", "a probe failed"}, 100500, 1500));
  CHECK(f.breakers().at("a").half_open_at() == 1500 - 1000 + 10000);
  CHECK(f.drain_changes().empty());
  // A clock ahead: an opening stamped later than now counts from now, and
  // is recorded at now.
  CHECK(f.follow_opened({"12", "c", "400000", "clock ahead"}, 100500, 1500));
  CHECK(f.breakers().at("c").half_open_at() == 1500 + 10000);
  log = f.drain_changes();
  REQUIRE(log.size() == 1);
  CHECK(log[0].wall_ms == 100500);
  // Open already, it does not take another opening stamped after now as
  // its cooldown's start (nor one passed again).
  CHECK_FALSE(
      f.follow_opened({"13", "c", "400000", "clock ahead"}, 101000, 2000));
  CHECK(f.breakers().at("c").half_open_at() == 1500 + 10000);
  // b opens here, half-opens and probes; the echo of its own opening comes
  // back past its cooldown and is skipped; another's later opening opens it
  // again, and its probe becomes an ordinary attempt.
  auto flow_b = f.intern(std::vector<std::string>{}, "b");
  for (int i = 0; i < 2; ++i)
    f.outcome(flow_b, 0, false, "e", 2000 + i); // wall 101,001
  CHECK(f.breakers().at("b").state() == breaker_state::open);
  CHECK_FALSE(f.gate(flow_b, 12001)); // half-open: may probe
  auto probe = f.take(flow_b, 12001);
  CHECK(probe != 0);
  CHECK(f.breakers().at("b").state() == breaker_state::half_open);
  f.drain_changes();
  CHECK_FALSE(f.follow_opened(
      {"14", "b", "101001", "opened at another coordinator: mine"}, 111100,
      12101));
  CHECK(f.breakers().at("b").state() == breaker_state::half_open);
  CHECK(
      f.follow_opened({"14", "b", "111050", "a probe failed"}, 111100, 12101));
  CHECK(f.breakers().at("b").state() == breaker_state::open);
  CHECK(f.breakers().at("b").probes_running() == 0);
  CHECK(f.breakers().at("b").half_open_at() == 12051 + 10000);
  f.outcome(flow_b, probe, true, "", 12200);
  CHECK(f.breakers().at("b").state() == breaker_state::open);
  log = f.drain_changes();
  REQUIRE(log.size() == 1);
  CHECK(log[0].detail == "opened at another coordinator: a probe failed");
}
