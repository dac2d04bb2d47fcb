// Codec tests, job API types: submit_request, job_query and queue_stats
// through bytes and JSON, and bad job API input. Helpers:
// tests/support/codec_checks.hpp.

#include "runtime/codec.hpp"

#include "model_samples.hpp"
#include "runtime/errors.hpp"
#include "support/codec_checks.hpp"

// Only to forge messages our encoder never writes (unknown enum values,
// mismatched event details).
#include "schemas/admin.capnp.h"
#include "schemas/job_api.capnp.h"
#include "schemas/job_event.capnp.h"
#include "schemas/job_record.capnp.h"
#include "schemas/job_spec.capnp.h"
#include "schemas/node_protocol.capnp.h"
#include "schemas/progress.capnp.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <string>
#include <vector>

using namespace drover;
using namespace drover::testing::codec_checks;

// -- job API: submit_request, job_query, queue_stats --------------------------

namespace {

/// Every member set, optional ones included, to values that survive JSON.
submit_request full_request() {
  submit_request x;
  x.type = "exec";
  x.input = R"({"argv":["true"],"env":{"A":"1"}})";
  x.tenant = "acme";
  x.idempotency_key = "k-1";
  x.callback_url = "https://example.com/hook";
  x.rate_limit_key = "s3";
  x.rate_limit_keys = {"s3", "mail"};
  x.breaker_key = "svc";
  x.concurrency_key = "user:42";
  x.concurrency_limit = int64_t{3};
  x.resources = {samples::resource("gpu", 1)};
  x.priority = 2;
  x.run_at = std::string{"2026-12-01T10:00:00Z"};
  x.delay_ms = int64_t{1500};
  x.max_attempts = 4;
  x.timeout_ms = int64_t{600000};
  x.backoff = samples::backoff();
  return x;
}

job_query full_query() {
  job_query x;
  x.status = static_cast<int32_t>(job_status::failed);
  x.dead_lettered = true;
  x.tenant = "acme";
  x.type = "exec";
  x.after = "j0000000000001";
  x.limit = 50;
  return x;
}

queue_stats full_stats() {
  queue_stats x;
  x.depth = {1, 2, 18446744073709551615ull};
  x.oldest_age_ms = {4, 5, 6};
  x.dispatched = {7, 8, 9};
  x.delayed = 10;
  x.running = 11;
  x.idle_workers = 12;
  x.completed = 13;
  x.failed = 14;
  x.cancelled = 15;
  x.retried = 16;
  x.since_ms = 1764547200000;
  x.start_latency.observe(3);
  x.start_latency.observe(7000);
  x.run_time.observe(99999999);
  x.by_type.push_back(
      {"gpu", "transcode", 1, 2, 3, 4, 5, 6, 2.5, 1.25, 340.5, 7});
  x.by_type.push_back({"cpu", "export", 0, 0, 0, 0, 0, 1});
  return x;
}

/// `x` with only the optional member `member` taken from `full_request()`.
template <class Member>
submit_request only(Member submit_request::*member) {
  submit_request x;
  x.type = "exec";
  x.*member = full_request().*member;
  return x;
}

/// Writes the raw discriminant `value` into the union of the group `Group`
/// of the struct `root`: forges union members this version doesn't know.
template <class Group, class Builder>
void set_discriminant(Builder root, uint16_t value) {
  auto offset = capnp::Schema::from<Group>()
                    .getProto()
                    .getStruct()
                    .getDiscriminantOffset();
  capnp::AnyStruct::Builder any{kj::mv(root)};
  auto data = any.getDataSection();
  REQUIRE(data.size() >= (offset + 1) * 2);
  data[offset * 2] = static_cast<kj::byte>(value & 0xff);
  data[offset * 2 + 1] = static_cast<kj::byte>(value >> 8);
}

} // namespace

TEST_CASE("job API types round-trip through bytes and JSON",
          "[codec][job_api]") {
  SECTION("submit_request: all members set, and none") {
    REQUIRE_FALSE(full_request() == submit_request{});
    check_round_trip(full_request());
    check_round_trip(submit_request{});
  }
  SECTION("submit_request: each optional member alone; unset stays unset") {
    check_round_trip(only(&submit_request::priority));
    check_round_trip(only(&submit_request::run_at));
    check_round_trip(only(&submit_request::delay_ms));
    check_round_trip(only(&submit_request::max_attempts));
    check_round_trip(only(&submit_request::timeout_ms));
    check_round_trip(only(&submit_request::backoff));
    auto x
        = from_json<submit_request>(to_json(only(&submit_request::delay_ms)));
    REQUIRE(x);
    CHECK(x->delay_ms == int64_t{1500});
    CHECK_FALSE(x->priority);
    CHECK_FALSE(x->run_at);
    CHECK_FALSE(x->max_attempts);
    CHECK_FALSE(x->timeout_ms);
    CHECK_FALSE(x->backoff);
  }
  SECTION("submit_request: set to a default-looking value is still set") {
    submit_request x;
    x.priority = 1;
    x.run_at = std::string{};
    x.delay_ms = int64_t{0};
    x.max_attempts = 0;
    x.timeout_ms = int64_t{0};
    x.backoff = backoff_policy{};
    check_round_trip(x);
    auto json = to_json(x);
    CHECK_THAT(json, Catch::Contains(R"("priority":"normal")"));
    CHECK_THAT(json, Catch::Contains(R"("runAt":"")"));
    CHECK_THAT(json, Catch::Contains(R"("delayMs":"0")"));
    CHECK_THAT(json, Catch::Contains(R"("maxAttempts":0)"));
    CHECK_THAT(json, Catch::Contains(R"("backoff":{"initialDelayMs":"1000")"));
  }
  SECTION("submit_request: values prepare_spec refuses still arrive") {
    // The node answers those with a specific error; the codec only checks
    // types and enum values.
    submit_request x;
    x.type = "exec";
    x.delay_ms = int64_t{-5};
    x.max_attempts = -1;
    x.timeout_ms = int64_t{-1};
    x.run_at = std::string{"tomorrow"};
    x.resources = {samples::resource("gpu", 3), samples::resource("cpu", 1)};
    check_round_trip(x);
  }
  SECTION("job_query") {
    REQUIRE_FALSE(full_query() == job_query{});
    check_round_trip(full_query());
    check_round_trip(job_query{});
    job_query x;
    x.limit = 0; // the store refuses it, with its own error
    x.status = 0;
    check_round_trip(x);
  }
  SECTION("queue_stats") {
    REQUIRE_FALSE(full_stats() == queue_stats{});
    check_round_trip(full_stats());
    check_round_trip(queue_stats{});
  }
}

TEST_CASE("submit_request JSON is the HTTP API's request body",
          "[codec][job_api][json]") {
  SECTION("only what is set is written") {
    CHECK(to_json(submit_request{}) == "{}");
    submit_request x;
    x.type = "exec";
    CHECK(to_json(x) == R"({"type":"exec"})");
    x.priority = 0;
    x.max_attempts = 5;
    CHECK(to_json(x) == R"({"type":"exec","priority":"high","maxAttempts":5})");
  }
  SECTION("a typical request decodes to the expected struct") {
    auto x = from_json<submit_request>(
        R"({"type":"exec","input":{"argv":["true"]},"priority":"high",)"
        R"("maxAttempts":5,"timeoutMs":600})");
    REQUIRE(x);
    submit_request expected;
    expected.type = "exec";
    expected.input = R"({"argv":["true"]})";
    expected.priority = 0;
    expected.max_attempts = 5;
    expected.timeout_ms = int64_t{600};
    CHECK(*x == expected);
    CHECK_FALSE(x->run_at);
    CHECK_FALSE(x->delay_ms);
    CHECK_FALSE(x->backoff);
  }
  SECTION("field names and forms") {
    auto json = to_json(full_request());
    for (auto part :
         {R"("type":"exec")", R"("input":{"argv":["true"],)",
          R"("priority":"low")", R"("runAt":"2026-12-01T10:00:00Z")",
          R"("delayMs":"1500")", R"("maxAttempts":4)",
          R"("timeoutMs":"600000")", R"("idempotencyKey":"k-1")",
          R"("tenant":"acme")", R"("callbackUrl":"https://example.com/hook")",
          R"("resources":[{"name":"gpu","amount":1}])",
          R"("backoff":{"initialDelayMs":"250","maxDelayMs":)",
          R"("rateLimitKey":"s3")", R"("breakerKey":"svc")",
          R"("concurrencyKey":"user:42")", R"("concurrencyLimit":"3")",
          R"("rateLimitKeys":["s3","mail"])"}) {
      INFO("expected " << part << " in " << json);
      CHECK_THAT(json, Catch::Contains(part));
    }
    CHECK_THAT(json, !Catch::Contains("unset"));
    CHECK_THAT(json, !Catch::Contains(R"("value")"));
  }
  SECTION("64-bit members read from numbers or strings") {
    auto x = from_json<submit_request>(
        R"({"delayMs": 1500, "timeoutMs": "600000"})");
    REQUIRE(x);
    CHECK(x->delay_ms == int64_t{1500});
    CHECK(x->timeout_ms == int64_t{600000});
  }
  SECTION("absent and null are unset; the last occurrence wins") {
    auto x = from_json<submit_request>(
        R"({"type":"t","priority":null,"runAt":null,"delayMs":null,)"
        R"("maxAttempts":null,"timeoutMs":null,"backoff":null,)"
        R"("input":null})");
    REQUIRE(x);
    submit_request expected;
    expected.type = "t";
    CHECK(*x == expected);
    x = from_json<submit_request>(R"({"priority":"high","priority":null,)"
                                  R"("maxAttempts":null,"maxAttempts":2})");
    REQUIRE(x);
    CHECK_FALSE(x->priority);
    CHECK(x->max_attempts == 2);
  }
  SECTION("backoff members left out take the BackoffPolicy defaults") {
    auto x = from_json<submit_request>(R"({"backoff":{"jitter":0}})");
    REQUIRE(x);
    REQUIRE(x->backoff);
    backoff_policy expected;
    expected.jitter = 0;
    CHECK(*x->backoff == expected);
  }
  SECTION("unknown fields are ignored") {
    auto x = from_json<submit_request>(
        R"({"type":"t","addedLater":{"a":[1]},"unset":null,"value":1})");
    REQUIRE(x);
    CHECK(x->type == "t");
  }
}

TEST_CASE("job_query and queue_stats JSON", "[codec][job_api][json]") {
  SECTION("job_query: status is a name, absent = any") {
    CHECK_THAT(to_json(job_query{}), !Catch::Contains("status"));
    CHECK_THAT(to_json(full_query()), Catch::Contains(R"("status":"failed")"));
    auto x = from_json<job_query>(
        R"({"status":"retrying","deadLettered":true,"limit":5})");
    REQUIRE(x);
    CHECK(x->status == static_cast<int32_t>(job_status::retrying));
    CHECK(x->dead_lettered);
    CHECK(x->limit == 5);
    auto y = from_json<job_query>("{}");
    REQUIRE(y);
    CHECK(*y == job_query{});
    CHECK(y->status == -1);
    CHECK(y->limit == 100);
    y = from_json<job_query>(R"({"status":null})");
    REQUIRE(y);
    CHECK(y->status == -1);
  }
  SECTION("queue_stats: per-priority figures are named") {
    auto json = to_json(full_stats());
    CHECK_THAT(json, Catch::Contains(R"("depth":{"high":"1","normal":"2",)"
                                     R"("low":"18446744073709551615"})"));
    CHECK_THAT(json, Catch::Contains(R"("oldestAgeMs":{"high":"4",)"));
    CHECK_THAT(json, Catch::Contains(R"("idleWorkers":"12")"));
    CHECK_THAT(to_json(queue_stats{}), !Catch::Contains("depth"));
  }
}

TEST_CASE("bad job API input is an error, never a different value",
          "[codec][job_api]") {
  SECTION("JSON") {
    struct bad_json {
      const char* text;
      errc expected;
    };
    bad_json cases[] = {
        {"", errc::truncated},
        {"[1]", errc::malformed},
        {R"({"type":"t")", errc::truncated},
        {R"({"type":5})", errc::malformed},
        {R"({"priority":"urgent"})", errc::invalid_value},
        {R"({"priority":0})", errc::malformed}, // enums are names
        {R"({"priority":{"value":"high"}})", errc::malformed},
        {R"({"priority":true})", errc::malformed},
        {R"({"runAt":5})", errc::malformed},
        {R"({"delayMs":1.5})", errc::invalid_value},
        {R"({"delayMs":"soon"})", errc::malformed},
        {R"({"maxAttempts":2147483648})", errc::invalid_value}, // Int32
        {R"({"maxAttempts":"many"})", errc::malformed},
        {R"({"timeoutMs":[1]})", errc::malformed},
        {R"({"backoff":5})", errc::malformed},
        {R"({"backoff":{"jitter":1.5}})", errc::invalid_value},
        {R"({"backoff":{"multiplier":0.5}})", errc::invalid_value},
        {R"({"backoff":{"initialDelayMs":-1}})", errc::invalid_value},
        {R"({"resources":[{"name":"gpu","amount":0}]})", errc::invalid_value},
        {R"({"resources":{}})", errc::malformed},
    };
    for (const auto& c : cases) {
      INFO("JSON: " << c.text);
      caf::expected<submit_request> x{submit_request{}};
      REQUIRE_NOTHROW(x = from_json<submit_request>(c.text));
      REQUIRE_FALSE(x);
      INFO("error: " << describe(x.error()));
      CHECK(code_of(x.error()) == c.expected);
    }
    std::string deep(100, '[');
    deep += std::string(100, ']');
    auto d = from_json<submit_request>(R"({"input":)" + deep + "}");
    REQUIRE_FALSE(d);
    CHECK(code_of(d.error()) == errc::too_deep);
    auto q = from_json<job_query>(R"({"status":"paused"})");
    REQUIRE_FALSE(q);
    CHECK(code_of(q.error()) == errc::invalid_value);
    q = from_json<job_query>(R"({"limit":-1})");
    REQUIRE_FALSE(q);
    CHECK(code_of(q.error()) == errc::invalid_value);
    auto st = from_json<queue_stats>(R"({"depth":{"high":-1}})");
    REQUIRE_FALSE(st);
    CHECK(code_of(st.error()) == errc::invalid_value);
    st = from_json<queue_stats>(R"({"oldestAgeMs":{"low":-1}})");
    REQUIRE_FALSE(st);
    CHECK(code_of(st.error()) == errc::invalid_value);
    CHECK_THAT(describe(st.error()), Catch::Contains("QueueStats.oldestAgeMs"));
    st = from_json<queue_stats>(R"({"startLatency":{"counts":[1,2,3]}})");
    REQUIRE_FALSE(st);
    CHECK_THAT(describe(st.error()),
               Catch::Contains("QueueStats.startLatency"));
    st = from_json<queue_stats>(
        R"({"byType":[{"resourceClass":"cpu","oldestAgeMs":-5}]})");
    REQUIRE_FALSE(st);
    CHECK_THAT(describe(st.error()),
               Catch::Contains("TypeFigures.oldestAgeMs"));
    st = from_json<queue_stats>(
        R"({"byType":[{"resourceClass":"cpu","meanRunMs":-5}]})");
    REQUIRE_FALSE(st);
    CHECK_THAT(describe(st.error()), Catch::Contains("TypeFigures.meanRunMs"));
    st = from_json<queue_stats>(
        R"({"byType":[{"resourceClass":"cpu","arrivalsPerSecond":"NaN"}]})");
    REQUIRE_FALSE(st);
  }
  SECTION("priorities outside high..low don't survive, bytes or JSON") {
    // Not even those a uint16 would wrap into range (65536 -> high).
    for (int32_t prio : {3, 7, -1, 65535, 65536, INT32_MIN, INT32_MAX}) {
      INFO("priority " << prio);
      submit_request x;
      x.type = "exec";
      x.priority = prio;
      auto y = from_bytes<submit_request>(to_bytes(x));
      REQUIRE_FALSE(y);
      CHECK(code_of(y.error()) == errc::invalid_value);
      CHECK_THAT(describe(y.error()),
                 Catch::Contains("SubmitRequest.priority"));
      // JSON shows the raw value as a number, which reads as a type error.
      auto json = to_json(x);
      CHECK_THAT(json, Catch::Contains(R"("priority":)"));
      y = from_json<submit_request>(json);
      REQUIRE_FALSE(y);
      CHECK(code_of(y.error()) == errc::malformed);
    }
    submit_request x;
    x.priority = 7;
    CHECK_THAT(to_json(x), Catch::Contains(R"("priority":7)"));
  }
  SECTION("job_query statuses other than -1 and a job_status don't survive") {
    for (int32_t status : {7, -2, 65536, INT32_MIN}) {
      INFO("status " << status);
      job_query x;
      x.status = status;
      auto y = from_bytes<job_query>(to_bytes(x));
      REQUIRE_FALSE(y);
      CHECK(code_of(y.error()) == errc::invalid_value);
      CHECK_THAT(describe(y.error()), Catch::Contains("JobQuery.status"));
    }
  }
  SECTION("bytes: unknown enum values and union members") {
    capnp::MallocMessageBuilder message;
    auto req = message.initRoot<schema::SubmitRequest>();
    req.getPriority().setValue(static_cast<schema::Priority>(3));
    auto x = from_bytes<submit_request>(forge(message));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    req.getPriority().setValue(schema::Priority::LOW);
    REQUIRE(from_bytes<submit_request>(forge(message)));
    // A member a newer writer might add to an optional's union.
    set_discriminant<schema::SubmitRequest::MaxAttempts>(req, 2);
    x = from_bytes<submit_request>(forge(message));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()),
               Catch::Contains("SubmitRequest.maxAttempts: unknown union"));

    capnp::MallocMessageBuilder query_message;
    auto query = query_message.initRoot<schema::JobQuery>();
    query.getStatus().setValue(static_cast<schema::JobStatus>(7));
    auto q = from_bytes<job_query>(forge(query_message));
    REQUIRE_FALSE(q);
    CHECK(code_of(q.error()) == errc::invalid_value);

    capnp::MallocMessageBuilder stats_message;
    auto stats = stats_message.initRoot<schema::QueueStats>();
    stats.initOldestAgeMs().setNormal(-5);
    auto st = from_bytes<queue_stats>(forge(stats_message));
    REQUIRE_FALSE(st);
    CHECK(code_of(st.error()) == errc::invalid_value);
  }
  SECTION("bytes: truncated and garbage") {
    auto check_cuts = [](auto sample) {
      using T = decltype(sample);
      auto bytes = to_bytes(sample);
      for (size_t cut :
           {size_t{0}, size_t{7}, size_t{8}, size_t{15}, bytes.size() / 2,
            bytes.size() - 8, bytes.size() - 1}) {
        INFO("cut at " << cut << " of " << bytes.size());
        caf::expected<T> x{T{}};
        REQUIRE_NOTHROW(x = from_bytes<T>(bytes.data(), cut));
        REQUIRE_FALSE(x);
        CHECK(code_of(x.error()) == errc::truncated);
      }
    };
    check_cuts(full_request());
    check_cuts(full_query());
    check_cuts(full_stats());
    std::vector<char> garbage{'n', 'o', 't', ' ', 'c', 'a', 'p', 'n',
                              'p', 'r', 'o', 't', 'o', '!', '!', '!'};
    auto x = from_bytes<submit_request>(garbage);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) != errc::none);
    auto q = from_bytes<job_query>(garbage);
    REQUIRE_FALSE(q);
    CHECK(code_of(q.error()) != errc::none);
    auto st = from_bytes<queue_stats>(garbage);
    REQUIRE_FALSE(st);
    CHECK(code_of(st.error()) != errc::none);
  }
  SECTION("bytes: random flips never throw") {
    auto seed = test_seed();
    std::mt19937_64 rng{seed};
    const errc acceptable[]
        = {errc::truncated, errc::too_large, errc::malformed, errc::too_deep,
           errc::invalid_value};
    const auto original = to_bytes(full_request());
    for (int i = 0; i < 2000; ++i) {
      auto bytes = original;
      for (auto flips = 1 + rng() % 4; flips > 0; --flips)
        bytes[8 + rng() % (bytes.size() - 8)] = static_cast<char>(rng() & 0xff);
      caf::expected<submit_request> x{submit_request{}};
      REQUIRE_NOTHROW(x = from_bytes<submit_request>(bytes));
      if (!x) {
        INFO("error: " << describe(x.error()));
        CHECK(std::find(std::begin(acceptable), std::end(acceptable),
                        code_of(x.error()))
              != std::end(acceptable));
      }
    }
  }
}
