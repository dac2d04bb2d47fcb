#pragma once

// A page of a job's log for a gateway node's stand-ins of the node API
// (api_relay, nodes/node_roles.hpp; api_router, nodes/gateway_router.hpp),
// whichever version their coordinator speaks. (events_atom, job_id, after,
// limit) came with node protocol 3 (runtime/cluster_protocol.hpp): an
// older coordinator's API answers it `unexpected_message`, so towards one
// the page is cut here from (events_atom, job_id), which every version
// serves. The one place that knows which request a coordinator takes.

#include "nodes/gateway_router.hpp"
#include "runtime/api_protocol.hpp"
#include "runtime/model.hpp"

#include <caf/actor_addr.hpp>
#include <caf/result.hpp>
#include <caf/typed_response_promise.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace drover::node {

/// Whether a request of the node API with arguments `Ts` is (events_atom,
/// job_id, after, limit).
template <class... Ts>
constexpr bool is_events_page_v
    = std::is_same_v<std::tuple<std::decay_t<Ts>...>,
                     std::tuple<events_atom, std::string, uint64_t, uint32_t>>;

/// The whole-log reads a gateway node has in flight towards coordinators
/// older than the paged read, each with the pages that wait for it: one
/// read per (coordinator, job) however many pages ask meanwhile, and at
/// most max_whole_log_reads at once (each answer is a whole log in this
/// node's memory). One per relay or router.
struct whole_log_reads {
  struct waiter {
    caf::typed_response_promise<std::vector<job_event>> rp;
    uint64_t after = 0;
    uint32_t limit = 0;
  };
  std::map<std::pair<caf::actor_addr, std::string>, std::vector<waiter>>
      pending;
};

/// Whole-log reads in flight at most (a page asked beyond is unavailable:
/// retry).
constexpr size_t max_whole_log_reads = 32;

/// Answers (events_atom, `job_id`, `after`, `limit`) for `self` from
/// coordinator `api`, which settled on node protocol `protocol` at the
/// hello: from paged_events_protocol on, that request, delegated; below,
/// the whole log, asked for by `self` (through `reads`) and cut to the
/// events above `after`, at most `limit` — the same answer (an unknown
/// job's is an empty list; a limit outside [1, max_events_page] is
/// errc::invalid_request), at the cost of a whole-log read.
caf::result<std::vector<job_event>>
read_events_after(api_router_actor::pointer self, const api_actor& api,
                  uint32_t protocol,
                  const std::shared_ptr<whole_log_reads>& reads,
                  std::string& job_id, uint64_t after, uint32_t limit);

} // namespace drover::node
