#include "runtime/partition_map.hpp"

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

} // namespace drover
