#pragma once

// What a sharing gateway (nodes/gateway_router.hpp) reads to route a
// request: a coordinator's list of owned partitions as it crosses nodes,
// and the partition a node-API request is about. Both see bytes from other
// nodes or clients: anything malformed is refused, never guessed.

#include <caf/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace drover {

/// "0,5,17" (a coordinator's answer to partitions_atom) as partitions, each
/// below `count`, ascending, at most `count` of them; nullopt if it is
/// anything else.
std::optional<std::vector<int32_t>> parse_partition_list(std::string_view text,
                                                         int32_t count);

/// The partition a request to the node API is about: its job id's (get,
/// events, cancel, redrive and purge of one job, subscribe, unsubscribe),
/// a keyed submit's key's among `count`; -1 for everything else (and
/// while `count` is not known).
int32_t partition_of_request(const caf::message& msg, int32_t count);

} // namespace drover
