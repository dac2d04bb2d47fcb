#include "runtime/admission.hpp"

#include "runtime/errors.hpp"
#include "runtime/model.hpp"

#include <catch2/catch.hpp>

#include <vector>

using namespace drover;

namespace {

job_spec spec_of(const std::string& tenant, size_t input_bytes = 2) {
  job_spec s;
  s.type = "noop";
  s.tenant = tenant;
  s.input = std::string(input_bytes, 'x');
  return s;
}

} // namespace

TEST_CASE("admission: a tenant's cap counts waiting jobs and submissions in "
          "flight, others are not held back",
          "[admission]") {
  admission_limits limits;
  limits.tenant_waiting = 3;
  limits.tenant_waiting_caps = {{"big", 5}, {"free", 0}};
  admission_control ac{limits};
  auto a = spec_of("a");
  // Two waiting (committed), one in flight: the fourth is refused.
  auto ta = ac.tenant("a");
  ac.entered(ta, 0);
  ac.entered(ta, 1);
  auto t1 = ac.admit(a, 0);
  REQUIRE(t1);
  auto refused = ac.admit(a, 0);
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), errc::rate_limited));
  CHECK(ac.last_refusal() == admission_control::scope::tenant);
  CHECK(describe(refused.error()).find("tenant 'a' has 3 waiting jobs")
        != std::string::npos);
  CHECK(ac.refused() == 1);
  // Another tenant is admitted; per-tenant caps replace the default.
  CHECK(ac.admit(spec_of("b"), 0));
  for (int i = 0; i < 5; ++i)
    CHECK(ac.admit(spec_of("big"), 0));
  CHECK_FALSE(ac.admit(spec_of("big"), 0));
  for (int i = 0; i < 10; ++i)
    CHECK(ac.admit(spec_of("free"), 0)); // cap 0: none
  // The in-flight submission settles (the store answered), then its job
  // enters the queue: still 3. A job leaving frees a place.
  ac.settled(*t1);
  CHECK(ac.admit(a, 0));
  CHECK_FALSE(ac.admit(a, 0));
  ac.left(ta, 1);
  CHECK(ac.admit(a, 0));
  CHECK(ac.waiting("a") == 3);
  CHECK(ac.waiting("nobody") == 0);
}

TEST_CASE("admission: the node's memory bound, the store's backlog and a "
          "partition's cap refuse with overloaded",
          "[admission]") {
  SECTION("memory") {
    admission_limits limits;
    // 8 waiting entries and room for one small submission in flight.
    limits.memory_bytes = 8 * admission_control::entry_bytes + 600;
    admission_control ac{limits};
    auto t = ac.tenant("a");
    for (int i = 0; i < 8; ++i)
      ac.entered(t, 0);
    CHECK(ac.memory_bytes() == 8 * admission_control::entry_bytes);
    // A submission in flight costs its input and the event overhead.
    auto big = spec_of("a", 1000);
    auto refused = ac.admit(big, 0);
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::overloaded));
    CHECK(ac.last_refusal() == admission_control::scope::node);
    CHECK(describe(refused.error()).find("admission-queue-memory-mb")
          != std::string::npos);
    auto small = spec_of("a", 0);
    CHECK(admission_control::submission_bytes(small) <= 600);
    auto ok = ac.admit(small, 0);
    REQUIRE(ok);
    CHECK(ac.memory_bytes()
          == 8 * admission_control::entry_bytes
                 + admission_control::submission_bytes(small));
    ac.settled(*ok);
    CHECK(ac.memory_bytes() == 8 * admission_control::entry_bytes);
    CHECK(ac.in_flight() == 0);
  }
  SECTION("store backlog") {
    admission_limits limits;
    limits.store_backlog = 2;
    admission_control ac{limits};
    auto t1 = ac.admit(spec_of("a"), 0);
    auto t2 = ac.admit(spec_of("b"), 0);
    REQUIRE(t1);
    REQUIRE(t2);
    auto refused = ac.admit(spec_of("c"), 0);
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::overloaded));
    CHECK(describe(refused.error()).find("store") != std::string::npos);
    ac.settled(*t2);
    CHECK(ac.admit(spec_of("c"), 0));
  }
  SECTION("partition") {
    admission_limits limits;
    limits.partition_waiting = 2;
    admission_control ac{limits};
    auto t = ac.tenant("a");
    ac.entered(t, 7);
    ac.entered(t, 7);
    auto refused = ac.admit(spec_of("a"), 7);
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::overloaded));
    CHECK(ac.last_refusal() == admission_control::scope::partition);
    CHECK(describe(refused.error()).find("partition 7") != std::string::npos);
    CHECK(ac.admit(spec_of("a"), 8)); // another partition has room
  }
}

TEST_CASE("admission: no limits admit everything and still count",
          "[admission]") {
  admission_control ac;
  std::vector<admission_control::ticket> tickets;
  for (int i = 0; i < 1000; ++i) {
    auto t = ac.admit(spec_of("t" + std::to_string(i % 7)), i % 3);
    REQUIRE(t);
    tickets.push_back(*t);
  }
  CHECK(ac.in_flight() == 1000);
  for (auto& t : tickets)
    ac.settled(t);
  CHECK(ac.in_flight() == 0);
  CHECK(ac.memory_bytes() == 0);
  CHECK(ac.refused() == 0);
}

TEST_CASE("admission: a refused submission naming a new tenant leaves no "
          "trace of it",
          "[admission]") {
  admission_limits limits;
  limits.store_backlog = 1;
  admission_control ac{limits};
  REQUIRE(ac.admit(spec_of("first"), 0));
  for (int i = 0; i < 100; ++i)
    CHECK_FALSE(ac.admit(spec_of("t" + std::to_string(i)), 0));
  // Only the admitted tenant was interned: the next new one gets number 1.
  CHECK(ac.tenant("another") == 1);
}

TEST_CASE("admission: a job with a concurrency key of its own counts its key "
          "in the memory estimate, waiting and in flight",
          "[admission]") {
  admission_control ac{{}};
  auto t = ac.tenant("acme");
  ac.entered(t, 0, admission_control::keyed_entry_bytes(40));
  CHECK(ac.memory_bytes() == admission_control::entry_bytes + 40 + 640);
  ac.entered(t, 0);
  ac.left(t, 0, admission_control::keyed_entry_bytes(40));
  CHECK(ac.memory_bytes() == admission_control::entry_bytes);
  ac.left(t, 0);
  CHECK(ac.memory_bytes() == 0);
  job_spec plain;
  plain.type = "export";
  plain.tenant = "acme";
  auto keyed = plain;
  keyed.concurrency_key = std::string(200, 'k');
  keyed.concurrency_limit = 1;
  CHECK(admission_control::submission_bytes(keyed)
        >= admission_control::submission_bytes(plain) + 2 * 200 + 640);
}
