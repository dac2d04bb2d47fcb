// What a sharing coordinator computes its share over (runtime/pg_share.hpp
// share_keys): node ids, so that one restarted under its node id is the
// same member as its dead predecessor; instance ids while an older binary
// is a member; and whether a newer instance of its node id replaced it.

#include "runtime/partition.hpp"
#include "runtime/pg_share.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace drover;

namespace {

pg::sharing_member member(const std::string& node, const std::string& tag,
                          int64_t started_us, bool keyed = true) {
  pg::sharing_member m;
  m.node_id = node;
  m.instance = node + "@h:1:" + tag;
  m.keyed = keyed;
  if (keyed)
    m.key = node;
  m.started_us = started_us;
  return m;
}

pg::lease_owner owner_of(const pg::sharing_member& m) {
  pg::lease_owner o;
  o.instance = m.instance;
  o.node_id = m.node_id;
  return o;
}

} // namespace

TEST_CASE("share keys: a restarted coordinator is the same member as its "
          "predecessor",
          "[partition][share]") {
  auto c1 = member("c1", "a", 10);
  auto c2 = member("c2", "b", 20);
  auto old_c3 = member("c3", "c", 30);
  auto new_c3 = member("c3", "d", 90);
  // Before the restart, and while the dead c3's heartbeat is still fresh
  // beside the new one's: three keys, the same for everybody.
  auto before = pg::share_keys({c1, c2, old_c3}, owner_of(c1));
  auto during = pg::share_keys({c1, c2, old_c3, new_c3}, owner_of(c1));
  CHECK(before.keys == std::vector<std::string>{"c1", "c2", "c3"});
  CHECK(during.keys == before.keys);
  REQUIRE(during.mine);
  CHECK(*during.mine == 0);
  CHECK_FALSE(during.newer_twin);
  // So the new c3's share is exactly the old one's: c1 and c2 take none.
  auto as_new = pg::share_keys({c1, c2, old_c3, new_c3}, owner_of(new_c3));
  REQUIRE(as_new.mine);
  CHECK(*as_new.mine == 2);
  CHECK_FALSE(as_new.newer_twin);
  auto shares = rendezvous_shares(as_new.keys, 64);
  CHECK(shares == rendezvous_shares(before.keys, 64));
  // The old one, if it runs on (it was paused), sees it was replaced.
  auto as_old = pg::share_keys({c1, c2, old_c3, new_c3}, owner_of(old_c3));
  REQUIRE(as_old.newer_twin);
  CHECK(as_old.newer_twin->instance == new_c3.instance);
  // Started in the same microsecond: the instance id decides, one way.
  auto twin = member("c3", "e", 30);
  CHECK(pg::share_keys({old_c3, twin}, owner_of(old_c3)).newer_twin);
  CHECK_FALSE(pg::share_keys({old_c3, twin}, owner_of(twin)).newer_twin);
}

TEST_CASE("share keys: instance ids while an older binary is a member, and "
          "none of mine before my announcement is seen",
          "[partition][share]") {
  auto c1 = member("c1", "a", 10);
  auto old_binary = member("c2", "b", 20, false);
  auto view = pg::share_keys({c1, old_binary}, owner_of(c1));
  CHECK(view.keys
        == std::vector<std::string>{c1.instance, old_binary.instance});
  REQUIRE(view.mine);
  CHECK(*view.mine == 0);
  // Not visible yet: no share at all.
  auto c3 = member("c3", "c", 30);
  auto unseen = pg::share_keys({c1, old_binary}, owner_of(c3));
  CHECK_FALSE(unseen.mine);
  CHECK_FALSE(unseen.newer_twin);
  CHECK(pg::share_keys({}, owner_of(c3)).keys.empty());
}
