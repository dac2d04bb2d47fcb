#pragma once

// A page of a job's log: the events after a sequence, at most a limit —
// what the stores, the node API, gateway nodes (towards an older
// coordinator) and the client (towards an older node) answer to a read
// from a sequence (docs/api.md, GET /api/jobs/{id}/events?after=&limit=).

#include "runtime/errors.hpp"
#include "runtime/model.hpp"

#include <caf/error.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace drover {

/// A page's `limit` as the stores check it (any page: events, recovery): within
/// [1, `most`], else errc::invalid_request naming `what`.
inline caf::error check_page_limit(uint32_t limit, uint32_t most,
                                   const char* what) {
  if (limit == 0 || limit > most)
    return make_error(errc::invalid_request, std::string{what}
                                                 + " limit must be within [1, "
                                                 + std::to_string(most) + "]");
  return caf::none;
}

/// The most events one (events_atom, job_id, after, limit) answers.
constexpr uint32_t max_events_page = 10000;

/// A page of events' `limit` as both stores (and the node API) check it.
inline caf::error check_events_limit(uint32_t limit) {
  return check_page_limit(limit, max_events_page, "events");
}

/// The events of `log` (in sequence order) after `after`, at most `limit`:
/// a page cut from a whole log read (copied: one log may serve several).
inline std::vector<job_event> cut_events_page(const std::vector<job_event>& log,
                                              uint64_t after, uint32_t limit) {
  auto first = std::partition_point(
      log.begin(), log.end(),
      [after](const job_event& e) { return e.sequence <= after; });
  auto n = std::min<size_t>(limit, static_cast<size_t>(log.end() - first));
  return {first, first + static_cast<std::ptrdiff_t>(n)};
}

} // namespace drover
