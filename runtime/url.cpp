#include "runtime/url.hpp"

#include "runtime/errors.hpp"
#include "runtime/ip_address.hpp"

#include <cctype>

namespace drover {

namespace {

caf::error invalid(const std::string& why) {
  return make_error(errc::invalid_value, "URL " + why);
}

char lower(char c) {
  return static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
}

bool starts_with_ci(std::string_view text, std::string_view prefix) {
  if (text.size() < prefix.size())
    return false;
  for (size_t i = 0; i < prefix.size(); ++i)
    if (lower(text[i]) != prefix[i])
      return false;
  return true;
}

bool is_hex(char c) {
  return std::isxdigit(static_cast<unsigned char>(c)) != 0;
}

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/// RFC 3986 characters allowed in a path or query besides percent escapes:
/// unreserved, sub-delims, ':', '@', '/', '?'.
bool allowed_in_target(char c) {
  if (std::isalnum(static_cast<unsigned char>(c)))
    return true;
  switch (c) {
    case '-':
    case '.':
    case '_':
    case '~': // unreserved
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')': // sub-delims
    case '*':
    case '+':
    case ',':
    case ';':
    case '=':
    case ':':
    case '@':
    case '/':
    case '?':
      return true;
    default:
      return false;
  }
}

/// Checks a lowercase DNS name (see url.hpp).
caf::error check_host_name(const std::string& host) {
  if (host.size() > 253)
    return invalid("host is longer than 253 characters");
  size_t start = 0;
  std::string_view last_label;
  while (true) {
    auto dot = host.find('.', start);
    auto label = std::string_view{host}.substr(
        start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty())
      return invalid("host '" + host + "' has an empty label");
    if (label.size() > 63)
      return invalid("host '" + host + "' has a label over 63 characters");
    for (auto c : label)
      if (!is_alnum(c) && c != '-')
        return invalid("host '" + host.substr(0, 64)
                       + "' may only hold letters, digits, '-' and '.' "
                         "(punycode internationalised names)");
    if (label.front() == '-' || label.back() == '-')
      return invalid("host '" + host
                     + "' has a label starting or ending with '-'");
    last_label = label;
    if (dot == std::string::npos)
      break;
    start = dot + 1;
  }
  bool all_digits = true;
  for (auto c : last_label)
    all_digits = all_digits && c >= '0' && c <= '9';
  if (all_digits)
    return invalid("host '" + host
                   + "' is neither a name nor an IPv4 address a.b.c.d");
  return caf::none;
}

} // namespace

std::string http_url::host_header() const {
  std::string result
      = host_kind == url_host_kind::ipv6 ? "[" + host + "]" : host;
  if (explicit_port)
    result += ":" + std::to_string(port);
  return result;
}

caf::expected<http_url> parse_http_url(std::string_view text) {
  for (auto c : text) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f)
      return invalid("may only hold printable ASCII without spaces "
                     "(percent-encode the rest)");
  }
  http_url url;
  size_t pos = 0;
  if (starts_with_ci(text, "https://")) {
    url.https = true;
    pos = 8;
  } else if (starts_with_ci(text, "http://")) {
    pos = 7;
  } else {
    return invalid("must start with http:// or https://");
  }
  url.port = url.https ? 443 : 80;
  auto authority_end = text.find_first_of("/?#", pos);
  if (authority_end == std::string_view::npos)
    authority_end = text.size();
  auto authority = text.substr(pos, authority_end - pos);
  if (authority.find('@') != std::string_view::npos)
    return invalid("must not hold user info (user:password@)");
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    auto close = authority.find(']');
    if (close == std::string_view::npos)
      return invalid("has an unterminated '[' in its host");
    auto literal = authority.substr(1, close - 1);
    if (literal.find(':') == std::string_view::npos)
      return invalid("has brackets around something that is not IPv6");
    auto addr = parse_ip_address(literal);
    if (!addr)
      return invalid("host: " + describe(addr.error()));
    url.host = addr->to_string();
    url.host_kind = url_host_kind::ipv6;
    auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':')
        return invalid("has text after the IPv6 address's ']'");
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    auto colon = authority.find(':');
    auto host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = authority.substr(colon + 1);
    }
    if (host.empty())
      return invalid("has no host");
    for (auto c : host)
      url.host += lower(c);
    if (auto addr = parse_ip_address(url.host)) {
      url.host_kind = url_host_kind::ipv4;
    } else if (auto err = check_host_name(url.host)) {
      return err;
    }
  }
  if (has_port) {
    if (port_text.empty() || port_text.size() > 5
        || port_text.find_first_not_of("0123456789") != std::string_view::npos)
      return invalid("has an invalid port (1-65535)");
    unsigned port = 0;
    for (auto c : port_text)
      port = port * 10 + static_cast<unsigned>(c - '0');
    if (port < 1 || port > 65535)
      return invalid("has an invalid port (1-65535)");
    url.port = static_cast<uint16_t>(port);
    url.explicit_port = true;
  }
  auto target = text.substr(authority_end);
  if (target.find('#') != std::string_view::npos)
    return invalid("must not hold a fragment ('#...'); servers never see "
                   "it");
  for (size_t i = 0; i < target.size(); ++i) {
    auto c = target[i];
    if (c == '%') {
      if (i + 2 >= target.size() || !is_hex(target[i + 1])
          || !is_hex(target[i + 2]))
        return invalid("has a '%' that is not followed by two hex digits");
      i += 2;
    } else if (!allowed_in_target(c)) {
      return invalid(std::string{"may not hold '"} + c
                     + "' unencoded (RFC 3986)");
    }
  }
  if (target.empty())
    url.target = "/";
  else if (target.front() == '?')
    url.target = "/" + std::string{target};
  else
    url.target = std::string{target};
  return url;
}

} // namespace drover
