// The nodes and flow views of coordinators sharing the partitions, merged
// by a sharing gateway node (runtime/view_merge.hpp).

#include "runtime/view_merge.hpp"
#include "support/json_value.hpp"

#include <catch2/catch.hpp>

using namespace drover;
using drover::testing::json_value;

TEST_CASE("a sharing gateway's nodes view lists every coordinator's nodes "
          "and adds up the jobs without a worker",
          "[view_merge]") {
  std::vector<view_part> parts{
      {"10.0.0.5:7420",
       R"({"nodes":[{"node":"w1.c1","role":"worker","running":2}],)"
       R"("coordinators":[{"node_id":"c1"},{"node_id":"c2"}],)"
       R"("waiting_without_worker":[{"resource_class":"gpu",)"
       R"("job_type":"transcode","jobs":12}]})"},
      {"10.0.0.6:7420",
       R"({"nodes":[{"node":"w1.c2","role":"worker","running":1},)"
       R"({"node":"gw","role":"gateway"}],)"
       R"("coordinators":[{"node_id":"c1"},{"node_id":"c2"}],)"
       R"("waiting_without_worker":[{"resource_class":"gpu",)"
       R"("job_type":"transcode","jobs":3},{"resource_class":"cpu",)"
       R"("job_type":"x","jobs":1,"resources":{"mem":2}}]})"}};
  auto merged = merge_nodes_views(parts);
  REQUIRE(merged);
  auto v = json_value::parse(*merged);
  REQUIRE(v["nodes"].size() == 3);
  CHECK(v["nodes"][0]["node"].str() == "w1.c1");
  CHECK(v["nodes"][0]["coordinator"].str() == "10.0.0.5:7420");
  CHECK(v["nodes"][0]["running"].num() == 2);
  CHECK(v["nodes"][2]["node"].str() == "gw");
  CHECK(v["nodes"][2]["coordinator"].str() == "10.0.0.6:7420");
  CHECK(v["coordinators"].size() == 2);
  REQUIRE(v["waiting_without_worker"].size() == 2);
  CHECK(v["waiting_without_worker"][0]["jobs"].num() == 15);
  CHECK(v["waiting_without_worker"][1]["resources"]["mem"].num() == 2);

  // Without the database's coordinators (PostgreSQL slow): left out.
  auto bare = merge_nodes_views({{"a:1", R"({"nodes":[]})"}});
  REQUIRE(bare);
  CHECK(*bare == R"({"nodes":[]})");
  // A part that is not its view: no merge, never a guess.
  for (const char* bad :
       {"", "[]", R"({"nodes":{}})", R"({"nodes":[1]})",
        R"({"nodes":[],"waiting_without_worker":3})", R"({"nodes":[)"})
    CHECK_FALSE(merge_nodes_views({parts[0], {"b:1", bad}}));
}

TEST_CASE("a sharing gateway's flow view adds up the coordinators' shares "
          "of a rate and shows a breaker's worst state",
          "[view_merge]") {
  auto part = [](const char* who, const char* rate, const char* breaker,
                 const char* more) {
    return view_part{who, std::string{R"({"rate_limits":[)"} + rate
                              + R"(],"breakers":[)" + breaker + "]" + more
                              + "}"};
  };
  std::vector<view_part> parts{
      part("c1:1",
           R"({"key":"smtp","rate_per_second":14,"burst":14,"share":0.333,)"
           R"("tokens":3.41,"granted":52013,"waiting":812})",
           R"({"key":"smtp","state":"closed","failures_in_row":2,)"
           R"("failures_to_open":5,"window_calls":null,"probes_running":0,)"
           R"("times_opened":2,"times_followed":1,"codes":["smtp_down"],)"
           R"("waiting":0})",
           R"(,"control_log":[{"sequence":7}],)"
           R"("resource_pools":{"n1":{"gpu":{"total":4,"used":1}}})"),
      part("c2:1",
           R"({"key":"smtp","rate_per_second":14,"burst":14,"share":0.666,)"
           R"("tokens":1.2,"granted":7,"waiting":3},)"
           R"({"key":"api","rate_per_second":5,"burst":1,"share":0.666,)"
           R"("tokens":0,"granted":1,"waiting":0})",
           R"({"key":"smtp","state":"open","failures_in_row":0,)"
           R"("failures_to_open":5,"window_calls":null,"probes_running":1,)"
           R"("times_opened":3,"times_followed":4,"codes":["smtp_down"],)"
           R"("waiting":5})",
           R"(,"control_log":[{"sequence":7}],)"
           R"("resource_pools":{"n1":{"gpu":{"total":4,"used":2}}})")};
  auto merged = merge_flow_views(parts);
  REQUIRE(merged);
  auto v = json_value::parse(*merged);
  REQUIRE(v["rate_limits"].size() == 2);
  const auto& api = v["rate_limits"][0];
  const auto& smtp = v["rate_limits"][1];
  CHECK(api["key"].str() == "api");
  CHECK(api["share"].num() == Approx(0.666));
  CHECK(smtp["rate_per_second"].num() == 14);
  CHECK(smtp["share"].num() == Approx(0.999));
  CHECK(smtp["tokens"].num() == Approx(4.61));
  CHECK(smtp["granted"].num() == 52020);
  CHECK(smtp["waiting"].num() == 815);
  REQUIRE(v["breakers"].size() == 1);
  const auto& b = v["breakers"][0];
  CHECK(b["state"].str() == "open");
  CHECK(b["states"]["c1:1"].str() == "closed");
  CHECK(b["states"]["c2:1"].str() == "open");
  CHECK(b["failures_in_row"].num() == 2);
  CHECK(b["times_opened"].num() == 5);
  CHECK(b["times_followed"].num() == 5);
  CHECK(b["probes_running"].num() == 1);
  CHECK(b["waiting"].num() == 5);
  CHECK(b["window_calls"].is_null());
  CHECK(b["codes"][0].str() == "smtp_down");
  CHECK(v["control_log"].size() == 1);
  CHECK(v["resource_pools"]["n1"]["gpu"]["total"].num() == 4);
  CHECK(v["resource_pools"]["n1"]["gpu"]["used"].num() == 3);
  // A part without its lists, or with a list of something else: no merge.
  CHECK_FALSE(merge_flow_views({parts[0], {"c3:1", R"({"rate_limits":[]})"}}));
  CHECK_FALSE(merge_flow_views(
      {parts[0], {"c3:1", R"({"rate_limits":[],"breakers":["x"]})"}}));
  CHECK_FALSE(merge_flow_views(
      {parts[0],
       {"c3:1", R"({"rate_limits":[],"breakers":[],"resource_pools":[]})"}}));
}

TEST_CASE("a sharing gateway's view merge refuses numbers JSON cannot hold "
          "and nesting past the codec's limit",
          "[view_merge]") {
  auto flow = [](const std::string& granted) {
    return R"({"rate_limits":[{"key":"k","rate_per_second":1,"burst":1,)"
           R"("share":0.5,"tokens":0,"granted":)"
           + granted + R"(,"waiting":0}],"breakers":[]})";
  };
  // Two parts near the largest double: their sum overflows.
  CHECK_FALSE(
      merge_flow_views({{"a:1", flow("1e308")}, {"b:1", flow("1e308")}}));
  CHECK_FALSE(merge_flow_views({{"a:1", flow("1e999")}}));
  auto fine = merge_flow_views({{"a:1", flow("12345.67")}});
  REQUIRE(fine);
  auto v = json_value::parse(*fine);
  CHECK(v["rate_limits"][0]["granted"].num() == Approx(12345.67));
  std::string deep = R"({"nodes":[{"node":"x","role":"worker","extra":)";
  for (int i = 0; i < 200; ++i)
    deep += "[";
  for (int i = 0; i < 200; ++i)
    deep += "]";
  deep += "}]}";
  CHECK_FALSE(merge_nodes_views({{"a:1", deep}}));
}

TEST_CASE("a sharing gateway's merged view names the coordinators it has no "
          "part from",
          "[view_merge]") {
  auto merged = merge_nodes_views({{"a:1", R"({"nodes":[]})"}});
  REQUIRE(merged);
  auto some = with_unreached(*merged, {"10.0.0.7:7420", "b\"c:1"});
  auto v = json_value::parse(some);
  CHECK(v["nodes"].size() == 0);
  REQUIRE(v["unreached_coordinators"].size() == 2);
  CHECK(v["unreached_coordinators"][0].str() == "10.0.0.7:7420");
  CHECK(v["unreached_coordinators"][1].str() == "b\"c:1");
  // None missing: the member is there, empty (a reader can rely on it).
  CHECK(with_unreached(*merged, {})
        == R"({"nodes":[],"unreached_coordinators":[]})");
  CHECK(with_unreached("{}", {"a:1"})
        == R"({"unreached_coordinators":["a:1"]})");
}
