// Codec tests, bad input: truncated and oversized bytes, traversal and
// nesting limits, malformed JSON, unknown enum values, garbage, and JSON
// text checks. Helpers: tests/support/codec_checks.hpp.

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

TEST_CASE("truncated bytes are errc::truncated", "[codec][bytes]") {
  auto bytes = to_bytes(samples::record());
  REQUIRE(bytes.size() > 64);
  for (size_t cut : {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9},
                     size_t{16}, size_t{20}, bytes.size() / 2, bytes.size() - 9,
                     bytes.size() - 8, bytes.size() - 1}) {
    INFO("cut at " << cut << " of " << bytes.size());
    caf::expected<job_record> x{job_record{}};
    REQUIRE_NOTHROW(x = from_bytes<job_record>(bytes.data(), cut));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::truncated);
  }
}

TEST_CASE("sizes that don't match the message", "[codec][bytes]") {
  auto bytes = to_bytes(samples::spec());
  SECTION("trailing bytes, odd or whole words, are malformed") {
    for (size_t extra : {1, 3, 8, 13}) {
      INFO("extra " << extra);
      auto padded = bytes;
      padded.resize(bytes.size() + extra, '\0');
      auto x = from_bytes<job_spec>(padded);
      REQUIRE_FALSE(x);
      CHECK(code_of(x.error()) == errc::malformed);
      CHECK_THAT(describe(x.error()), Catch::Contains("past the message"));
    }
  }
  SECTION("a segment table announcing too many segments is malformed") {
    std::vector<char> forged(16, '\0');
    forged[0] = forged[1] = '\xff'; // 65536 segments
    auto x = from_bytes<job_spec>(forged);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::malformed);
  }
  SECTION("an empty first segment is malformed") {
    std::vector<char> forged(8, '\0');
    auto x = from_bytes<job_spec>(forged);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::malformed);
  }
}

TEST_CASE("a job spec's concurrency key and limit come together or not at "
          "all",
          "[codec][bytes]") {
  auto decode = [](const std::string& key, uint32_t limit) {
    auto x = samples::spec();
    x.concurrency_key = key;
    x.concurrency_limit = limit;
    return from_bytes<job_spec>(to_bytes(x));
  };
  auto ok = decode("user:1", 1000000);
  REQUIRE(ok);
  CHECK(ok->concurrency_limit == 1000000);
  REQUIRE(decode("", 0));
  auto refused = [](const caf::expected<job_spec>& x) {
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()),
               Catch::Contains("JobSpec.concurrencyLimit"));
  };
  refused(decode("user:1", 0));
  refused(decode("user:1", 1000001));
  refused(from_json<job_spec>(R"({"type": "t", "concurrencyLimit": 3})"));
}

TEST_CASE("a job spec's extra rate limits need its first and are at most 3",
          "[codec][bytes]") {
  auto x = samples::spec();
  x.extra_rate_limit_keys = {"b", "c", "d"};
  auto back = from_bytes<job_spec>(to_bytes(x));
  REQUIRE(back);
  CHECK(back->extra_rate_limit_keys == x.extra_rate_limit_keys);
  x.extra_rate_limit_keys.push_back("e");
  auto four = from_bytes<job_spec>(to_bytes(x));
  REQUIRE_FALSE(four);
  CHECK_THAT(describe(four.error()), Catch::Contains("more than 3"));
  auto alone
      = from_json<job_spec>(R"({"type": "t", "extraRateLimitKeys": ["b"]})");
  REQUIRE_FALSE(alone);
  CHECK_THAT(describe(alone.error()), Catch::Contains("without rateLimitKey"));
}

TEST_CASE("input over max_bytes is errc::too_large", "[codec]") {
  decode_limits limits;
  auto bytes = to_bytes(samples::record());
  auto json = to_json(samples::record());
  limits.max_bytes = bytes.size() - 8;
  auto x = from_bytes<job_record>(bytes, limits);
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::too_large);
  limits.max_bytes = json.size() - 1;
  auto y = from_json<job_record>(json, limits);
  REQUIRE_FALSE(y);
  CHECK(code_of(y.error()) == errc::too_large);
  limits.max_bytes = json.size();
  CHECK(from_json<job_record>(json, limits));
  SECTION("the default is 16 MiB, checked before anything else") {
    std::string huge((size_t{16} << 20) + 1, ' ');
    auto z = from_json<job_spec>(huge);
    REQUIRE_FALSE(z);
    CHECK(code_of(z.error()) == errc::too_large);
  }
}

TEST_CASE("the traversal limit is enforced", "[codec][bytes]") {
  decode_limits limits;
  limits.traversal_limit_words = 16;
  auto x = from_bytes<job_record>(to_bytes(samples::record()), limits);
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::too_large);
  CHECK_THAT(describe(x.error()), Catch::Contains("traversal limit"));
}

TEST_CASE("a huge list of empty structs in a tiny message is refused",
          "[codec][bytes]") {
  // Hand-made message: LeaseBatch whose `leases` claims 1M zero-size
  // elements in no space at all. Cap'n Proto accepts it (it charges one
  // word per element to the 8M-word traversal limit); the codec must not
  // allocate a million leases for 32 bytes of input.
  uint64_t words[4] = {
      uint64_t{3} << 32,        // 1 segment of 3 words
      uint64_t{1} << 48,        // root: struct, 0 data, 1 ptr
      1 | (uint64_t{7} << 32),  // list, composite, 0 words
      (uint64_t{1000000} << 2), // tag: 1M elements of size 0
  };
  std::vector<char> bytes(sizeof(words));
  std::memcpy(bytes.data(), words, sizeof(words));
  auto x = from_bytes<lease_batch>(bytes);
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::too_large);
  CHECK_THAT(describe(x.error()), Catch::Contains("LeaseBatch.leases"));
}

TEST_CASE("nesting beyond the limits is errc::too_deep", "[codec]") {
  SECTION("bytes: a tree deeper than nesting_limit") {
    auto deep = to_bytes(samples::chain(100));
    auto x = from_bytes<tree_node>(deep);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::too_deep);
    // A tree of 30 levels fits the default limit.
    check_round_trip(samples::chain(30));
  }
  SECTION("bytes: a lower nesting_limit applies") {
    decode_limits limits;
    limits.nesting_limit = 4;
    auto x = from_bytes<tree_node>(to_bytes(samples::tree()), limits);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::too_deep);
  }
  SECTION("JSON: a tree deeper than max_json_depth") {
    auto json = to_json(samples::chain(40));
    auto x = from_json<tree_node>(json);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::too_deep);
    decode_limits limits;
    limits.max_json_depth = 128;
    auto y = from_json<tree_node>(json, limits);
    REQUIRE(y);
    CHECK(*y == samples::chain(40));
  }
  SECTION("JSON: job input nested deeper than max_json_depth") {
    std::string input(100, '[');
    input += std::string(100, ']');
    auto x = from_json<job_spec>(R"({"input":)" + input + "}");
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::too_deep);
    CHECK(code_of(validate_json(input)) == errc::too_deep);
  }
}

TEST_CASE("malformed and mistyped JSON", "[codec][json]") {
  struct bad_json {
    const char* text;
    errc expected;
  };
  bad_json cases[] = {
      {"", errc::truncated},
      {"not json", errc::malformed},
      {R"({"jobId" "x"})", errc::malformed},
      {R"({"jobId": "x"} trailing)", errc::malformed},
      {R"({"jobId": )", errc::truncated},
      {R"([1, 2])", errc::malformed},         // not an object
      {R"({"jobId": 5})", errc::malformed},   // number for Text
      {R"({"spec": 5})", errc::malformed},    // number for a struct
      {R"({"stages": {}})", errc::malformed}, // object for a list
      {R"({"createdAtMs": "soon"})", errc::malformed},
      {R"({"progress": "abc"})", errc::malformed},
      {R"({"checkpoint": "!!not base64!!"})", errc::malformed},
      {R"({"checkpoint": 5})", errc::malformed},
      {R"({"attempt": -1})", errc::invalid_value},         // UInt32
      {R"({"attempt": 4294967296})", errc::invalid_value}, // UInt32
      {R"({"createdAtMs": 1.5})", errc::invalid_value},    // Int64
      {R"({"progress": 100.5})", errc::invalid_value},
      {R"({"progress": "NaN"})", errc::invalid_value},
      {R"({"etaMs": -2})", errc::invalid_value},
      {R"({"spec": {"maxAttempts": 0}})", errc::invalid_value},
      {R"({"spec": {"backoff": {"jitter": 1.5}}})", errc::invalid_value},
      {R"({"spec": {"backoff": {"multiplier": 0.5}}})", errc::invalid_value},
      {R"({"spec": {"timeoutMs": -1}})", errc::invalid_value},
      {R"({"spec": {"resources": [{"name": "gpu", "amount": 0}]}})",
       errc::invalid_value},
      {R"({"stages": [{"percent": -1}]})", errc::invalid_value},
  };
  for (const auto& c : cases) {
    INFO("JSON: " << c.text);
    caf::expected<job_record> x{job_record{}};
    REQUIRE_NOTHROW(x = from_json<job_record>(c.text));
    REQUIRE_FALSE(x);
    INFO("error: " << describe(x.error()));
    CHECK(code_of(x.error()) == c.expected);
  }
}

TEST_CASE("unknown enum values are errc::invalid_value", "[codec]") {
  SECTION("JSON: unknown name") {
    auto x = from_json<job_record>(R"({"status": "paused"})");
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()), Catch::Contains("paused"));
  }
  SECTION("JSON: enums are names, a number is the wrong type") {
    auto x = from_json<job_event>(R"({"kind": 7})");
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::malformed);
    CHECK_THAT(describe(x.error()), Catch::Contains("Expected enum value"));
  }
  SECTION("bytes: every enum of a record and a tree") {
    capnp::MallocMessageBuilder message;
    auto record = message.initRoot<schema::JobRecord>();
    record.setStatus(static_cast<schema::JobStatus>(7));
    auto x = from_bytes<job_record>(forge(message));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()), Catch::Contains("JobRecord.status"));

    record.setStatus(schema::JobStatus::FAILED);
    record.initSpec().setPriority(static_cast<schema::Priority>(3));
    x = from_bytes<job_record>(forge(message));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()), Catch::Contains("JobSpec.priority"));

    record.getSpec().setPriority(schema::Priority::LOW);
    record.initStages(1)[0].setState(static_cast<schema::StageState>(5));
    x = from_bytes<job_record>(forge(message));
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()), Catch::Contains("Stage.state"));
  }
}

TEST_CASE("event details must match the event kind", "[codec]") {
  capnp::MallocMessageBuilder message;
  auto event = message.initRoot<schema::JobEvent>();
  event.setKind(schema::EventKind::COMPLETED);
  event.initDetails().initSpec().setType("t"); // completed carries a result
  auto x = from_bytes<job_event>(forge(message));
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::invalid_value);
  CHECK_THAT(describe(x.error()), Catch::Contains("does not match kind"));
  auto y = from_json<job_event>(R"({"kind": "failed",
                                    "details": {"reason": "x"}})");
  REQUIRE_FALSE(y);
  CHECK(code_of(y.error()) == errc::invalid_value);
}

TEST_CASE("webhook attempt details are validated", "[codec]") {
  auto decode = [](auto edit) {
    capnp::MallocMessageBuilder message;
    auto event = message.initRoot<schema::JobEvent>();
    event.setKind(schema::EventKind::WEBHOOK_ATTEMPTED);
    auto w = event.initDetails().initWebhook();
    w.setTerminalSequence(3);
    w.setStatusCode(500);
    w.setOutcome(schema::WebhookOutcome::RETRYING);
    w.setNextAttemptAtMs(1700000000000);
    edit(w);
    return from_bytes<job_event>(forge(message));
  };
  auto ok = decode([](schema::WebhookAttempt::Builder) {});
  REQUIRE(ok);
  CHECK(ok->webhook.status_code == 500);
  CHECK(ok->webhook.outcome == webhook_outcome::retrying);
  auto bad = [&](auto edit, const char* fragment) {
    auto x = decode(edit);
    REQUIRE_FALSE(x);
    CHECK(code_of(x.error()) == errc::invalid_value);
    CHECK_THAT(describe(x.error()), Catch::Contains(fragment));
  };
  bad([](schema::WebhookAttempt::Builder w) { w.setStatusCode(99); },
      "WebhookAttempt.statusCode");
  bad([](schema::WebhookAttempt::Builder w) { w.setStatusCode(600); },
      "WebhookAttempt.statusCode");
  bad(
      [](schema::WebhookAttempt::Builder w) {
        w.setOutcome(static_cast<schema::WebhookOutcome>(4));
      },
      "WebhookAttempt.outcome");
  bad([](schema::WebhookAttempt::Builder w) { w.setNextAttemptAtMs(0); },
      "exactly when the outcome is retrying");
  bad(
      [](schema::WebhookAttempt::Builder w) {
        w.setOutcome(schema::WebhookOutcome::DELIVERED);
      },
      "exactly when the outcome is retrying");
  bad([](schema::WebhookAttempt::Builder w) { w.setAtMs(-1); },
      "WebhookAttempt.atMs");
  // A record that owes a webhook for an event it hasn't seen.
  capnp::MallocMessageBuilder message;
  auto record = message.initRoot<schema::JobRecord>();
  record.setSequence(4);
  record.setWebhookPendingSequence(5);
  auto r = from_bytes<job_record>(forge(message));
  REQUIRE_FALSE(r);
  CHECK_THAT(describe(r.error()),
             Catch::Contains("JobRecord.webhookPendingSequence"));
}

TEST_CASE("garbage never throws", "[codec][bytes]") {
  auto seed = test_seed();
  std::mt19937_64 rng{seed};
  auto byte = [&rng] { return static_cast<char>(rng() & 0xff); };
  const errc acceptable[] = {errc::truncated, errc::too_large, errc::malformed,
                             errc::too_deep, errc::invalid_value};
  auto check_error = [&](const caf::error& err) {
    INFO("error: " << describe(err));
    auto code = code_of(err);
    CHECK(std::find(std::begin(acceptable), std::end(acceptable), code)
          != std::end(acceptable));
  };
  SECTION("random bytes") {
    for (int i = 0; i < 2000; ++i) {
      std::vector<char> bytes(rng() % 200);
      for (auto& b : bytes)
        b = byte();
      caf::expected<job_record> x{job_record{}};
      REQUIRE_NOTHROW(x = from_bytes<job_record>(bytes));
      if (!x)
        check_error(x.error());
    }
  }
  SECTION("valid messages with random bytes flipped") {
    const std::vector<char> originals[]
        = {to_bytes(samples::record()), to_bytes(samples::leases()),
           to_bytes(samples::snapshot())};
    for (int i = 0; i < 3000; ++i) {
      auto bytes = originals[i % 3];
      // Keep the segment table (mostly) intact to reach the reader.
      for (auto flips = 1 + rng() % 4; flips > 0; --flips)
        bytes[8 + rng() % (bytes.size() - 8)] = byte();
      REQUIRE_NOTHROW([&] {
        switch (i % 3) {
          case 0:
            if (auto x = from_bytes<job_record>(bytes); !x)
              check_error(x.error());
            break;
          case 1:
            if (auto x = from_bytes<lease_batch>(bytes); !x)
              check_error(x.error());
            break;
          default:
            if (auto x = from_bytes<tree_snapshot>(bytes); !x)
              check_error(x.error());
        }
      }());
    }
  }
  SECTION("random JSON-ish text") {
    const char alphabet[] = R"({}[]:,"0123456789.-+eEtrufalsn \abc)";
    for (int i = 0; i < 2000; ++i) {
      std::string text(rng() % 80, ' ');
      for (auto& c : text)
        c = alphabet[rng() % (sizeof(alphabet) - 1)];
      caf::expected<job_event> x{job_event{}};
      REQUIRE_NOTHROW(x = from_json<job_event>(text));
      if (!x)
        check_error(x.error());
    }
  }
}

TEST_CASE("validate_json accepts one JSON value within limits", "[codec]") {
  CHECK_FALSE(validate_json(R"({"a":[1,2,{"b":null}]})"));
  CHECK_FALSE(validate_json("42"));
  CHECK(code_of(validate_json("{")) == errc::truncated);
  CHECK(code_of(validate_json("{} {}")) == errc::malformed);
  decode_limits limits;
  limits.max_bytes = 4;
  CHECK(code_of(validate_json("[1,2,3]", limits)) == errc::too_large);
}

// Cap'n Proto 0.9.2's JSON decoder misreads \uXXXX escapes with hex letters
// ("\u00e9" as "I") and doesn't pair surrogates; runtime/json_text.hpp
// repairs the text before every decode.
TEST_CASE("JSON unicode escapes decode to UTF-8", "[codec][json]") {
  SECTION("an escape with hex letters") {
    auto x
        = from_json<job_spec>(R"({"type": "caf\u00e9", "tenant": "\u00C9"})");
    REQUIRE(x);
    CHECK(x->type == "caf\xC3\xA9");
    CHECK(x->tenant == "\xC3\x89");
  }
  SECTION("a surrogate pair is one code point, 4 UTF-8 bytes") {
    auto x = from_json<job_spec>(
        R"({"type": "\ud83d\ude00", "tenant": "\uD83D\uDE00!"})");
    REQUIRE(x);
    CHECK(x->type == "\xF0\x9F\x98\x80");
    CHECK(x->tenant == "\xF0\x9F\x98\x80!");
  }
  SECTION("escaped quotes and backslashes survive") {
    auto x = from_json<job_spec>(
        R"({"type": "a\"b\\c\u005c\u0022\\u00e9", "tenant": "\"\u00e9\""})");
    REQUIRE(x);
    CHECK(x->type == R"(a"b\c\"\u00e9)");
    CHECK(x->tenant == "\"\xC3\xA9\"");
  }
  SECTION("an unpaired surrogate becomes U+FFFD, never an error") {
    for (auto text : {R"({"type": "x\ud800y"})", R"({"type": "x\udc00y"})",
                      R"({"type": "x\ud800\u0041y"})"}) {
      INFO("JSON: " << text);
      caf::expected<job_spec> x{job_spec{}};
      REQUIRE_NOTHROW(x = from_json<job_spec>(text));
      REQUIRE(x);
      CHECK_THAT(x->type, Catch::StartsWith("x\xEF\xBF\xBD"));
      CHECK_THAT(x->type, Catch::EndsWith("y"));
    }
    auto x = from_json<job_spec>(R"({"type": "\ud800\ud83d\ude00\udfff"})");
    REQUIRE(x);
    CHECK(x->type == "\xEF\xBF\xBD\xF0\x9F\x98\x80\xEF\xBF\xBD");
  }
  SECTION("embedded payloads too, in both directions") {
    auto x = from_json<job_spec>(
        R"({"input": {"s": "caf\u00e9 \ud83d\ude00", "c": "\u001b"}})");
    REQUIRE(x);
    CHECK(x->input
          == "{\"s\":\"caf\xC3\xA9 \xF0\x9F\x98\x80\",\"c\":\"\\u001b\"}");
    auto back = from_json<job_spec>(to_json(*x));
    REQUIRE(back);
    CHECK(back->input == x->input);
    // Payload text as the binary API carries it: verbatim, escapes and all.
    job_spec y;
    y.input = R"({"s":"caf\u00e9"})";
    CHECK_THAT(to_json(y), Catch::Contains("{\"s\":\"caf\xC3\xA9\"}"));
  }
  SECTION("text with control characters round-trips through JSON") {
    // to_json writes them as \u00XX escapes, some with hex letters.
    job_spec x;
    for (int c = 1; c < 0x20; ++c)
      x.type += static_cast<char>(c);
    x.type += "\x7F\"\\/ caf\xC3\xA9 \xF0\x9F\x98\x80";
    x.input = "\"" + std::string{"\\u001b\\u00e9"} + "\"";
    auto back = from_json<job_spec>(to_json(x));
    REQUIRE(back);
    CHECK(back->type == x.type);
    CHECK(back->input == "\"\\u001b\xC3\xA9\"");
  }
  SECTION("validate_json reads the same") {
    CHECK_FALSE(validate_json(R"(["caf\u00e9", "\ud83d\ude00", "\ud800"])"));
    CHECK(code_of(validate_json(R"(["\u00e9)")) == errc::truncated);
    CHECK(code_of(validate_json(R"(["\u00e9" x])")) == errc::malformed);
  }
}

TEST_CASE("JSON size limits apply to the text before escapes are rewritten",
          "[codec][json]") {
  // 12 escapes of 6 bytes: 72 bytes that rewrite to 24.
  std::string escapes;
  for (int i = 0; i < 12; ++i)
    escapes += "\\u00e9";
  auto spec = R"({"type": ")" + escapes + R"("})";
  auto value = "\"" + escapes + "\"";
  decode_limits limits;
  limits.max_bytes = spec.size() - 1;
  auto x = from_json<job_spec>(spec, limits);
  REQUIRE_FALSE(x);
  CHECK(code_of(x.error()) == errc::too_large);
  limits.max_bytes = value.size() - 1;
  CHECK(code_of(validate_json(value, limits)) == errc::too_large);
  limits.max_bytes = spec.size();
  x = from_json<job_spec>(spec, limits);
  REQUIRE(x);
  CHECK(x->type.size() == 24);
  limits.max_bytes = value.size();
  CHECK_FALSE(validate_json(value, limits));
}
