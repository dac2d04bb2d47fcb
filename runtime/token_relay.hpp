#pragma once

// A worker node's side of mid-attempt token requests
// (task_context::take_tokens): the takes of the node's running attempts
// are coalesced per rate-limit key, so that the node has at most one
// request per key on its way to the coordinator's limiter, asking for the
// sum of what the attempts behind it wait for. Each answer is shared out
// in the order the takes came; what a take did not get it asks for again
// after `retry_ms`. Used by the worker agent (actors/worker_agent.cpp);
// not thread-safe (one actor owns it).

#include <caf/error.hpp>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace drover {

class token_relay {
public:
  /// Answers one take: tokens granted (0..wanted), when to ask again if
  /// fewer, or an error.
  using answer_fn
      = std::function<void(uint32_t granted, int64_t retry_ms, caf::error)>;

  /// One request to the coordinator, in the name of one running attempt.
  struct request {
    std::string key;
    std::string job_id;
    uint32_t attempt = 0;
    uint32_t wanted = 0;
  };

  /// Most tokens one request asks for.
  static constexpr uint32_t max_wanted = 1'000'000;
  /// A take that lost its answer to a lost connection asks again after
  /// this long (the agent reconnects meanwhile).
  static constexpr int64_t reconnect_retry_ms = 200;

  /// Queues a take of `wanted` tokens of `key` by attempt `attempt` of
  /// `job_id`; the request to send now, if none for `key` is on its way.
  std::optional<request> add(const std::string& key, std::string job_id,
                             uint32_t attempt, uint32_t wanted, answer_fn fn);

  /// The coordinator answered the request of `key` in flight: shares out
  /// `granted` in order (or the error); the next request of `key`, for the
  /// takes that came meanwhile. An error about the attempt named in the
  /// request (stale, no rate limit) goes to that attempt's takes; the
  /// others ask again at once in their own name. Any other error (the
  /// connection) makes every take ask again after reconnect_retry_ms.
  std::optional<request> answered(const std::string& key, uint32_t granted,
                                  int64_t retry_ms, const caf::error& err);

  /// Takes waiting or in flight.
  size_t waiting() const;

private:
  struct take {
    std::string job_id;
    uint32_t attempt = 0;
    uint32_t wanted = 0;
    answer_fn fn;
  };
  struct per_key {
    std::deque<take> in_flight;
    std::deque<take> next;
    request sent;
  };

  std::optional<request> send_next(const std::string& key, per_key& q);

  std::map<std::string, per_key> keys_;
};

} // namespace drover
