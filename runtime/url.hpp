#pragma once

// Strict parsing of absolute http(s) URLs, for webhook callback URLs: what a
// submission may name (runtime/submit.cpp checks the syntax) and what the
// webhook client connects to (gateway/webhook.cpp resolves the host and
// applies the address policy at delivery time).
//
// Accepted: `http://` or `https://` (scheme case-insensitive), then a host,
// an optional `:port` (1-65535), an optional path starting with `/` and an
// optional `?query`. The host is a DNS name (labels of letters, digits and
// inner hyphens, 1-63 characters each, at most 253 in all, the last label
// not all digits), a dotted-quad IPv4 address (four decimal parts 0-255, no
// leading zeros), or an IPv6 address in brackets (no zone id).
//
// Refused, each with its own message: anything but printable ASCII
// (internationalised names must be punycoded, other characters
// percent-encoded), user info (`user:pass@`), a fragment (`#...`, never sent
// to a server), an empty host or port, a malformed percent escape, and the
// characters RFC 3986 does not allow in a URL (`"<>\^`{|}` and space).
//
// Syntax only: whether the host resolves, and to which addresses, is
// decided when a request is made.

#include <caf/expected.hpp>

#include <cstdint>
#include <string>
#include <string_view>

namespace drover {

enum class url_host_kind : uint8_t { name, ipv4, ipv6 };

/// An absolute http(s) URL as parse_http_url returns it.
struct http_url {
  bool https = false;
  /// Lowercase DNS name, dotted-quad IPv4, or IPv6 without brackets.
  std::string host;
  url_host_kind host_kind = url_host_kind::name;
  /// The explicit port, or the scheme's default (80, 443).
  uint16_t port = 0;
  bool explicit_port = false;
  /// Path and query as given; "/" when the URL has neither (or only a
  /// query, which then follows the "/").
  std::string target;

  /// The Host header: the host (IPv6 in brackets) plus ":port" when the
  /// port was given explicitly.
  std::string host_header() const;
};

/// Parses `text` (see the top of this file). Errors: errc::invalid_value
/// with a message naming the problem.
caf::expected<http_url> parse_http_url(std::string_view text);

} // namespace drover
