#pragma once

// A store write batch for PostgreSQL tests: one job submitted.

#include "runtime/job_state.hpp"
#include "runtime/pg.hpp"

#include <catch2/catch.hpp>

#include <string>

namespace drover::testing {

/// The batch that submits job `id` of `type` (tenant "t").
inline pg::write_batch one_submit(const std::string& id,
                                  const std::string& type = "sleep") {
  job_event ev;
  ev.job_id = id;
  ev.kind = event_kind::submitted;
  ev.sequence = 1;
  ev.at_ms = 1000;
  ev.spec.tenant = "t";
  ev.spec.type = type;
  job_record rec;
  REQUIRE_FALSE(apply(rec, ev));
  pg::write_batch b;
  b.submits.push_back(rec);
  b.events.push_back(ev);
  return b;
}

} // namespace drover::testing
