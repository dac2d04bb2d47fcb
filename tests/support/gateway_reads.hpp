#pragma once

// Reads of the gateway process tests (tests/nodes/gateway_*_test.cpp), each
// failing the test on an unexpected answer: a job's audit log and every
// page of a listing.

#include "support/gateway_api.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

namespace drover::testing::gateway_reads {

/// The job's audit log, as GET /api/jobs/{id}/events returns it.
inline json_value events_of(const http_client& c, const std::string& id) {
  auto res = c.get("/api/jobs/" + id + "/events");
  INFO(res.body);
  REQUIRE(res.status == 200);
  auto doc = gateway_api::body_of(res);
  REQUIRE(doc["job_id"].str() == id);
  return doc;
}

/// Every page of `target` (which has no cursor yet) with `limit`; returns
/// the ids in order and checks the paging fields on the way.
inline std::vector<std::string> all_pages(const http_client& c,
                                          const std::string& target, int limit,
                                          size_t* pages = nullptr) {
  std::vector<std::string> ids;
  std::string cursor;
  size_t n = 0;
  auto sep = target.find('?') == std::string::npos ? "?" : "&";
  for (;;) {
    REQUIRE(n < 10000);
    auto url = target + sep + "limit=" + std::to_string(limit);
    if (!cursor.empty())
      url += "&cursor=" + cursor;
    auto res = c.get(url);
    INFO(url << " -> " << res.body);
    REQUIRE(res.status == 200);
    auto doc = gateway_api::body_of(res);
    ++n;
    auto& data = doc["data"];
    CHECK(data.size() <= static_cast<size_t>(limit));
    for (auto& job : data.items())
      ids.push_back(job["job_id"].str());
    if (!doc["has_more"].boolean()) {
      CHECK(doc["next_cursor"].is_null());
      break;
    }
    CHECK(data.size() == static_cast<size_t>(limit));
    cursor = doc["next_cursor"].str();
    CHECK(cursor == ids.back());
  }
  if (pages != nullptr)
    *pages = n;
  return ids;
}

} // namespace drover::testing::gateway_reads
