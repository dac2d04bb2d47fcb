#include "nodes/events_after.hpp"

#include "actors/store.hpp"
#include "runtime/cluster_protocol.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <algorithm>
#include <chrono>
#include <utility>

namespace drover::node {

namespace {

/// How long the whole log may take. The requester's own timeout is what
/// it sees; this one only lets go of the promise of a coordinator that
/// never answers (a lost remote actor fails no request by itself).
constexpr auto whole_log_timeout = std::chrono::seconds{60};

} // namespace

caf::result<std::vector<job_event>>
read_events_after(api_router_actor::pointer self, const api_actor& api,
                  uint32_t protocol, std::string& job_id, uint64_t after,
                  uint32_t limit) {
  if (protocol >= paged_events_protocol)
    return self->delegate(api, events_atom::value, std::move(job_id), after,
                          limit);
  // The check the coordinator's API makes of the page (it checks the id
  // for the whole log too).
  if (auto err = check_events_limit(limit))
    return err;
  auto rp = self->make_response_promise<std::vector<job_event>>();
  self->request(api, whole_log_timeout, events_atom::value, std::move(job_id))
      .then(
          [rp, after, limit](std::vector<job_event>& log) mutable {
            rp.deliver(cut_events_page(log, after, limit));
          },
          [rp](caf::error& err) mutable {
            // The page of a job without events is empty, not an error.
            if (is(err, errc::not_found))
              rp.deliver(std::vector<job_event>{});
            else
              rp.deliver(std::move(err));
          });
  return rp;
}

} // namespace drover::node
