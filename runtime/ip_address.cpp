#include "runtime/ip_address.hpp"

#include "runtime/errors.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <vector>

namespace drover {

namespace {

caf::error invalid(std::string_view text, const std::string& why) {
  return make_error(errc::invalid_value,
                    "'" + std::string{text.substr(0, 64)} + "' " + why);
}

/// Strict dotted quad: four decimal parts 0-255 without leading zeros.
bool parse_v4(std::string_view text, std::array<uint8_t, 16>& out) {
  size_t pos = 0;
  for (int part = 0; part < 4; ++part) {
    if (part > 0) {
      if (pos >= text.size() || text[pos] != '.')
        return false;
      ++pos;
    }
    size_t start = pos;
    unsigned value = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9'
           && pos - start < 3) {
      value = value * 10 + static_cast<unsigned>(text[pos] - '0');
      ++pos;
    }
    size_t digits = pos - start;
    if (digits == 0 || value > 255 || (digits > 1 && text[start] == '0'))
      return false;
    out[part] = static_cast<uint8_t>(value);
  }
  return pos == text.size();
}

bool bits_match(const std::array<uint8_t, 16>& x,
                const std::array<uint8_t, 16>& y, unsigned prefix) {
  unsigned whole = prefix / 8;
  if (std::memcmp(x.data(), y.data(), whole) != 0)
    return false;
  unsigned rest = prefix % 8;
  if (rest == 0)
    return true;
  auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (x[whole] & mask) == (y[whole] & mask);
}

bool is_mapped(const ip_address& x) {
  static constexpr uint8_t prefix[12]
      = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  return !x.v4 && std::memcmp(x.bytes.data(), prefix, 12) == 0;
}

ip_address v4_at(const ip_address& x, size_t offset) {
  ip_address result;
  std::memcpy(result.bytes.data(), x.bytes.data() + offset, 4);
  return result;
}

struct special_range {
  ip_network net;
  const char* why;
  /// The range embeds an IPv4 address at this byte offset, which decides
  /// instead (6to4, NAT64); 0 = it doesn't.
  size_t embedded_v4_at;
};

ip_network net(const char* text) {
  // Constant tables; a typo here would be caught by the unit tests.
  return *parse_ip_network(text);
}

/// IANA special-purpose registries, most specific first where they nest.
const std::vector<special_range>& v4_ranges() {
  static const std::vector<special_range> ranges{
      {net("0.0.0.0/8"), "unspecified ('this network')", 0},
      {net("10.0.0.0/8"), "private", 0},
      {net("100.64.0.0/10"), "carrier-grade NAT", 0},
      {net("127.0.0.0/8"), "loopback", 0},
      {net("169.254.0.0/16"), "link-local (cloud metadata lives here)", 0},
      {net("172.16.0.0/12"), "private", 0},
      {net("192.0.0.0/24"), "IETF protocol assignments", 0},
      {net("192.0.2.0/24"), "documentation", 0},
      {net("192.88.99.0/24"), "6to4 relay anycast", 0},
      {net("192.168.0.0/16"), "private", 0},
      {net("198.18.0.0/15"), "benchmarking", 0},
      {net("198.51.100.0/24"), "documentation", 0},
      {net("203.0.113.0/24"), "documentation", 0},
      {net("224.0.0.0/4"), "multicast", 0},
      {net("240.0.0.0/4"), "reserved (incl. broadcast)", 0},
  };
  return ranges;
}

const std::vector<special_range>& v6_ranges() {
  static const std::vector<special_range> ranges{
      {net("::/128"), "unspecified", 0},
      {net("::1/128"), "loopback", 0},
      {net("::/96"), "IPv4-compatible (deprecated)", 0},
      {net("64:ff9b:1::/48"), "NAT64 (local use)", 0},
      {net("64:ff9b::/96"), nullptr, 12},
      {net("100::/64"), "discard-only", 0},
      {net("2001::/32"), "Teredo", 0},
      {net("2001:db8::/32"), "documentation", 0},
      {net("2001::/23"), "IETF protocol assignments", 0},
      {net("2002::/16"), nullptr, 2},
      {net("fc00::/7"), "private (unique local)", 0},
      {net("fe80::/10"), "link-local", 0},
      {net("fec0::/10"), "site-local (deprecated)", 0},
      {net("ff00::/8"), "multicast", 0},
  };
  return ranges;
}

} // namespace

ip_address ip_address::from_v4(uint32_t host_order) {
  ip_address result;
  result.bytes[0] = static_cast<uint8_t>(host_order >> 24);
  result.bytes[1] = static_cast<uint8_t>(host_order >> 16);
  result.bytes[2] = static_cast<uint8_t>(host_order >> 8);
  result.bytes[3] = static_cast<uint8_t>(host_order);
  return result;
}

std::string ip_address::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (inet_ntop(v4 ? AF_INET : AF_INET6, bytes.data(), buf, sizeof(buf))
      == nullptr)
    return "?";
  return buf;
}

bool operator==(const ip_address& x, const ip_address& y) {
  if (x.v4 != y.v4)
    return false;
  return std::memcmp(x.bytes.data(), y.bytes.data(), x.v4 ? 4 : 16) == 0;
}

caf::expected<ip_address> parse_ip_address(std::string_view text) {
  ip_address result;
  if (text.find(':') == std::string_view::npos) {
    if (!parse_v4(text, result.bytes))
      return invalid(text, "is not an IPv4 address (a.b.c.d, decimal, no "
                           "leading zeros)");
    return result;
  }
  if (text.size() >= INET6_ADDRSTRLEN || text.find('%') != text.npos)
    return invalid(text, "is not an IPv6 address (zone ids are refused)");
  char buf[INET6_ADDRSTRLEN] = {};
  std::memcpy(buf, text.data(), text.size());
  if (inet_pton(AF_INET6, buf, result.bytes.data()) != 1)
    return invalid(text, "is not an IPv6 address");
  result.v4 = false;
  return result;
}

ip_address unmapped(const ip_address& x) {
  return is_mapped(x) ? v4_at(x, 12) : x;
}

bool ip_network::contains(const ip_address& x) const {
  auto addr = unmapped(x);
  return addr.v4 == base.v4 && bits_match(addr.bytes, base.bytes, prefix);
}

std::string ip_network::to_string() const {
  return base.to_string() + "/" + std::to_string(prefix);
}

caf::expected<ip_network> parse_ip_network(std::string_view text) {
  auto slash = text.find('/');
  auto addr = parse_ip_address(text.substr(0, slash));
  if (!addr)
    return std::move(addr.error());
  ip_network result;
  result.base = *addr;
  unsigned max_prefix = addr->v4 ? 32 : 128;
  result.prefix = max_prefix;
  if (slash != std::string_view::npos) {
    auto digits = text.substr(slash + 1);
    if (digits.empty() || digits.size() > 3
        || digits.find_first_not_of("0123456789") != digits.npos
        || (digits.size() > 1 && digits[0] == '0'))
      return invalid(text, "has no valid prefix length after '/'");
    unsigned prefix = 0;
    for (auto c : digits)
      prefix = prefix * 10 + static_cast<unsigned>(c - '0');
    if (prefix > max_prefix)
      return invalid(text,
                     "has a prefix length over " + std::to_string(max_prefix));
    result.prefix = prefix;
  }
  if (is_mapped(result.base))
    return invalid(text, "is an IPv4-mapped IPv6 network; write the IPv4 "
                         "network instead");
  // Host bits must be zero: compare with the address masked to the prefix.
  ip_address masked;
  masked.v4 = result.base.v4;
  for (unsigned bit = 0; bit < result.prefix; ++bit)
    masked.bytes[bit / 8] |= static_cast<uint8_t>(result.base.bytes[bit / 8]
                                                  & (0x80 >> (bit % 8)));
  if (masked != result.base)
    return invalid(text, "has bits set past its prefix (did you mean "
                             + ip_network{masked, result.prefix}.to_string()
                             + "?)");
  return result;
}

const char* special_purpose(const ip_address& x) {
  auto addr = unmapped(x);
  const auto& ranges = addr.v4 ? v4_ranges() : v6_ranges();
  for (const auto& range : ranges) {
    if (!range.net.contains(addr))
      continue;
    if (range.embedded_v4_at == 0)
      return range.why;
    // 6to4 and NAT64 reach the IPv4 address they embed.
    if (special_purpose(v4_at(addr, range.embedded_v4_at)) != nullptr)
      return range.embedded_v4_at == 2 ? "6to4 of a special-purpose IPv4 "
                                         "address"
                                       : "NAT64 of a special-purpose IPv4 "
                                         "address";
    return nullptr;
  }
  return nullptr;
}

} // namespace drover
