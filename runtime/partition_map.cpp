#include "runtime/partition_map.hpp"

#include "runtime/atoms.hpp"
#include "runtime/partition.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/message.hpp>

#include <charconv>

namespace drover {

std::optional<std::vector<int32_t>> parse_partition_list(std::string_view text,
                                                         int32_t count) {
  std::vector<int32_t> out;
  if (text.empty())
    return out;
  size_t at = 0;
  while (at <= text.size()) {
    auto comma = text.find(',', at);
    auto item = text.substr(at, comma == std::string_view::npos
                                    ? std::string_view::npos
                                    : comma - at);
    int32_t p = -1;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), p);
    if (ec != std::errc{} || end != item.data() + item.size() || item.empty()
        || p < 0 || p >= count || (!out.empty() && p <= out.back()))
      return std::nullopt;
    out.push_back(p);
    if (comma == std::string_view::npos)
      break;
    at = comma + 1;
  }
  return out;
}

int32_t partition_of_request(const caf::message& msg, int32_t count) {
  if (msg.size() < 2 || !msg.match_element<caf::atom_value>(0))
    return -1;
  auto a = msg.get_as<caf::atom_value>(0);
  if (a == submit_atom::value && msg.match_element<submit_request>(1)) {
    const auto& r = msg.get_as<submit_request>(1);
    return partition_of_submission(r.tenant, r.idempotency_key,
                                   r.concurrency_key, count);
  }
  bool about_a_job = a == get_atom::value || a == events_atom::value
                     || a == cancel_atom::value || a == redrive_atom::value
                     || a == purge_atom::value || a == subscribe_atom::value
                     || a == unsubscribe_atom::value;
  if (!about_a_job || !msg.match_element<std::string>(1))
    return -1;
  auto p = partition_of_id(msg.get_as<std::string>(1));
  return count >= 1 && p < count ? p : -1;
}

} // namespace drover
