// What a sharing gateway reads to route a request (runtime/partition_map.hpp):
// a coordinator's partition list from another node, and the partition a
// node-API request is about.

#include "runtime/atoms.hpp"
#include "runtime/partition.hpp"
#include "runtime/partition_map.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/make_message.hpp>

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("a coordinator's partition list is read strictly",
          "[partition][share]") {
  CHECK(parse_partition_list("", 64) == std::vector<int32_t>{});
  CHECK(parse_partition_list("0", 64) == std::vector<int32_t>{0});
  CHECK(parse_partition_list("0,5,17,63", 64)
        == std::vector<int32_t>{0, 5, 17, 63});
  // Anything else is refused whole, never half read.
  for (const auto* bad : {"64", "-1", "5,5", "5,3", "1,,2", ",1", "1,", " 1",
                          "1 ", "0x1", "1;2", "99999999999", "a", "1,2,b"}) {
    INFO(bad);
    CHECK_FALSE(parse_partition_list(bad, 64));
  }
  CHECK_FALSE(parse_partition_list("3", 3));
}

TEST_CASE("a node-API request names the partition it is about",
          "[partition][share]") {
  const std::string id = "j1k8us06a36h3f-52";
  CHECK(partition_of_request(64, get_atom::value, id) == 52);
  CHECK(partition_of_request(64, events_atom::value, id) == 52);
  CHECK(partition_of_request(64, cancel_atom::value, id, std::string{"why"})
        == 52);
  CHECK(partition_of_request(64, redrive_atom::value, id) == 52);
  CHECK(partition_of_request(64, purge_atom::value, id) == 52);
  // An id whose partition the database does not have, or an unknown count.
  CHECK(partition_of_request(40, get_atom::value, id) == -1);
  CHECK(partition_of_request(0, get_atom::value, id) == -1);
  // Keyed submits by their key, keyless ones anywhere.
  submit_request keyed;
  keyed.type = "sleep";
  keyed.tenant = "acme";
  keyed.idempotency_key = "order-7";
  CHECK(partition_of_request(64, submit_atom::value, keyed)
        == partition_of_key("acme", "order-7", 64));
  submit_request keyless;
  keyless.type = "sleep";
  CHECK(partition_of_request(64, submit_atom::value, keyless) == -1);
  // Everything else, and odd shapes.
  CHECK(partition_of_request(64, stats_atom::value) == -1);
  CHECK(partition_of_request(64, list_atom::value) == -1);
  CHECK(partition_of_request(64, get_atom::value, 52) == -1);
  CHECK(partition_of_request(64, id, get_atom::value) == -1);
  CHECK(partition_of_request(64) == -1);
  // A run-time rate-limit or breaker setting: its key's partition, where
  // the control log's entry is fenced (the second is its kind, not a job
  // id); -1 while the count is not known.
  const std::string kind = "rate_limit";
  CHECK(partition_of_request(64, flow_atom::value, kind, std::string{"smtp"},
                             std::string{"rate=5"})
        == partition_of_key("rate_limit", "smtp", 64));
  CHECK(partition_of_request(0, flow_atom::value, kind, std::string{"smtp"},
                             std::string{"rate=5"})
        == -1);
  CHECK(partition_of_request(64, flow_atom::value, uint32_t{50}) == -1);
}
