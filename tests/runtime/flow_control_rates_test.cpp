// Rate limits of runtime/flow_control.hpp: parsing --rate-limit and
// --circuit-breaker items, token buckets, a rate shared by coordinators,
// jobs naming several rate limits, and the bound on sets of keys.

#include "runtime/flow_control.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("flow: --rate-limit and --circuit-breaker items parse or say why",
          "[flow]") {
  auto r = parse_rate_limit("smtp:rate=14");
  REQUIRE(r);
  CHECK(r->first == "smtp");
  CHECK(r->second.per_second == 14);
  CHECK(r->second.burst == 14); // one second's worth by default
  r = parse_rate_limit("slow:rate=0.5,burst=3");
  REQUIRE(r);
  CHECK(r->second.per_second == 0.5);
  CHECK(r->second.burst == 3);
  CHECK(parse_rate_limit("slow:rate=0.2")->second.burst == 1);
  for (auto bad : {"smtp", "smtp=14", ":rate=1", "smtp:rate=0", "smtp:rate=-1",
                   "smtp:rate=1e3", "smtp:rate=1,burst=0", "smtp:rate=1,rate=2",
                   "smtp:burst=4", "smtp:rate=1,size=2", "smtp:rate=",
                   "s mtp:rate=1", "smtp:rate=1,", "smtp:rate=.5"}) {
    INFO(bad);
    auto x = parse_rate_limit(bad);
    REQUIRE_FALSE(x);
    CHECK(is(x.error(), errc::bad_config));
  }
  auto b = parse_breaker("sink:failures=3,cooldown=2.5,probes=2,codes=down|"
                         "timeout");
  REQUIRE(b);
  CHECK(b->first == "sink");
  CHECK(b->second.failures == 3);
  CHECK(b->second.cooldown_ms == 2500);
  CHECK(b->second.probes == 2);
  CHECK(b->second.codes == std::vector<std::string>{"down", "timeout"});
  b = parse_breaker("sink:failures=5");
  REQUIRE(b);
  CHECK(b->second.cooldown_ms == 30000);
  CHECK(b->second.probes == 1);
  CHECK(b->second.codes.empty());
  for (auto bad : {"sink", "sink:failures=0", "sink:failures=1.5",
                   "sink:cooldown=3", "sink:failures=1,probes=0",
                   "sink:failures=1,codes=", "sink:failures=1,codes=a||b",
                   "sink:failures=1,codes=worker_lost",
                   "sink:failures=1,codes=a b", "sink:failures=1,cooldown=0"}) {
    INFO(bad);
    CHECK_FALSE(parse_breaker(bad));
  }
}

TEST_CASE("flow: a breaker's ratio rule parses, and each bad field says why",
          "[flow]") {
  auto b = parse_breaker("sink:ratio=0.5,window=30");
  REQUIRE(b);
  CHECK(b->second.failures == 0); // only the ratio opens it
  CHECK(b->second.ratio == 0.5);
  CHECK(b->second.window_ms == 30000);
  CHECK(b->second.min_calls == 10);
  b = parse_breaker("sink:failures=5,ratio=1,window=1.5,min_calls=20,"
                    "cooldown=2");
  REQUIRE(b);
  CHECK(b->second.failures == 5);
  CHECK(b->second.ratio == 1);
  CHECK(b->second.window_ms == 1500);
  CHECK(b->second.min_calls == 20);
  CHECK(b->second.cooldown_ms == 2000);
  // Each refusal names what is wrong.
  for (auto [bad, why] : std::vector<std::pair<const char*, const char*>>{
           {"sink:ratio=0,window=30", "ratio must"},
           {"sink:ratio=1.5,window=30", "ratio must"},
           {"sink:ratio=-0.5,window=30", "ratio must"},
           {"sink:ratio=half,window=30", "ratio must"},
           {"sink:ratio=5e-1,window=30", "ratio must"},
           {"sink:ratio=0.5", "ratio needs window"},
           {"sink:window=30", "failures=N (in a row) or ratio"},
           {"sink:cooldown=3", "failures=N (in a row) or ratio"},
           {"sink:failures=3,window=30", "window goes with ratio"},
           {"sink:failures=3,min_calls=5", "min_calls goes with ratio"},
           {"sink:ratio=0.5,window=0.5", "window must"},
           {"sink:ratio=0.5,window=3601", "window must"},
           {"sink:ratio=0.5,window=", "expected NAME"},
           {"sink:ratio=0.5,window=30,min_calls=0", "min_calls must"},
           {"sink:ratio=0.5,window=30,min_calls=1000001", "min_calls must"},
           {"sink:ratio=0.5,window=30,min_calls=2.5", "min_calls must"},
           {"sink:ratio=0.5,ratio=0.6,window=30", "given twice"},
           {"sink:ratio=0.5,window=30,span=2", "not a field"}}) {
    INFO(bad);
    auto x = parse_breaker(bad);
    REQUIRE_FALSE(x);
    CHECK(is(x.error(), errc::bad_config));
    auto text = describe(x.error());
    INFO(text);
    CHECK(text.find(why) != std::string::npos);
  }
}

TEST_CASE("flow: a token bucket starts empty, fills at its rate, holds at "
          "most its burst",
          "[flow]") {
  token_bucket b{{10, 2, {}}, 1000};
  CHECK_FALSE(b.take(1000)); // empty at start: a new authority never doubles
  CHECK(b.next_token_ms(1000) == 1100);
  CHECK(b.take(1100));
  CHECK_FALSE(b.take(1150));
  CHECK(b.next_token_ms(1150) == 1200);
  // Ten seconds idle: two tokens, not a hundred.
  CHECK(b.take(11200));
  CHECK(b.take(11200));
  CHECK_FALSE(b.take(11200));
  // A clock that steps back grants nothing.
  CHECK_FALSE(b.take(5000));
  CHECK(b.granted() == 3);
  // Over a long window the rate holds: 1 s at 10/s from empty.
  token_bucket c{{10, 1, {}}, 0};
  int n = 0;
  for (int64_t t = 0; t <= 1000; ++t)
    n += c.take(t) ? 1 : 0;
  CHECK(n == 10);
}

TEST_CASE("flow: coordinators sharing a database each keep their share of "
          "a rate, and together the rate",
          "[flow][share]") {
  // Three coordinators own 22, 21 and 21 of 64 partitions: over ten
  // seconds at 30/s they grant 300 between them, not 900.
  flow_limits limits;
  limits.rates["api"] = rate_limit{30, 30, {}};
  int total = 0;
  for (int owned : {22, 21, 21}) {
    flow_control f{limits, 0};
    f.set_share(owned / 64.0, 0);
    auto flow = f.intern(std::string{"api"}, std::string{});
    for (int64_t t = 0; t <= 10000; ++t)
      while (!f.gate(flow, t)) {
        f.take(flow, t);
        ++total;
      }
  }
  CHECK(total >= 295);
  CHECK(total <= 300);
  // A burst below one token per coordinator is one token each; a share of
  // nothing (no partition owned) grants nothing and says when to look.
  token_bucket b{{1, 1, {}}, 0};
  b.set_share(0.25, 0);
  CHECK(b.cap() == 1.0);
  CHECK(b.rate() == 0.25);
  CHECK(b.next_token_ms(0) == 4000);
  b.set_share(0, 0);
  CHECK_FALSE(b.take(100000));
  CHECK(b.next_token_ms(100000) == 101000);
}

TEST_CASE("flow: a job naming several rate limits is dispatched with a token "
          "of each and takes mid-job tokens of each",
          "[flow]") {
  flow_limits limits;
  limits.rates["provider"] = {10, 2, {}}; // 10/s, burst 2
  limits.rates["tenant"] = {1, 1, {}};    // 1/s, burst 1
  flow_control f{limits, 0};
  auto both = f.intern(std::vector<std::string>{"provider", "tenant"}, "");
  CHECK(both != f.intern("provider", ""));
  CHECK(
      both
      == f.intern(std::vector<std::string>{"provider", "tenant", "gone"}, ""));
  CHECK(f.gates_of(both) == std::vector<std::string>{"rprovider", "rtenant"});
  // One number per set, whatever the order (taken in key order).
  CHECK(both == f.intern(std::vector<std::string>{"tenant", "provider"}, ""));
  CHECK(flow_control::key_set({"tenant", "", "provider", "tenant"})
        == std::vector<std::string>{"provider", "tenant"});
  // A job that could pass goes behind jobs already waiting at one of its
  // gates, unless it holds that limit's token.
  auto line = [](const std::string& g) { return g == "rtenant"; };
  auto behind = f.queued_gate(both, 0, line);
  REQUIRE(behind);
  CHECK(behind->gate == "rtenant");
  CHECK(behind->rate == 2);
  CHECK_FALSE(f.queued_gate(both, 2, line));
  CHECK(is(f.check(std::vector<std::string>{"provider", "nope"}, "", "a"),
           errc::invalid_request));
  CHECK_FALSE(f.check(std::vector<std::string>{"provider", "tenant"}, "", "a"));
  // Buckets start empty. At 200 ms: provider has 2, tenant 0.2: the job
  // waits at the tenant's gate, until its token at 1 s.
  auto w = f.gate(both, 200);
  REQUIRE(w);
  CHECK(w->gate == "rtenant");
  CHECK(w->until_ms == 1000);
  CHECK(w->rate == 2); // after the provider's, which it passed
  CHECK_FALSE(f.gate(both, 1000));
  f.take(both, 1000);
  auto alone = f.intern("provider", "");
  CHECK_FALSE(f.gate(alone, 1000)); // provider: 2 - 1 = 1 left
  w = f.gate(both, 1000);
  REQUIRE(w);
  CHECK(w->gate == "rtenant"); // tenant: none left
  // Mid-job: as many as the scarcest bucket has (after the first block).
  auto g = f.take_tokens(both, 5, 3000); // provider 2 (burst), tenant 1
  REQUIRE(g);
  CHECK(g->granted == 1);
  CHECK(g->retry_ms == 1000); // the tenant's next token
  // Both buckets paid: provider had 2, now 1; tenant none.
  CHECK_FALSE(f.gate(alone, 3000));
  f.take(alone, 3000);
  CHECK(f.gate(alone, 3000)); // provider empty now too
  CHECK(is(f.take_tokens(f.intern("", ""), 1, 3000).error(),
           errc::invalid_request));
}

TEST_CASE("flow: a job waiting at its second rate limit keeps the token of "
          "its first and is not asked for it again",
          "[flow]") {
  flow_limits limits;
  limits.rates["a"] = {10, 1, {}}; // 10/s, burst 1
  limits.rates["b"] = {1, 1, {}};  // 1/s, burst 1
  flow_control f{limits, 0};
  auto both = f.intern(std::vector<std::string>{"b", "a"}, "");
  auto only_a = f.intern("a", "");
  // At 100 ms: a has its token, b none: the job waits at b, second.
  auto w = f.gate(both, 100);
  REQUIRE(w);
  CHECK(w->gate == "rb");
  CHECK(w->rate == 2);
  f.take_rates(both, 100, 0, 1); // kept: a's token is the job's now
  CHECK(f.gate(only_a, 100));    // nobody else gets it
  // At 1 s b has one, and a one again: holding a's, it asks for b's only.
  auto again = f.gate(both, 1000, 1);
  CHECK_FALSE(again);
  f.take(both, 1000, 1);
  CHECK_FALSE(f.gate(only_a, 1000)); // a's token of 1 s is still there
  CHECK(f.gate(both, 1000));         // b's is gone
}

TEST_CASE("flow: beyond max_flows sets of keys a submit naming a new set is "
          "refused and one naming a set in use is not",
          "[flow]") {
  flow_limits limits;
  for (int i = 0; i < 40; ++i)
    limits.rates["k" + std::to_string(i)] = {1, 1, {}};
  flow_control f{limits, 0};
  // Every set of 1 to 4 of the 40 keys, until the table is full.
  std::vector<std::string> first;
  size_t made = 0;
  for (int a = 0; a < 40 && made < flow_control::max_flows; ++a)
    for (int b = a; b < 40 && made < flow_control::max_flows; ++b)
      for (int c = b; c < 40 && made < flow_control::max_flows; ++c)
        for (int d = c; d < 40 && made < flow_control::max_flows; ++d) {
          std::vector<std::string> keys{
              "k" + std::to_string(a), "k" + std::to_string(b),
              "k" + std::to_string(c), "k" + std::to_string(d)};
          made = std::max<size_t>(made, f.intern(keys, ""));
          if (first.empty())
            first = keys;
        }
  REQUIRE(made == flow_control::max_flows);
  auto refused = f.check(std::vector<std::string>{"k38", "k39"}, "", "t");
  CHECK(is(refused, errc::conflict));
  CHECK_FALSE(f.check(first, "", "t")); // k0 alone: in use
  CHECK_FALSE(f.check(std::vector<std::string>{}, "", "t"));
}
