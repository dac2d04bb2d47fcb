// The client's partition map (client/routes.hpp): which of its addresses
// owns the partition a request is about, from each address's answer.

#include "client/routes.hpp"

#include "runtime/partition.hpp"

#include <catch2/catch.hpp>

using namespace drover;
using drover::client_detail::route_target;
using drover::client_detail::routes;

namespace {

route_target job(const std::string& id) {
  route_target t;
  t.job_id = id;
  return t;
}

route_target keyed(const std::string& key, const std::string& tenant = {}) {
  route_target t;
  t.key = key;
  t.tenant = tenant;
  return t;
}

} // namespace

TEST_CASE("the client routes by job id and by key to the owner that "
          "answered for the partition",
          "[partition][share][client]") {
  routes r;
  CHECK_FALSE(r.owner_of(job("j1-3"))); // nothing loaded
  r.load(
      {routes::answer{"0,2", 4, ""}, std::nullopt, routes::answer{"1", 4, ""}});
  REQUIRE(r.loaded());
  CHECK(r.owner_of(job("j1-0")) == size_t{0});
  CHECK(r.owner_of(job("j1-2")) == size_t{0});
  CHECK(r.owner_of(job("j1-1")) == size_t{2});
  CHECK_FALSE(r.owner_of(job("j1-3")));    // nobody answered for it
  CHECK_FALSE(r.owner_of(job("j1-7")));    // beyond the count
  CHECK_FALSE(r.owner_of(route_target{})); // about no partition
  // A key goes to its (tenant, key) partition; the request's own tenant
  // while the keys fix none (development mode).
  for (const auto* key : {"a", "b", "c", "order-42"}) {
    INFO(key);
    auto p = partition_of_key("acme", key, 4);
    auto owner = r.owner_of(keyed(key, "acme"));
    if (p == 3)
      CHECK_FALSE(owner);
    else
      CHECK(owner == size_t{p == 1 ? 2u : 0u});
  }
}

TEST_CASE("the client's map takes the key's tenant over the request's and "
          "ignores answers that do not add up",
          "[partition][share][client]") {
  routes r;
  r.load({routes::answer{"0", 2, "acme"}, routes::answer{"1", 2, "acme"}});
  REQUIRE(r.loaded());
  for (const auto* key : {"a", "b", "c", "d"}) {
    INFO(key);
    auto p = partition_of_key("acme", key, 2);
    CHECK(r.owner_of(keyed(key, "someone-else")) == static_cast<size_t>(p));
  }
  // Answers that disagree on the count (two databases?) are no map.
  routes two;
  two.load({routes::answer{"0", 2, ""}, routes::answer{"0", 3, ""}});
  CHECK_FALSE(two.loaded());
  // A malformed list is ignored: its partitions have no owner.
  routes m;
  m.load({routes::answer{"0,0", 2, ""}, routes::answer{"1", 2, ""}});
  REQUIRE(m.loaded());
  CHECK_FALSE(m.owner_of(job("j1-0")));
  CHECK(m.owner_of(job("j1-1")) == size_t{1});
  // Nobody answered: nothing to route by (the old map stays).
  m.load({std::nullopt, std::nullopt});
  CHECK(m.owner_of(job("j1-1")) == size_t{1});
  m.forget();
  CHECK_FALSE(m.loaded());
}
