// The flow-control options (--rate-limit, --breaker) as text and the
// control log's entries (runtime/flow_control.hpp): parsing and
// formatting only; the limiters and breakers are in flow_control.cpp.

#include "runtime/flow_control.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"

#include <cstdio>
#include <ctime>
#include <limits>
#include <stdexcept>

namespace drover {

namespace {

caf::error bad(const std::string& option, const std::string& item,
               const std::string& why) {
  return make_error(errc::bad_config,
                    option + ": " + why + " (in '" + item + "')");
}

/// `NAME:k=v,k=v` -> name and fields, in order.
caf::expected<
    std::pair<std::string, std::vector<std::pair<std::string, std::string>>>>
split_item(const std::string& option, const std::string& item,
           const char* usage) {
  auto colon = item.find(':');
  auto name = item.substr(0, colon);
  if (colon == std::string::npos || name.empty() || name.size() > 128
      || name.find_first_of(",=| \t") != std::string::npos)
    return bad(option, item, std::string{"expected "} + usage);
  // A name a job can give: no control characters, valid UTF-8.
  for (unsigned char ch : name)
    if (ch < 0x20 || ch == 0x7f)
      return bad(option, item, "the name holds a control character");
  if (valid_utf8(name) != name)
    return bad(option, item, "the name is not valid UTF-8");
  std::vector<std::pair<std::string, std::string>> fields;
  auto rest = item.substr(colon + 1);
  size_t pos = 0;
  while (pos <= rest.size()) {
    auto comma = rest.find(',', pos);
    auto field = rest.substr(pos, comma == std::string::npos ? std::string::npos
                                                             : comma - pos);
    auto eq = field.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == field.size())
      return bad(option, item, std::string{"expected "} + usage);
    auto k = field.substr(0, eq);
    for (const auto& f : fields)
      if (f.first == k)
        return bad(option, item, "'" + k + "' is given twice");
    fields.emplace_back(k, field.substr(eq + 1));
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  return std::make_pair(std::move(name), std::move(fields));
}

/// A plain decimal number within [lo, hi].
bool number_in(const std::string& text, double lo, double hi, double& out) {
  if (text.empty() || text.size() > 16
      || text.find_first_not_of("0123456789.") != std::string::npos
      || std::count(text.begin(), text.end(), '.') > 1 || text[0] == '.'
      || text.back() == '.')
    return false;
  out = std::strtod(text.c_str(), nullptr);
  return std::isfinite(out) && out >= lo && out <= hi;
}

bool count_in(const std::string& text, uint32_t lo, uint32_t hi,
              uint32_t& out) {
  double d = 0;
  if (text.find('.') != std::string::npos || !number_in(text, lo, hi, d))
    return false;
  out = static_cast<uint32_t>(d);
  return true;
}

/// `a|b|c` into `out`: each non-empty, at most 128 bytes, UTF-8 without
/// control characters.
bool split_bars(const std::string& v, std::vector<std::string>& out) {
  size_t pos = 0;
  while (pos <= v.size()) {
    auto bar = v.find('|', pos);
    auto x = v.substr(pos,
                      bar == std::string::npos ? std::string::npos : bar - pos);
    if (x.empty() || x.size() > 128 || valid_utf8(x) != x)
      return false;
    for (unsigned char ch : x)
      if (ch < 0x20 || ch == 0x7f)
        return false;
    out.push_back(std::move(x));
    if (bar == std::string::npos)
      return true;
    pos = bar + 1;
  }
  return true;
}

} // namespace

caf::expected<std::pair<std::string, rate_limit>>
parse_rate_limit(const std::string& item) {
  static constexpr auto option = "rate-limit";
  auto parts = split_item(option, item, "NAME:rate=R[,burst=B][,tenants=a|b]");
  if (!parts)
    return std::move(parts.error());
  rate_limit out;
  bool have_rate = false;
  bool have_burst = false;
  for (const auto& [k, v] : parts->second) {
    if (k == "rate") {
      if (!number_in(v, 0.001, 1e6, out.per_second))
        return bad(option, item,
                   "rate must be a number of tokens per second within "
                   "[0.001, 1000000]");
      have_rate = true;
    } else if (k == "burst") {
      if (!number_in(v, 1, 1e6, out.burst))
        return bad(option, item, "burst must be a number within [1, 1000000]");
      have_burst = true;
    } else if (k == "tenants") {
      if (!split_bars(v, out.tenants))
        return bad(option, item, "tenants must be tenant names separated by |");
    } else {
      return bad(option, item,
                 "'" + k + "' is not a field (rate, burst, tenants)");
    }
  }
  if (!have_rate)
    return bad(option, item, "rate is required");
  if (!have_burst)
    out.burst = std::max(1.0, out.per_second);
  return std::make_pair(std::move(parts->first), out);
}

caf::expected<std::pair<std::string, breaker_config>>
parse_breaker(const std::string& item) {
  static constexpr auto option = "circuit-breaker";
  auto parts = split_item(option, item,
                          "NAME:failures=N and/or ratio=R,window=S"
                          "[,min_calls=M][,cooldown=S][,probes=P][,codes=a|b]"
                          "[,tenants=a|b]");
  if (!parts)
    return std::move(parts.error());
  breaker_config out;
  bool have_failures = false;
  bool have_ratio = false;
  bool have_window = false;
  bool have_min_calls = false;
  for (const auto& [k, v] : parts->second) {
    if (k == "failures") {
      if (!count_in(v, 1, 1000000, out.failures))
        return bad(option, item,
                   "failures must be a count within [1, 1000000]");
      have_failures = true;
    } else if (k == "ratio") {
      if (!number_in(v, 0, 1, out.ratio) || out.ratio <= 0)
        return bad(option, item,
                   "ratio must be the share of failed attempts that opens "
                   "it, a number within (0, 1]");
      have_ratio = true;
    } else if (k == "window") {
      double s = 0;
      if (!number_in(v, 1, 3600, s))
        return bad(option, item, "window must be seconds within [1, 3600]");
      out.window_ms = static_cast<int64_t>(std::llround(s * 1000));
      have_window = true;
    } else if (k == "min_calls") {
      if (!count_in(v, 1, 1000000, out.min_calls))
        return bad(option, item,
                   "min_calls must be a count within [1, 1000000]");
      have_min_calls = true;
    } else if (k == "cooldown") {
      double s = 0;
      if (!number_in(v, 0.1, 86400, s))
        return bad(option, item,
                   "cooldown must be seconds within [0.1, 86400]");
      out.cooldown_ms = static_cast<int64_t>(std::llround(s * 1000));
    } else if (k == "probes") {
      if (!count_in(v, 1, 1000, out.probes))
        return bad(option, item, "probes must be a count within [1, 1000]");
    } else if (k == "codes") {
      size_t pos = 0;
      while (pos <= v.size()) {
        auto bar = v.find('|', pos);
        auto code = v.substr(pos, bar == std::string::npos ? std::string::npos
                                                           : bar - pos);
        if (code.empty() || code.size() > 64
            || code.find_first_not_of("abcdefghijklmnopqrstuvwxyz"
                                      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
                   != std::string::npos)
          return bad(option, item,
                     "codes must be error codes ([A-Za-z0-9_.-], at most 64 "
                     "bytes) separated by |");
        if (never_counted(code))
          return bad(option, item,
                     "'" + code
                         + "' never counts: a cancel or a lost worker says "
                           "nothing about the downstream");
        out.codes.push_back(code);
        if (bar == std::string::npos)
          break;
        pos = bar + 1;
      }
    } else if (k == "tenants") {
      if (!split_bars(v, out.tenants))
        return bad(option, item, "tenants must be tenant names separated by |");
    } else {
      return bad(option, item,
                 "'" + k
                     + "' is not a field (failures, ratio, window, "
                       "min_calls, cooldown, probes, codes, tenants)");
    }
  }
  if (!have_failures && !have_ratio)
    return bad(option, item,
               "failures=N (in a row) or ratio=R,window=S (a share of "
               "failures over a window) is required");
  if (have_ratio && !have_window)
    return bad(option, item, "ratio needs window=S: the seconds it looks at");
  if (!have_ratio && (have_window || have_min_calls))
    return bad(option, item,
               std::string{have_window ? "window" : "min_calls"}
                   + " goes with ratio=R");
  if (!have_failures)
    out.failures = 0; // only the ratio opens it
  return std::make_pair(std::move(parts->first), std::move(out));
}

std::string control_entry_json(uint64_t sequence, const flow_change& c,
                               int32_t partition, int64_t epoch,
                               const std::string& node) {
  auto secs = static_cast<time_t>(c.at_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char at[64]; // room for any int year the format could print
  std::snprintf(at, sizeof at, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, static_cast<int>(c.at_ms % 1000));
  return "{\"sequence\":" + std::to_string(sequence) + ",\"at\":\"" + at
         + "\",\"kind\":" + json_quote(c.kind) + ",\"key\":" + json_quote(c.key)
         + ",\"state\":" + json_quote(c.state) + ",\"detail\":"
         + json_quote(c.detail) + ",\"partition\":" + std::to_string(partition)
         + ",\"epoch\":" + std::to_string(epoch)
         + ",\"node\":" + json_quote(node) + "}";
}

} // namespace drover
