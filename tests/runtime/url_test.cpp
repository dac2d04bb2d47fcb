// runtime/url and runtime/ip_address: callback URL syntax, addresses,
// CIDR networks and the special-purpose ranges webhooks refuse.

#include "runtime/ip_address.hpp"
#include "runtime/url.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

using namespace drover;

namespace {

http_url must_parse(const std::string& text) {
  auto url = parse_http_url(text);
  INFO(text << ": " << (url ? "" : describe(url.error())));
  REQUIRE(url);
  return *url;
}

ip_address addr(const std::string& text) {
  auto x = parse_ip_address(text);
  INFO(text);
  REQUIRE(x);
  return *x;
}

std::string why(const std::string& text) {
  auto reason = special_purpose(addr(text));
  return reason == nullptr ? "public" : reason;
}

} // namespace

TEST_CASE("http(s) URLs are parsed into host, port and target", "[url]") {
  auto u = must_parse("https://Example.COM/hooks/drover?x=1&y=%20");
  CHECK(u.https);
  CHECK(u.host == "example.com");
  CHECK(u.host_kind == url_host_kind::name);
  CHECK(u.port == 443);
  CHECK_FALSE(u.explicit_port);
  CHECK(u.target == "/hooks/drover?x=1&y=%20");
  CHECK(u.host_header() == "example.com");

  u = must_parse("HTTP://127.0.0.1:8080");
  CHECK_FALSE(u.https);
  CHECK(u.host_kind == url_host_kind::ipv4);
  CHECK(u.port == 8080);
  CHECK(u.target == "/");
  CHECK(u.host_header() == "127.0.0.1:8080");

  u = must_parse("http://[::FFFF:127.0.0.1]:81?q");
  CHECK(u.host_kind == url_host_kind::ipv6);
  CHECK(u.host == "::ffff:127.0.0.1");
  CHECK(u.target == "/?q");
  CHECK(u.host_header() == "[::ffff:127.0.0.1]:81");

  u = must_parse("https://a-b.c0.example:65535/");
  CHECK(u.port == 65535);
}

TEST_CASE("malformed URLs are refused, each with its reason", "[url]") {
  auto refused = [](const std::string& text, const std::string& fragment) {
    auto url = parse_http_url(text);
    INFO(text);
    REQUIRE_FALSE(url);
    CHECK(is(url.error(), errc::invalid_value));
    CHECK_THAT(describe(url.error()), Catch::Contains(fragment));
  };
  refused("ftp://example.com/", "http:// or https://");
  refused("example.com/hook", "http:// or https://");
  refused("https://", "has no host");
  refused("https://:80/", "has no host");
  refused("https://user:pw@example.com/", "user info");
  refused("https://example.com/#top", "fragment");
  refused("https://example.com/a b", "printable ASCII");
  refused("https://example.com/\x01", "printable ASCII");
  refused("https://b\xc3\xbc"
          "cher.example/",
          "printable ASCII");
  refused("https://example.com/a\"b", "unencoded");
  refused("https://example.com/a\\b", "unencoded");
  refused("https://example.com/%4", "two hex digits");
  refused("https://example.com:/", "invalid port");
  refused("https://example.com:0/", "invalid port");
  refused("https://example.com:65536/", "invalid port");
  refused("https://example.com:8o/", "invalid port");
  refused("https://exa_mple.com/", "letters, digits");
  refused("https://-example.com/", "starting or ending with '-'");
  refused("https://example..com/", "empty label");
  refused("https://example.com./", "empty label");
  refused("https://127.1/", "neither a name nor an IPv4 address");
  refused("https://2130706433/", "neither a name nor an IPv4 address");
  refused("https://010.0.0.1/", "neither a name nor an IPv4 address");
  refused("https://256.0.0.1/", "neither a name nor an IPv4 address");
  refused("https://[::1/", "unterminated");
  refused("https://[127.0.0.1]/", "not IPv6");
  refused("https://[fe80::1%25eth0]/", "zone");
  refused("https://[::1]x/", "after the IPv6 address");
  refused("https://::1/", "has no host");
  refused("https://" + std::string(64, 'a') + ".com/", "over 63");
}

TEST_CASE("IP addresses and networks parse strictly", "[url][ip]") {
  CHECK(addr("192.0.2.1").to_string() == "192.0.2.1");
  CHECK(addr("2001:DB8::1").to_string() == "2001:db8::1");
  CHECK_FALSE(parse_ip_address("1.2.3"));
  CHECK_FALSE(parse_ip_address("1.2.3.4.5"));
  CHECK_FALSE(parse_ip_address("01.2.3.4"));
  CHECK_FALSE(parse_ip_address("1.2.3.256"));
  CHECK_FALSE(parse_ip_address("::1%lo"));
  CHECK_FALSE(parse_ip_address("localhost"));
  CHECK(unmapped(addr("::ffff:10.0.0.1")) == addr("10.0.0.1"));
  CHECK(unmapped(addr("::1")) == addr("::1"));

  auto net = parse_ip_network("10.0.0.0/8");
  REQUIRE(net);
  CHECK(net->contains(addr("10.255.1.2")));
  CHECK(net->contains(addr("::ffff:10.1.1.1"))); // mapped counts as IPv4
  CHECK_FALSE(net->contains(addr("11.0.0.1")));
  CHECK_FALSE(net->contains(addr("::a00:1")));
  auto host = parse_ip_network("127.0.0.1");
  REQUIRE(host);
  CHECK(host->prefix == 32);
  CHECK(host->contains(addr("127.0.0.1")));
  CHECK_FALSE(host->contains(addr("127.0.0.2")));
  auto v6 = parse_ip_network("fc00::/7");
  REQUIRE(v6);
  CHECK(v6->contains(addr("fd12:3456::1")));
  CHECK_FALSE(v6->contains(addr("fe00::1")));
  auto all = parse_ip_network("0.0.0.0/0");
  REQUIRE(all);
  CHECK(all->contains(addr("8.8.8.8")));
  CHECK_FALSE(parse_ip_network("10.0.0.1/8"));
  CHECK_FALSE(parse_ip_network("10.0.0.0/33"));
  CHECK_FALSE(parse_ip_network("10.0.0.0/"));
  CHECK_FALSE(parse_ip_network("10.0.0.0/08"));
  CHECK_FALSE(parse_ip_network("::ffff:127.0.0.1/128"));
}

TEST_CASE("special-purpose addresses are named", "[url][ip]") {
  CHECK(why("127.0.0.1") == "loopback");
  CHECK(why("127.255.0.9") == "loopback");
  CHECK(why("::1") == "loopback");
  CHECK(why("::ffff:127.0.0.1") == "loopback");
  CHECK(why("10.1.2.3") == "private");
  CHECK(why("172.16.0.1") == "private");
  CHECK(why("172.31.255.255") == "private");
  CHECK(why("192.168.1.1") == "private");
  CHECK(why("fd00::1") == "private (unique local)");
  CHECK(why("169.254.169.254").find("link-local") == 0);
  CHECK(why("fe80::1") == "link-local");
  CHECK(why("0.0.0.0").find("unspecified") == 0);
  CHECK(why("::") == "unspecified");
  CHECK(why("224.0.0.1") == "multicast");
  CHECK(why("ff02::1") == "multicast");
  CHECK(why("100.64.0.1") == "carrier-grade NAT");
  CHECK(why("100.127.255.255") == "carrier-grade NAT");
  CHECK(why("255.255.255.255").find("reserved") == 0);
  CHECK(why("::ffff:169.254.169.254").find("link-local") == 0);
  CHECK(why("2002:7f00:1::").find("6to4") == 0);   // 6to4 of 127.0.0.1
  CHECK(why("64:ff9b::a00:1").find("NAT64") == 0); // NAT64 of 10.0.0.1
  // Public addresses, including neighbours of the ranges.
  CHECK(why("8.8.8.8") == "public");
  CHECK(why("172.32.0.1") == "public");
  CHECK(why("100.128.0.1") == "public");
  CHECK(why("169.255.0.1") == "public");
  CHECK(why("2606:4700::1111") == "public");
  CHECK(why("2002:808:808::") == "public");   // 6to4 of 8.8.8.8
  CHECK(why("64:ff9b::808:808") == "public"); // NAT64 of 8.8.8.8
}
