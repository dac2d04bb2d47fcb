#include "runtime/type_ids.hpp"

#include "model_samples.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/deep_to_string.hpp>
#include <caf/message.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

using namespace drover;

namespace {

/// A small actor system with Drover's types registered, as every node has.
struct fixture {
  fixture() : sys{configure(cfg)} {}

  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.max-threads", 1);
    register_types(cfg);
    return cfg;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
};

/// Type IDs covered by the round trips below.
std::set<caf::type_id_t> covered;

/// Serializes `x` with CAF's binary serializer (through our `inspect`,
/// i.e. as Cap'n Proto bytes) and reads it back, both as a plain value and
/// inside a caf::message (which needs the type registered by name).
template <class T>
void check_caf_round_trip(caf::actor_system& sys, const T& x) {
  INFO("type " << caf::type_name<T>::value);
  covered.insert(caf::type_id<T>::value);
  {
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    auto err = sink(const_cast<T&>(x));
    REQUIRE_FALSE(err);
    T y;
    caf::binary_deserializer source{sys, buf};
    err = source(y);
    REQUIRE_FALSE(err);
    CHECK(y == x);
  }
  {
    auto msg = caf::make_message(x);
    std::vector<char> buf;
    caf::binary_serializer sink{sys, buf};
    REQUIRE_FALSE(sink(msg));
    caf::message copy;
    caf::binary_deserializer source{sys, buf};
    REQUIRE_FALSE(source(copy));
    REQUIRE(copy.size() == 1);
    REQUIRE(copy.match_element<T>(0));
    CHECK(copy.get_as<T>(0) == x);
  }
}

} // namespace

TEST_CASE("every type of the type-ID block round-trips through CAF",
          "[type_ids]") {
  fixture f;
  covered.clear();
  check_caf_round_trip(f.sys, samples::spec());
  check_caf_round_trip(f.sys, samples::record());
  check_caf_round_trip(f.sys, samples::event(event_kind::retry_scheduled));
  check_caf_round_trip(f.sys, samples::progress());
  check_caf_round_trip(f.sys, samples::registration());
  check_caf_round_trip(f.sys, samples::leases());
  check_caf_round_trip(f.sys, samples::beat());
  check_caf_round_trip(f.sys, samples::progress_updates());
  check_caf_round_trip(f.sys, samples::completions());
  check_caf_round_trip(f.sys, samples::reply());
  check_caf_round_trip(f.sys, samples::tree());
  check_caf_round_trip(f.sys, samples::snapshot());
  check_caf_round_trip(
      f.sys, std::vector<job_record>{samples::record(), job_record{}});
  std::vector<job_event> events;
  for (auto kind : samples::all_event_kinds)
    events.push_back(samples::event(kind));
  check_caf_round_trip(f.sys, events);
  check_caf_round_trip(f.sys, samples::make_lease("job-7", 4));
  check_caf_round_trip(f.sys,
                       samples::done(completion_outcome::failed_permanent));
  submit_request req;
  req.type = "exec";
  req.input = R"({"argv": ["true"]})";
  req.tenant = "acme";
  req.idempotency_key = "k-1";
  req.resources = {{"gpu", 1}};
  req.priority = 0;
  req.run_at = std::string{"2026-12-01T10:00:00Z"};
  req.max_attempts = 4;
  req.timeout_ms = 600000;
  req.backoff = backoff_policy{500, 9000, 3.0, 0.5};
  check_caf_round_trip(f.sys, req);
  check_caf_round_trip(f.sys, submit_request{});
  check_caf_round_trip(f.sys,
                       std::vector<submit_request>{req, submit_request{}});
  job_query q;
  q.status = 5;
  q.dead_lettered = true;
  q.tenant = "acme";
  q.type = "exec";
  q.after = "j0000000000001";
  q.limit = 50;
  check_caf_round_trip(f.sys, q);
  queue_stats st;
  st.depth = {1, 2, 3};
  st.oldest_age_ms = {4, 5, 6};
  st.dispatched = {7, 8, 9};
  st.delayed = 10;
  st.running = 11;
  st.idle_workers = 12;
  st.completed = 13;
  st.failed = 14;
  st.cancelled = 15;
  st.retried = 16;
  check_caf_round_trip(f.sys, st);
  {
    // The cluster's actor handles (runtime/cluster_protocol.hpp).
    auto agent = f.sys.spawn([]() -> worker_agent_actor::behavior_type {
      return {
          [](lease_atom, lease_batch&) {},
          [](cancel_atom, std::string&, uint32_t) {},
          [](abandon_atom, std::string&, uint32_t) {},
      };
    });
    auto link = f.sys.spawn([]() -> node_link_actor::behavior_type {
      return {
          [](heartbeat_atom, heartbeat&) { return coordinator_reply{}; },
          [](report_atom, progress_batch&, completion_batch&) {
            return coordinator_reply{};
          },
          [](take_atom, std::string&, uint32_t,
             uint32_t) -> caf::result<uint32_t, int64_t> {
            return caf::result<uint32_t, int64_t>(0u, int64_t{0});
          },
      };
    });
    check_caf_round_trip(f.sys, agent);
    check_caf_round_trip(f.sys, link);
    caf::anon_send_exit(agent, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(link, caf::exit_reason::user_shutdown);
  }
  // Adding a type to the block without a round trip above fails here.
  constexpr auto block_size
      = caf::id_block::drover::end - caf::id_block::drover::begin;
  CHECK(covered.size() == block_size);
  for (auto id : covered) {
    CHECK(id >= caf::id_block::drover::begin);
    CHECK(id < caf::id_block::drover::end);
  }
}

TEST_CASE("the block starts at CAF's first custom type ID", "[type_ids]") {
  CHECK(caf::id_block::drover::begin == caf::first_custom_type_id);
  CHECK(caf::type_id<drover::job_spec>::value == caf::first_custom_type_id);
  CHECK(std::string{caf::type_name<drover::lease_batch>::value}
        == "drover::lease_batch");
}

TEST_CASE("CAF's stringification renders messages as JSON", "[type_ids]") {
  auto spec = samples::spec();
  auto text = caf::deep_to_string(spec);
  CHECK_THAT(text, Catch::Contains(R"("type":"video.transcode")"));
  auto msg = caf::make_message(samples::beat());
  CHECK_THAT(caf::deep_to_string(msg), Catch::Contains(R"("nodeId":"node-b")"));
  CHECK_THAT(caf::to_string(msg), Catch::Contains(R"("nodeId":"node-b")"));
  submit_request req;
  req.type = "exec";
  req.priority = 0;
  CHECK(caf::deep_to_string(req) == R"({"type":"exec","priority":"high"})");
  CHECK_THAT(caf::deep_to_string(caf::make_message(job_query{})),
             Catch::Contains(R"("limit":100)"));
}

TEST_CASE("bad bytes from a peer are an error, not an exception",
          "[type_ids]") {
  fixture f;
  SECTION("garbage where a job_spec's bytes should be") {
    std::vector<char> garbage{'n', 'o', 't', ' ', 'c', 'a', 'p', 'n'};
    std::vector<char> buf;
    caf::binary_serializer sink{f.sys, buf};
    REQUIRE_FALSE(sink(garbage));
    job_spec y;
    caf::binary_deserializer source{f.sys, buf};
    caf::error err;
    REQUIRE_NOTHROW(err = source(y));
    REQUIRE(err);
    CHECK(err.category() == errc_category);
    CHECK(y == job_spec{});
  }
  SECTION("a valid message cut short") {
    auto bytes = to_bytes(samples::record());
    bytes.resize(bytes.size() / 2);
    std::vector<char> buf;
    caf::binary_serializer sink{f.sys, buf};
    REQUIRE_FALSE(sink(bytes));
    job_record y;
    caf::binary_deserializer source{f.sys, buf};
    caf::error err;
    REQUIRE_NOTHROW(err = source(y));
    REQUIRE(err);
    CHECK(is(err, errc::truncated));
  }
}
