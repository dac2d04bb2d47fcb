#include "runtime/token_relay.hpp"

#include "runtime/errors.hpp"

#include <algorithm>

namespace drover {

std::optional<token_relay::request>
token_relay::add(const std::string& key, std::string job_id, uint32_t attempt,
                 uint32_t wanted, answer_fn fn) {
  auto& q = keys_[key];
  q.next.push_back({std::move(job_id), attempt, wanted, std::move(fn)});
  if (!q.in_flight.empty())
    return std::nullopt;
  return send_next(key, q);
}

std::optional<token_relay::request>
token_relay::send_next(const std::string& key, per_key& q) {
  if (q.next.empty()) {
    keys_.erase(key);
    return std::nullopt;
  }
  q.in_flight.swap(q.next);
  uint64_t total = 0;
  for (const auto& t : q.in_flight)
    total += t.wanted;
  const auto& first = q.in_flight.front();
  q.sent = {key, first.job_id, first.attempt,
            static_cast<uint32_t>(std::min<uint64_t>(total, max_wanted))};
  return q.sent;
}

std::optional<token_relay::request>
token_relay::answered(const std::string& key, uint32_t granted,
                      int64_t retry_ms, const caf::error& err) {
  auto i = keys_.find(key);
  if (i == keys_.end() || i->second.in_flight.empty())
    return std::nullopt;
  auto& q = i->second;
  auto takes = std::move(q.in_flight);
  q.in_flight.clear();
  bool about_attempt
      = is(err, errc::stale_attempt) || is(err, errc::invalid_request);
  uint32_t left = granted;
  for (auto& t : takes) {
    if (!err) {
      auto g = std::min(left, t.wanted);
      left -= g;
      t.fn(g, g < t.wanted ? std::max<int64_t>(1, retry_ms) : 0, {});
    } else if (about_attempt) {
      if (t.job_id == q.sent.job_id && t.attempt == q.sent.attempt)
        t.fn(0, 0, err);
      else
        t.fn(0, 1, {}); // asks again, in its own name
    } else {
      t.fn(0, reconnect_retry_ms, {});
    }
  }
  return send_next(key, q);
}

size_t token_relay::waiting() const {
  size_t n = 0;
  for (const auto& [key, q] : keys_)
    n += q.in_flight.size() + q.next.size();
  return n;
}

} // namespace drover
