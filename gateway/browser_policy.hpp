#pragma once

// What the gateway demands of a request before it routes it, because a web
// browser is a client that runs any site's code: a page on any origin can
// reach 127.0.0.1, and DNS rebinding can give an attacker's name our
// address. docs/security.md ("Browsers") explains the threat; docs/api.md
// the rules. Decisions are pure functions of the request and the config,
// checked in this order:
//
// 1. Host. HTTP/1.1 without Host is 400. The Host's name must be one of:
//    127.0.0.1, localhost and [::1] when the listener is loopback or a
//    wildcard (0.0.0.0, ::); the listen address when it is a specific one;
//    the configured names (--http-allowed-host "name" or "name:port").
//    When the Host carries a port it must be the entry's port (the bound
//    port for the built-in names; any port for a configured name without
//    one). Anything else is 421 Misdirected Request: a DNS-rebinding page
//    always names the attacker's host, never ours.
// 2. CORS preflight: OPTIONS with Origin and Access-Control-Request-Method.
//    An allowed origin gets 204 with Access-Control-Allow-Origin echoing it,
//    Vary, Allow-Methods, Allow-Headers (Authorization, Content-Type,
//    Idempotency-Key, Last-Event-ID) and Max-Age; any other origin 403
//    without CORS headers. (OPTIONS without those: 204 with Allow.)
// 3. JSON bodies only: POST/PUT/PATCH with a body or a Content-Type must be
//    application/json (parameters allowed; a charset must be utf-8), else
//    415. This also keeps "simple" cross-origin requests (text/plain forms)
//    from ever reaching a handler.
// 4. Origin, on POST/PUT/PATCH/DELETE and WebSocket upgrades: absent is
//    fine (curl, servers: no ambient browser credentials to abuse); present,
//    it must be same-origin (its host and port are the Host's) or one of the
//    configured --http-cors-origin entries, compared exactly after the
//    browser's own serialization (scheme://host[:port], lowercase, no
//    default port). "null" never matches. Otherwise 403.
//
// Responses to an allowed cross-origin request carry
// Access-Control-Allow-Origin (the exact origin, never "*"),
// Access-Control-Expose-Headers, and every response to a request with an
// Origin carries Vary: Origin. Access-Control-Allow-Credentials is never
// sent: Drover authenticates with bearer keys and stream tokens that the
// page adds itself, never with cookies, so a browser must not attach
// ambient credentials to these requests.

#include "gateway/server.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace drover::http {

struct browser_policy_config {
  /// --http-host as configured (an address or a name).
  std::string listen_host = "127.0.0.1";
  /// The bound port.
  uint16_t port = 0;
  /// --http-allowed-host entries: "name" or "name:port" ("[v6]:port").
  std::vector<std::string> allowed_hosts;
  /// --http-cors-origin entries: "scheme://host[:port]".
  std::vector<std::string> cors_origins;
  /// The option that adds Host names, for the 421's message.
  std::string allowed_hosts_option = "--http-allowed-host";
};

/// The policy's answer for one request.
struct browser_verdict {
  /// 0: route the request. Otherwise answer with this status: 204 for a
  /// preflight or a plain OPTIONS (no body), else the error below.
  unsigned status = 0;
  std::string code;
  std::string message;
  /// Headers for every response to this request (CORS), the answer above
  /// included.
  header_list headers;
};

class browser_policy {
public:
  /// Checks the entries (errc::bad_config naming a bad one: an origin with
  /// a path, "null", "*", a host with a scheme, ...).
  static caf::expected<browser_policy> make(browser_policy_config cfg);

  browser_policy() = default;

  browser_verdict check(const request& req) const;

  /// Rule 1 alone (Host), for a listener that answers no browser-facing
  /// request besides GET (the metrics endpoint, gateway/metrics_endpoint.hpp).
  /// `name` and `port` (if given) receive the Host header's parts (empty
  /// and -1 without one).
  browser_verdict check_host(const request& req, std::string* name = nullptr,
                             int* port = nullptr) const;

  /// The Host values accepted, for the startup line ("127.0.0.1:8080, ...").
  std::string describe_hosts() const;

private:
  struct host_entry {
    std::string name; // lowercase; IPv6 in brackets
    int port = -1;    // -1: any
  };

  bool host_allowed(const std::string& name, int port) const;
  bool origin_allowed(const std::string& origin) const;

  std::vector<host_entry> hosts_;
  std::string allowed_hosts_option_;
  std::vector<std::string> origins_;
};

/// `ex` with `headers` added to each response it sends (its answer or its
/// stream's head; not a WebSocket handshake): how the verdict's CORS
/// headers reach every answer without each handler knowing about them.
/// `ex` itself when `headers` is empty.
std::shared_ptr<exchange> with_headers(std::shared_ptr<exchange> ex,
                                       header_list headers);

} // namespace drover::http
