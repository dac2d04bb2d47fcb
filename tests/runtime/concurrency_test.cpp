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

TEST_CASE("concurrency: a job's own key is per tenant, apart from every type's "
          "key, carries its job's limit and comes before its type's",
          "[concurrency]") {
  concurrency_slots slots{{{"export", {1, false}}}};
  auto own = own_key_of("acme", "user:1", 2);
  REQUIRE(own);
  CHECK(own_key_of("acme", "", 2) == nullptr);
  // Another tenant's key of the same name is another key; so is a type
  // named like the key.
  CHECK(own_key_of("other", "user:1", 2)->key != own->key);
  CHECK(own->key != slots.key_of("export", "acme"));
  auto keys = slots.keys_of("export", "acme", own);
  REQUIRE(keys.size == 2);
  CHECK(keys.key[0] == own->key);
  CHECK(keys.limit[0] == 2);
  CHECK(keys.key[1] == slots.key_of("export", "acme"));
  CHECK(keys.limit[1] == 0); // the configured limit
  CHECK(slots.keys_of("resize", "acme", own).size == 1);
  CHECK(slots.keys_of("resize", "acme", nullptr).size == 0);
  // The job's limit counts: 2 of the own key, then no more.
  CHECK(slots.take(own->key, own->limit));
  CHECK(slots.take(own->key, own->limit));
  CHECK_FALSE(slots.take(own->key, own->limit));
  CHECK_FALSE(slots.take(own->key, 1)); // a job with limit 1 waits too
  CHECK(slots.take(own->key, 3));       // one with limit 3 may start
  CHECK(slots.running(own->key) == 3);
  // An own key has no configured limit: without the job's it takes none.
  CHECK(slots.limit_of(own->key) == 0);
  CHECK_FALSE(slots.take(own_key_of("acme", "fresh", 1)->key));
  CHECK(slots.running(own_key_of("acme", "fresh", 1)->key) == 0);
}
