// Codec tests, model types: every struct round-trips through bytes and
// JSON, model enums mirror the schema's, JSON's shape. Helpers:
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
