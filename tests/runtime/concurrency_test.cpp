#include "runtime/concurrency.hpp"

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("concurrency: a type's limit across tenants, per tenant, and types "
          "without one",
          "[concurrency]") {
  concurrency_slots slots{{{"export", {2, false}}, {"mail", {1, true}}}};
  CHECK(slots.key_of("resize", "a").empty());
  CHECK(slots.take("")); // no limit
  auto e = slots.key_of("export", "a");
  CHECK(e == slots.key_of("export", "b")); // one key for every tenant
  CHECK(slots.take(e));
  CHECK(slots.take(e));
  CHECK_FALSE(slots.take(e));
  CHECK(slots.running(e) == 2);
  slots.release(e);
  CHECK(slots.take(e));
  CHECK_FALSE(slots.take(e));

  auto ma = slots.key_of("mail", "a");
  auto mb = slots.key_of("mail", "b");
  CHECK(ma != mb);
  CHECK(slots.take(ma));
  CHECK_FALSE(slots.take(ma));
  CHECK(slots.take(mb)); // another tenant has its own slot
  // A tenant whose name extends another's is still another key.
  CHECK(slots.key_of("mail", "ab") != ma);
}

TEST_CASE("concurrency: an attempt found running at recovery counts even past "
          "the limit, and releases never go below zero",
          "[concurrency]") {
  concurrency_slots slots{{{"export", {1, false}}}};
  auto k = slots.key_of("export", "");
  slots.force(k);
  slots.force(k);
  CHECK(slots.running(k) == 2);
  CHECK_FALSE(slots.take(k));
  slots.release(k);
  CHECK_FALSE(slots.take(k)); // still one running: the limit is 1
  slots.release(k);
  CHECK(slots.take(k));
  slots.release(k);
  slots.release(k); // one too many: ignored
  CHECK(slots.running(k) == 0);
  CHECK(slots.take(k));
}
