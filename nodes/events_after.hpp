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

#include <caf/result.hpp>

#include <cstdint>
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

/// Answers (events_atom, `job_id`, `after`, `limit`) for `self` from
/// coordinator `api`, which settled on node protocol `protocol` at the
/// hello: from paged_events_protocol on, that request, delegated; below,
/// the whole log, asked for by `self` and cut to the events above `after`,
/// at most `limit` — the same answer (an unknown job's is an empty list;
/// a limit outside [1, max_events_page] is errc::invalid_request), at the
/// cost of one read of the whole log per page.
caf::result<std::vector<job_event>>
read_events_after(api_router_actor::pointer self, const api_actor& api,
                  uint32_t protocol, std::string& job_id, uint64_t after,
                  uint32_t limit);

} // namespace drover::node
