// Rate limits and breakers created and changed at run time
// (flow_control::set_rate, set_breaker, apply_configured): what the admin
// API does, and what a new authority restores from the control log.

#include "runtime/errors.hpp"
#include "runtime/flow_control.hpp"

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("flow settings: a rate limit created at run time starts empty and "
          "limits, and a change keeps the tokens (at most the new burst)",
          "[flow]") {
  flow_control fc{flow_limits{}, 0};
  CHECK(fc.check("made", "", "t"));
  REQUIRE_FALSE(fc.set_rate("made", rate_limit{10, 5, {}}, 1000));
  CHECK_FALSE(fc.check("made", "", "t"));
  auto flow = fc.intern("made", "");
  REQUIRE(flow != 0);
  // Empty at its creation: the first token after 100 ms.
  auto wait = fc.gate(flow, 1000);
  REQUIRE(wait);
  CHECK(wait->until_ms == 1100);
  CHECK_FALSE(fc.gate(flow, 1100));
  // Full after a second (5); a burst of 2 keeps 2 of them.
  CHECK(fc.take_tokens(flow, 1, 2100)->granted == 1); // 4 left
  REQUIRE_FALSE(fc.set_rate("made", rate_limit{1000, 2, {}}, 2100));
  CHECK(fc.take_tokens(flow, 10, 2100)->granted == 2);
  // The new rate: 1,000/s.
  CHECK(fc.take_tokens(flow, 10, 2102)->granted == 2);
}

TEST_CASE("flow settings: a breaker created at run time counts its jobs, and a "
          "change keeps its state and starts the counts over",
          "[flow]") {
  flow_control fc{flow_limits{}, 0};
  breaker_config b;
  b.failures = 2;
  b.cooldown_ms = 1000;
  REQUIRE_FALSE(fc.set_breaker("sink", b));
  auto flow = fc.intern("", "sink");
  REQUIRE(flow != 0);
  CHECK_FALSE(fc.gate(flow, 10));
  fc.take(flow, 10);
  fc.outcome(flow, 0, false, "down", 20);
  fc.take(flow, 30);
  fc.outcome(flow, 0, false, "down", 40);
  CHECK(fc.breakers().at("sink").state() == breaker_state::open);
  // Changed while open: still open, the new cooldown from its opening.
  b.failures = 5;
  b.cooldown_ms = 100;
  REQUIRE_FALSE(fc.set_breaker("sink", b));
  CHECK(fc.breakers().at("sink").state() == breaker_state::open);
  CHECK(fc.breakers().at("sink").config().failures == 5);
  CHECK(fc.breakers().at("sink").half_open_at() == 140);
}

TEST_CASE("flow settings: at most 1,000 keys of a kind, and a new authority "
          "applies the last setting of each key from the control log",
          "[flow]") {
  flow_control fc{flow_limits{}, 0};
  for (size_t i = 0; i < flow_control::max_keys; ++i)
    REQUIRE_FALSE(fc.set_rate("k" + std::to_string(i), {1, 1, {}}, 0));
  auto err = fc.set_rate("one-more", {1, 1, {}}, 0);
  REQUIRE(err);
  CHECK(is(err, errc::conflict));
  CHECK(is(fc.set_setting("rate_limit", "one-more", "rate=1", 0, true),
           errc::conflict));
  CHECK_FALSE(
      fc.set_setting("rate_limit", "k1", "rate=3", 0, true)); // a change
  // The option's parser decides, with its message; a key holding ':' and
  // an unknown kind are refused.
  auto bad = fc.set_setting("rate_limit", "k1", "rate=0", 0, true);
  CHECK(is(bad, errc::invalid_request));
  CHECK(describe(bad).find("rate must be") != std::string::npos);
  CHECK(is(fc.set_setting("rate_limit", "a:b", "rate=1", 0, true),
           errc::invalid_request));
  CHECK(is(fc.set_setting("limit", "k1", "rate=1", 0, true),
           errc::invalid_request));
  CHECK_FALSE(fc.set_rate("k1", {2, 2, {}}, 0));
  CHECK_FALSE(fc.set_setting("breaker", "b", "failures=1", 0, true));
  CHECK(fc.breakers().count("b") == 0); // checked only

  // (key, state, ms, detail): states are not settings; a setting that no
  // longer parses is skipped.
  flow_limits declared;
  declared.rates["mail"] = rate_limit{14, 14, {}};
  flow_control next{declared, 0};
  next.apply_configured("rate_limit",
                        {"mail", "active", "5", "", "mail", "configured", "9",
                         "rate=2,burst=1", "new", "configured", "9",
                         "rate=7,tenants=a|b", "bad", "configured", "9",
                         "rate=0"},
                        0);
  CHECK_FALSE(next.check("new", "", "a"));
  CHECK(next.check("new", "", "c")); // its tenants came back too
  CHECK(next.check("bad", "", "a"));
  // The setting wins over the configuration's 14/s.
  auto json = next.to_json(0, {});
  INFO(json);
  CHECK(json.find(R"("key":"mail","rate_per_second":2,"burst":1)")
        != std::string::npos);
  next.apply_configured(
      "breaker", {"sink", "configured", "9", "failures=3,cooldown=2"}, 0);
  REQUIRE(next.breakers().count("sink") == 1);
  CHECK(next.breakers().at("sink").config().failures == 3);
  CHECK(next.breakers().at("sink").config().cooldown_ms == 2000);
}
