#pragma once

// What a sharing gateway (nodes/gateway_router.hpp) reads to route a
// request: a coordinator's list of owned partitions as it crosses nodes,
// and the partition a node-API request is about. Both see bytes from other
// nodes or clients: anything malformed is refused, never guessed.

#include "runtime/atoms.hpp"
#include "runtime/partition.hpp"
#include "runtime/submit.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

namespace drover {

/// "0,5,17" (a coordinator's answer to partitions_atom) as partitions, each
/// below `count`, ascending, at most `count` of them; nullopt if it is
/// anything else.
std::optional<std::vector<int32_t>> parse_partition_list(std::string_view text,
                                                         int32_t count);

/// Requests whose second element is a job id: get, events, cancel, redrive
/// and purge of one job, subscribe, unsubscribe.
template <class T>
constexpr bool is_about_a_job_v
    = std::is_same_v<
          T,
          get_atom> || std::is_same_v<T, events_atom> || std::is_same_v<T, cancel_atom> || std::is_same_v<T, redrive_atom> || std::is_same_v<T, purge_atom> || std::is_same_v<T, subscribe_atom> || std::is_same_v<T, unsubscribe_atom>;

/// The partition a request to the node API (runtime/api_protocol.hpp),
/// given as its elements, is about: its job id's, a keyed submit's key's,
/// a run-time rate-limit or breaker setting's key's (the control log's
/// writes are fenced by it: runtime/pg_control.cpp) among `count`; -1 for
/// everything else (and while `count` is not known). Decided by the
/// request's types, at compile time.
template <class... Ts>
int32_t partition_of_request(int32_t count, const Ts&... xs) {
  if constexpr (sizeof...(Ts) < 2) {
    return -1;
  } else {
    const auto& first = std::get<0>(std::tie(xs...));
    const auto& second = std::get<1>(std::tie(xs...));
    using first_t = std::decay_t<decltype(first)>;
    using second_t = std::decay_t<decltype(second)>;
    if constexpr (
        std::is_same_v<
            first_t, submit_atom> && std::is_same_v<second_t, submit_request>) {
      return partition_of_submission(second.tenant, second.idempotency_key,
                                     second.concurrency_key, count);
    } else if constexpr (std::is_same_v<std::tuple<std::decay_t<Ts>...>,
                                        std::tuple<flow_atom, std::string,
                                                   std::string, std::string>>) {
      const auto& key = std::get<2>(std::tie(xs...));
      return count >= 1 ? partition_of_key(second, key, count) : -1;
    } else if constexpr (
        is_about_a_job_v<first_t> && std::is_same_v<second_t, std::string>) {
      auto p = partition_of_id(second);
      return count >= 1 && p < count ? p : -1;
    } else {
      return -1;
    }
  }
}

} // namespace drover
