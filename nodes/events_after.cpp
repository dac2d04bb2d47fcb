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
                  uint32_t protocol,
                  const std::shared_ptr<whole_log_reads>& reads,
                  std::string& job_id, uint64_t after, uint32_t limit) {
  if (protocol >= paged_events_protocol)
    return self->delegate(api, events_atom::value, std::move(job_id), after,
                          limit);
  // The check the coordinator's API makes of the page (it checks the id
  // for the whole log too).
  if (auto err = check_events_limit(limit))
    return err;
  auto key = std::make_pair(api.address(), job_id);
  if (auto i = reads->pending.find(key); i != reads->pending.end()) {
    // Served by the read in flight.
    auto rp = self->make_response_promise<std::vector<job_event>>();
    i->second.push_back({rp, after, limit});
    return rp;
  }
  // (Before the promise: one made takes the answer over, and an error
  // returned after it would never reach the asker.)
  if (reads->pending.size() >= max_whole_log_reads)
    return make_error(errc::unavailable,
                      "too many whole-log reads in flight towards a "
                      "coordinator older than node protocol "
                          + std::to_string(paged_events_protocol)
                          + " (a rolling upgrade); retry");
  auto rp = self->make_response_promise<std::vector<job_event>>();
  reads->pending[key].push_back({rp, after, limit});
  auto answer = [reads, key](auto&& deliver) {
    auto i = reads->pending.find(key);
    if (i == reads->pending.end())
      return;
    auto waiting = std::move(i->second);
    reads->pending.erase(i);
    for (auto& w : waiting)
      deliver(w);
  };
  self->request(api, whole_log_timeout, events_atom::value, std::move(job_id))
      .then(
          [answer](std::vector<job_event>& log) {
            answer([&log](whole_log_reads::waiter& w) {
              w.rp.deliver(cut_events_page(log, w.after, w.limit));
            });
          },
          [answer](caf::error& err) {
            answer([&err](whole_log_reads::waiter& w) {
              // The page of a job without events is empty, not an error.
              if (is(err, errc::not_found))
                w.rp.deliver(std::vector<job_event>{});
              else
                w.rp.deliver(err);
            });
          });
  return rp;
}

} // namespace drover::node
