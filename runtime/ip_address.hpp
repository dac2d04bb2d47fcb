#pragma once

// IP addresses as plain values, CIDR networks, and the special-purpose
// ranges (IANA's IPv4 and IPv6 special-purpose address registries) that an
// outgoing request on a user's behalf must not reach: what the webhook
// client's address policy (gateway/webhook.hpp) is built from. No sockets,
// no resolver: pure functions over bytes.

#include <caf/expected.hpp>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace drover {

/// An IPv4 or IPv6 address.
struct ip_address {
  /// Network byte order; an IPv4 address uses the first 4 bytes.
  std::array<uint8_t, 16> bytes{};
  bool v4 = true;

  /// Dotted quad, or RFC 5952 text for IPv6.
  std::string to_string() const;

  static ip_address from_v4(uint32_t host_order);
};

bool operator==(const ip_address& x, const ip_address& y);
inline bool operator!=(const ip_address& x, const ip_address& y) {
  return !(x == y);
}

/// Parses a dotted-quad IPv4 address (exactly four decimal parts 0-255, no
/// leading zeros: "010.0.0.1" is ambiguous, so refused) or an IPv6 address
/// without brackets and without a zone id. errc::invalid_value otherwise.
caf::expected<ip_address> parse_ip_address(std::string_view text);

/// The IPv4 address inside an IPv4-mapped IPv6 address (::ffff:a.b.c.d);
/// any other address unchanged. Policies compare the result, so a mapped
/// address is treated exactly like the IPv4 address it stands for.
ip_address unmapped(const ip_address& x);

/// A CIDR network, e.g. 10.0.0.0/8 or fc00::/7.
struct ip_network {
  /// Host bits are zero.
  ip_address base;
  /// 0-32 (IPv4) or 0-128 (IPv6).
  unsigned prefix = 0;

  /// True if `x` (unmapped first) lies in this network. An IPv4 network
  /// never contains an IPv6 address and vice versa.
  bool contains(const ip_address& x) const;

  /// "base/prefix".
  std::string to_string() const;
};

/// Parses "address/prefix", or a bare address as a single-host network
/// (/32, /128). The address must have no bits set past the prefix
/// ("10.0.0.1/8" is refused: it is probably a typo for a host). An
/// IPv4-mapped IPv6 network is refused: write the IPv4 network. Errors:
/// errc::invalid_value naming the problem.
caf::expected<ip_network> parse_ip_network(std::string_view text);

/// Why `x` is not a public unicast address: "loopback", "private",
/// "link-local", "unspecified", "multicast", "carrier-grade NAT", ... (an
/// IPv4-mapped address is judged as its IPv4 address; 6to4 and NAT64
/// addresses by the IPv4 address they embed). nullptr = a public unicast
/// address. The string is static.
const char* special_purpose(const ip_address& x);

} // namespace drover
