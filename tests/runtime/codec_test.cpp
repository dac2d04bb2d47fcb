#include "runtime/codec.hpp"

#include "model_samples.hpp"
#include "runtime/errors.hpp"

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

namespace {

/// The errc of `err`, or errc::none when it isn't a Drover error.
errc code_of(const caf::error& err) {
  if (err.category() != errc_category)
    return errc::none;
  return static_cast<errc>(err.code());
}

template <class T>
void check_round_trip(const T& x) {
  auto bytes = to_bytes(x);
  CHECK(bytes.size() % 8 == 0);
  auto from_b = from_bytes<T>(bytes);
  REQUIRE(from_b);
  CHECK(*from_b == x);
  auto json = to_json(x);
  INFO("JSON: " << json);
  auto from_j = from_json<T>(json);
  if (!from_j)
    FAIL(describe(from_j.error()));
  CHECK(*from_j == x);
  // Encoding is deterministic: the decoded value encodes identically.
  CHECK(to_bytes(*from_j) == bytes);
}

template <class T>
void check_round_trip_non_default(const T& x) {
  REQUIRE(x != T{});
  check_round_trip(x);
  check_round_trip(T{});
}

std::vector<char> forge(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto chars = words.asChars();
  return {chars.begin(), chars.end()};
}

/// Seed for randomised tests: $DROVER_TEST_SEED if set, else random. Always
/// printed so a failure can be replayed.
uint64_t test_seed() {
  uint64_t seed;
  // Tests run one at a time; nothing modifies the environment meanwhile.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* env = std::getenv("DROVER_TEST_SEED");
  if (env != nullptr)
    seed = std::strtoull(env, nullptr, 10);
  else
    seed = std::random_device{}();
  std::cout << "codec_test seed: " << seed
            << " (replay with DROVER_TEST_SEED=" << seed << ")\n";
  return seed;
}

} // namespace

TEST_CASE("every struct round-trips through bytes and JSON", "[codec]") {
  SECTION("job_spec and its parts") {
    check_round_trip_non_default(samples::backoff());
    check_round_trip_non_default(samples::resource("gpu", 2));
    check_round_trip_non_default(samples::spec());
  }
  SECTION("progress") {
    check_round_trip_non_default(
        samples::make_stage("x", stage_state::failed, 12.5));
    check_round_trip_non_default(samples::progress());
  }
  SECTION("job_record") {
    check_round_trip_non_default(samples::error());
    check_round_trip_non_default(samples::record());
  }
  SECTION("job_event, one per kind") {
    for (auto kind : samples::all_event_kinds) {
      INFO("kind " << to_string(kind));
      check_round_trip_non_default(samples::event(kind));
    }
  }
  SECTION("webhook attempts, one per outcome") {
    for (auto outcome : samples::all_webhook_outcomes) {
      INFO("outcome " << to_string(outcome));
      check_round_trip_non_default(samples::webhook(outcome));
      auto ev = samples::event(event_kind::webhook_attempted);
      ev.webhook = samples::webhook(outcome);
      check_round_trip(ev);
    }
  }
  SECTION("node protocol") {
    check_round_trip_non_default(samples::capacity("gpu", 2));
    check_round_trip_non_default(samples::registration());
    check_round_trip_non_default(samples::make_lease("job-9", 5));
    check_round_trip_non_default(samples::leases());
    check_round_trip_non_default(samples::running("job-9", 5));
    check_round_trip_non_default(samples::beat());
    check_round_trip_non_default(samples::progress_updates());
    check_round_trip_non_default(samples::done(completion_outcome::timed_out));
    check_round_trip_non_default(samples::completions());
  }
  SECTION("admin: a tree three levels deep") {
    auto tree = samples::tree();
    REQUIRE(tree.children.at(0).children.size() == 2);
    check_round_trip_non_default(tree);
    check_round_trip_non_default(samples::snapshot());
  }
}

namespace {

/// "one_for_one" -> "oneForOne"; camelCase input is returned unchanged.
std::string camel(const std::string& name) {
  std::string result;
  bool upper = false;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    result += upper ? static_cast<char>(c - 'a' + 'A') : c;
    upper = false;
  }
  return result;
}

/// Model enum `Model` lists the same values, in the same order and under
/// the same names, as schema enum `Wire`.
template <class Model, class Wire>
void check_enum_mirrors_schema() {
  auto enumerants = capnp::Schema::from<Wire>().getEnumerants();
  INFO("schema enum "
       << capnp::Schema::from<Wire>().getShortDisplayName().cStr());
  REQUIRE(enumerants.size() > 0);
  for (auto enumerant : enumerants) {
    auto value = static_cast<Model>(enumerant.getOrdinal());
    CHECK(camel(to_string(value)) == enumerant.getProto().getName().cStr());
  }
}

} // namespace

TEST_CASE("model enums mirror the schema enums", "[codec]") {
  check_enum_mirrors_schema<priority, schema::Priority>();
  check_enum_mirrors_schema<job_status, schema::JobStatus>();
  check_enum_mirrors_schema<stage_state, schema::StageState>();
  check_enum_mirrors_schema<event_kind, schema::EventKind>();
  check_enum_mirrors_schema<completion_outcome, schema::CompletionOutcome>();
  check_enum_mirrors_schema<webhook_outcome, schema::WebhookOutcome>();
  check_enum_mirrors_schema<child_kind, schema::ChildKind>();
  check_enum_mirrors_schema<child_state, schema::ChildState>();
  check_enum_mirrors_schema<restart_type, schema::RestartType>();
  check_enum_mirrors_schema<strategy, schema::Strategy>();
  // Our own enums have no names past the schema's last enumerant.
  auto past = [](auto schema_enum) {
    return capnp::Schema::from<decltype(schema_enum)>().getEnumerants().size();
  };
  CHECK(
      std::string{to_string(static_cast<event_kind>(past(schema::EventKind{})))}
      == "unknown");
  CHECK(
      std::string{to_string(static_cast<job_status>(past(schema::JobStatus{})))}
      == "unknown");
  CHECK(std::string{to_string(static_cast<priority>(past(schema::Priority{})))}
        == "unknown");
  CHECK(std::string{
            to_string(static_cast<stage_state>(past(schema::StageState{})))}
        == "unknown");
  CHECK(std::string{to_string(
            static_cast<completion_outcome>(past(schema::CompletionOutcome{})))}
        == "unknown");
}

TEST_CASE("enum names follow the schema and parse back", "[codec]") {
  CHECK(std::string{to_string(event_kind::retry_scheduled)}
        == "retryScheduled");
  CHECK(std::string{to_string(completion_outcome::timed_out)} == "timedOut");
  event_kind kind = event_kind::submitted;
  CHECK(from_string("deadLettered", kind));
  CHECK(kind == event_kind::dead_lettered);
  CHECK(from_string("worker_lost", kind));
  CHECK(kind == event_kind::worker_lost);
  CHECK_FALSE(from_string("bogus", kind));
  CHECK(kind == event_kind::worker_lost);
  for (auto k : samples::all_event_kinds) {
    event_kind parsed = event_kind::submitted;
    CHECK(from_string(to_string(k), parsed));
    CHECK(parsed == k);
  }
  job_status status = job_status::queued;
  CHECK(from_string("cancelled", status));
  CHECK(status == job_status::cancelled);
  CHECK(is_terminal(status));
  CHECK_FALSE(is_terminal(job_status::retrying));
  priority prio = priority::normal;
  CHECK(from_string("low", prio));
  CHECK(prio == priority::low);
  stage_state state = stage_state::pending;
  CHECK(from_string("skipped", state));
  CHECK(state == stage_state::skipped);
  completion_outcome outcome = completion_outcome::succeeded;
  CHECK(from_string("failed_permanent", outcome));
  CHECK(outcome == completion_outcome::failed_permanent);
}

TEST_CASE("JSON embeds payloads, writes 64-bit integers as strings",
          "[codec][json]") {
  SECTION("job input is embedded, not quoted") {
    auto json = to_json(samples::spec());
    CHECK_THAT(json, Catch::Contains(
                         R"("input":{"file":"in.mp4","sizes":[720,1080],)"));
    CHECK_THAT(json, !Catch::Contains(R"("input":")"));
    CHECK_THAT(json, Catch::Contains(R"("priority":"high")"));
  }
  SECTION("results are embedded in records, events and completions") {
    CHECK_THAT(to_json(samples::record()),
               Catch::Contains(R"("result":{"url":"s3://out/1.mp4")"));
    CHECK_THAT(to_json(samples::event(event_kind::completed)),
               Catch::Contains(R"("result":{"ok":true,"n":[1,2,3]})"));
    CHECK_THAT(to_json(samples::done(completion_outcome::succeeded)),
               Catch::Contains(R"("result":{"url":"s3://out/1.mp4"})"));
  }
  SECTION("any JSON value is a valid input") {
    for (std::string input : {R"("text")", "42", "[1,[2,[3]]]", "true"}) {
      job_spec x;
      x.input = input;
      auto json = to_json(x);
      CHECK_THAT(json, Catch::Contains(R"("input":)" + input));
      auto back = from_json<job_spec>(json);
      REQUIRE(back);
      CHECK(back->input == input);
    }
  }
  SECTION("input is re-serialised compactly when it comes in as JSON") {
    auto x = from_json<job_spec>(R"({"input": { "a" : [ 1 , 2.5 ] } })");
    REQUIRE(x);
    CHECK(x->input == R"({"a":[1,2.5]})");
  }
  SECTION("JSON null and no input are the same: empty") {
    auto x = from_json<job_spec>(R"({"input": null})");
    REQUIRE(x);
    CHECK(x->input.empty());
    CHECK_THAT(to_json(job_spec{}), !Catch::Contains("input"));
  }
  SECTION("input that is not JSON is shown as a JSON string") {
    job_spec x;
    x.input = "not json {";
    CHECK_THAT(to_json(x), Catch::Contains(R"("input":"not json {")"));
  }
  SECTION("64-bit integers are strings out, strings or numbers in") {
    auto json = to_json(samples::record());
    CHECK_THAT(json, Catch::Contains(R"("createdAtMs":"1700000000123")"));
    CHECK_THAT(json, Catch::Contains(R"("sequence":"18446744073709551615")"));
    auto x = from_json<job_record>(R"({"createdAtMs": 1700000000123,
                                       "startedAtMs": "1700000000456"})");
    REQUIRE(x);
    CHECK(x->created_at_ms == 1700000000123);
    CHECK(x->started_at_ms == 1700000000456);
  }
  SECTION("checkpoints are base64") {
    auto json = to_json(samples::progress());
    CHECK_THAT(json, Catch::Contains(R"("checkpoint":"Y2sAAf+AIGVuZA==")"));
  }
  SECTION("unknown fields are ignored") {
    auto x = from_json<job_spec>(R"({"type": "t", "addedLater": [1, 2]})");
    REQUIRE(x);
    CHECK(x->type == "t");
  }
}

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
