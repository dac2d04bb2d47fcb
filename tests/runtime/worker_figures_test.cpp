// A worker node's figures when it has an agent per coordinator
// (--share-partitions): merged into one set for its metrics endpoint
// (runtime/worker_figures.hpp).

#include "runtime/worker_figures.hpp"

#include <catch2/catch.hpp>

using namespace drover;

TEST_CASE("the figures of a node's agents merge into the node's",
          "[worker][share]") {
  worker_figures a;
  a.classes["cpu"] = {2, 0, 1, 1, 0, 7};
  a.unsettled_outcomes = 1;
  a.connected = true;
  a.since_answer_ms = 120;
  a.leases_received = 10;
  a.reconnects = 0;
  worker_figures b;
  b.classes["cpu"] = {2, 0, 2, 2, 1, 5};
  b.classes["gpu"] = {1, 0, 0, 0, 0, 0};
  b.connected = true;
  b.since_answer_ms = 300;
  b.leases_received = 4;
  b.reconnects = 2;
  auto m = merge({a, b});
  CHECK(m.classes["cpu"].slots == 4);
  CHECK(m.classes["cpu"].busy == 3);
  CHECK(m.classes["cpu"].buffered == 1);
  CHECK(m.classes["cpu"].started == 12);
  CHECK(m.classes["gpu"].slots == 1);
  CHECK(m.unsettled_outcomes == 1);
  CHECK(m.connected);
  CHECK(m.since_answer_ms == 300); // the oldest answer
  CHECK(m.leases_received == 14);
  CHECK(m.reconnects == 2);
  // One agent without a connection, or never answered: the node says so.
  b.connected = false;
  b.since_answer_ms = -1;
  auto n = merge({a, b});
  CHECK_FALSE(n.connected);
  CHECK(n.since_answer_ms == -1);
  CHECK(merge({b, a}).since_answer_ms == -1);
  CHECK(merge({a}).connected);
}
