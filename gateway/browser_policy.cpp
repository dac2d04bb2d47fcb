#include "gateway/browser_policy.hpp"

#include "runtime/errors.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <algorithm>
#include <cctype>

namespace drover::http {

namespace {

namespace bhttp = boost::beast::http;

std::string lower(std::string_view text) {
  std::string out{text};
  for (auto& c : out)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t'))
    text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t'))
    text.remove_suffix(1);
  return text;
}

/// 1-5 digits within [1, 65535]; -2 otherwise.
int parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5)
    return -2;
  int n = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return -2;
    n = n * 10 + (c - '0');
  }
  return n >= 1 && n <= 65535 ? n : -2;
}

/// Splits "name[:port]" or "[v6][:port]" into a lowercase name (brackets
/// kept) and a port (-1 when absent). False if it is not an authority
/// (userinfo, paths, spaces, an empty name, ...).
bool split_authority(std::string_view text, std::string& name, int& port) {
  port = -1;
  std::string_view host;
  std::string_view rest;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close < 3)
      return false;
    host = text.substr(0, close + 1);
    rest = text.substr(close + 1);
    for (char c : host.substr(1, host.size() - 2))
      if (!std::isxdigit(static_cast<unsigned char>(c)) && c != ':' && c != '.')
        return false;
  } else {
    auto colon = text.find(':');
    host = text.substr(0, colon);
    rest = colon == std::string_view::npos ? std::string_view{}
                                           : text.substr(colon);
    if (host.empty())
      return false;
    for (char c : host)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.'
          && c != '_')
        return false;
  }
  if (!rest.empty()) {
    if (rest.front() != ':')
      return false;
    port = parse_port(rest.substr(1));
    if (port < 0)
      return false;
  }
  name = lower(host);
  return true;
}

struct origin_parts {
  std::string scheme;
  std::string name;
  int port = -1; // effective: explicit or the scheme's default
};

/// Parses a serialized origin "scheme://host[:port]" (http or https).
bool parse_origin(std::string_view text, origin_parts& out) {
  auto sep = text.find("://");
  if (sep == std::string_view::npos)
    return false;
  out.scheme = lower(text.substr(0, sep));
  if (out.scheme != "http" && out.scheme != "https")
    return false;
  int port = -1;
  if (!split_authority(text.substr(sep + 3), out.name, port))
    return false;
  out.port = port >= 0 ? port : (out.scheme == "https" ? 443 : 80);
  return true;
}

bool state_changing(bhttp::verb v) {
  return v == bhttp::verb::post || v == bhttp::verb::put
         || v == bhttp::verb::patch || v == bhttp::verb::delete_;
}

bool has_body(bhttp::verb v) {
  return v == bhttp::verb::post || v == bhttp::verb::put
         || v == bhttp::verb::patch;
}

/// "application/json" with no charset or charset=utf-8.
bool is_json_media_type(std::string_view value) {
  auto semi = value.find(';');
  if (lower(trim(value.substr(0, semi))) != "application/json")
    return false;
  while (semi != std::string_view::npos) {
    auto rest = value.substr(semi + 1);
    auto next = rest.find(';');
    auto param = trim(rest.substr(0, next));
    semi = next == std::string_view::npos ? next : semi + 1 + next;
    auto eq = param.find('=');
    if (eq == std::string_view::npos)
      continue;
    if (lower(trim(param.substr(0, eq))) != "charset")
      continue;
    auto v = trim(param.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"')
      v = v.substr(1, v.size() - 2);
    if (lower(v) != "utf-8")
      return false;
  }
  return true;
}

browser_verdict refuse(unsigned status, std::string code, std::string message,
                       header_list headers = {}) {
  browser_verdict v;
  v.status = status;
  v.code = std::move(code);
  v.message = std::move(message);
  v.headers = std::move(headers);
  return v;
}

/// Forwards everything to the wrapped exchange, adding headers to its
/// answers.
class decorated_exchange : public exchange {
public:
  decorated_exchange(std::shared_ptr<exchange> inner, header_list headers)
      : inner_(std::move(inner)), headers_(std::move(headers)) {
    // nop
  }

  const request& req() const override {
    return inner_->req();
  }

  const std::string& remote() const override {
    return inner_->remote();
  }

  void respond(unsigned status, std::string body, header_list headers,
               std::string content_type) override {
    inner_->respond(status, std::move(body), merged(std::move(headers)),
                    std::move(content_type));
  }

  void start_stream(header_list headers) override {
    inner_->start_stream(merged(std::move(headers)));
  }

  bool send(std::string data) override {
    return inner_->send(std::move(data));
  }

  void end_stream() override {
    inner_->end_stream();
  }

  void on_close(std::function<void()> fn) override {
    inner_->on_close(std::move(fn));
  }

  bool wants_websocket() const override {
    return inner_->wants_websocket();
  }

  void accept_websocket(
      std::function<void(std::shared_ptr<ws_channel>)> on_open) override {
    inner_->accept_websocket(std::move(on_open));
  }

private:
  /// Ours first: a handler's own header of the same name wins.
  header_list merged(header_list theirs) const {
    header_list out = headers_;
    out.insert(out.end(), std::make_move_iterator(theirs.begin()),
               std::make_move_iterator(theirs.end()));
    return out;
  }

  std::shared_ptr<exchange> inner_;
  const header_list headers_;
};

} // namespace

std::shared_ptr<exchange> with_headers(std::shared_ptr<exchange> ex,
                                       header_list headers) {
  if (headers.empty())
    return ex;
  return std::make_shared<decorated_exchange>(std::move(ex),
                                              std::move(headers));
}

caf::expected<browser_policy> browser_policy::make(browser_policy_config cfg) {
  browser_policy p;
  p.allowed_hosts_option_ = cfg.allowed_hosts_option;
  boost::system::error_code ec;
  auto address = boost::asio::ip::make_address(cfg.listen_host, ec);
  bool loopback_names
      = cfg.listen_host == "localhost"
        || (!ec && (address.is_loopback() || address.is_unspecified()));
  if (loopback_names)
    for (auto name : {"127.0.0.1", "localhost", "[::1]"})
      p.hosts_.push_back({name, cfg.port});
  if (!ec && !address.is_unspecified() && !address.is_loopback())
    p.hosts_.push_back({address.is_v6() ? "[" + address.to_string() + "]"
                                        : address.to_string(),
                        cfg.port});
  else if (ec && cfg.listen_host != "localhost")
    p.hosts_.push_back({lower(cfg.listen_host), cfg.port});
  for (auto& entry : cfg.allowed_hosts) {
    host_entry h;
    if (entry.find("://") != std::string::npos
        || !split_authority(entry, h.name, h.port))
      return make_error(errc::bad_config,
                        cfg.allowed_hosts_option.substr(2) + " '" + entry
                            + "': expected a host name or address with an "
                              "optional port (api.example.com, "
                              "10.0.0.5:8080, [2001:db8::1]:8080)");
    p.hosts_.push_back(std::move(h));
  }
  for (auto& entry : cfg.cors_origins) {
    origin_parts o;
    auto hint = "http-cors-origin '" + entry + "': ";
    if (entry == "null" || entry == "*")
      return make_error(errc::bad_config,
                        hint
                            + "only exact origins can be allowed (never "
                              "\"null\" or \"*\")");
    if (!parse_origin(entry, o))
      return make_error(errc::bad_config,
                        hint
                            + "expected scheme://host[:port] with scheme "
                              "http or https and nothing after the port");
    // Browsers send the origin serialized: lowercase, no default port.
    bool default_port
        = entry.size() > 3
          && (entry.rfind(":80") == entry.size() - 3
              || (entry.size() > 4 && entry.rfind(":443") == entry.size() - 4));
    if (lower(entry) != entry || default_port)
      return make_error(errc::bad_config,
                        hint
                            + "write it as a browser sends it: lowercase, "
                              "without the scheme's default port");
    p.origins_.push_back(entry);
  }
  return p;
}

bool browser_policy::host_allowed(const std::string& name, int port) const {
  for (auto& h : hosts_)
    if (h.name == name && (port < 0 || h.port < 0 || h.port == port))
      return true;
  return false;
}

bool browser_policy::origin_allowed(const std::string& origin) const {
  return std::find(origins_.begin(), origins_.end(), origin) != origins_.end();
}

browser_verdict browser_policy::check_host(const request& req,
                                           std::string* name, int* port) const {
  auto host_field = req[bhttp::field::host];
  if (host_field.empty()) {
    if (req.version() >= 11)
      return refuse(400, "bad_request", "HTTP/1.1 requests need a Host header");
    return {};
  }
  std::string local_name;
  int local_port = -1;
  auto& host_name = name != nullptr ? *name : local_name;
  auto& host_port = port != nullptr ? *port : local_port;
  std::string_view text{host_field.data(), host_field.size()};
  if (!split_authority(text, host_name, host_port))
    return refuse(400, "bad_request", "the Host header is not host[:port]");
  if (!host_allowed(host_name, host_port))
    return refuse(421, "misdirected_request",
                  "this listener does not serve the host named in the Host "
                  "header (an operator adds names with "
                      + allowed_hosts_option_ + ")");
  return {};
}

browser_verdict browser_policy::check(const request& req) const {
  // 1. Host.
  std::string host_name;
  int host_port = -1;
  if (auto v = check_host(req, &host_name, &host_port); v.status != 0)
    return v;
  // 2. CORS preflight, and the headers an allowed origin gets.
  auto origin_field = req[bhttp::field::origin];
  std::string origin{origin_field.data(), origin_field.size()};
  bool has_origin = !origin_field.empty();
  bool listed = has_origin && origin_allowed(origin);
  bool same_origin = false;
  if (has_origin && !host_name.empty()) {
    origin_parts o;
    if (parse_origin(origin, o))
      // A Host without a port means the scheme's default one.
      same_origin = o.name == host_name
                    && o.port
                           == (host_port >= 0        ? host_port
                               : o.scheme == "https" ? 443
                                                     : 80);
  }
  header_list cors;
  if (has_origin)
    cors.emplace_back("Vary", "Origin");
  if (listed) {
    cors.emplace_back("Access-Control-Allow-Origin", origin);
    cors.emplace_back("Access-Control-Expose-Headers",
                      "Location, Retry-After, WWW-Authenticate");
  }
  auto method = req.method();
  if (method == bhttp::verb::options) {
    auto wanted = req[bhttp::field::access_control_request_method];
    if (!has_origin || wanted.empty()) {
      browser_verdict v;
      v.status = 204;
      v.headers = std::move(cors);
      v.headers.emplace_back("Allow", "GET, POST, PUT, DELETE, OPTIONS");
      return v;
    }
    if (!listed && !same_origin)
      return refuse(403, "forbidden_origin",
                    "origin not allowed (the gateway's --http-cors-origin "
                    "list does not name it)",
                    {{"Vary", "Origin"}});
    browser_verdict v;
    v.status = 204;
    v.headers = {
        {"Access-Control-Allow-Origin", origin},
        {"Access-Control-Allow-Methods", "GET, POST, PUT, DELETE"},
        {"Access-Control-Allow-Headers",
         "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"},
        {"Access-Control-Max-Age", "600"},
        {"Vary", "Origin, Access-Control-Request-Method, "
                 "Access-Control-Request-Headers"},
    };
    return v;
  }
  // 3. JSON bodies only (before the Origin: a text/plain form post is
  // refused as such, whoever sent it).
  auto type = req[bhttp::field::content_type];
  if (has_body(method) && (!req.body().empty() || !type.empty())
      && !is_json_media_type(std::string_view{type.data(), type.size()}))
    return refuse(415, "unsupported_media_type",
                  "request bodies must be JSON: send Content-Type: "
                  "application/json (charset, if any, utf-8)",
                  std::move(cors));
  // 4. Origin on state-changing requests and WebSocket upgrades.
  bool upgrade = boost::beast::websocket::is_upgrade(req);
  if (has_origin && !listed && !same_origin
      && (state_changing(method) || upgrade))
    return refuse(403, "forbidden_origin",
                  upgrade ? "WebSocket from an origin that is not allowed "
                            "(see --http-cors-origin)"
                          : "cross-origin request from an origin that is not "
                            "allowed (see --http-cors-origin)",
                  std::move(cors));
  browser_verdict v;
  v.headers = std::move(cors);
  return v;
}

std::string browser_policy::describe_hosts() const {
  std::string out;
  for (auto& h : hosts_) {
    if (!out.empty())
      out += ", ";
    out += h.name;
    if (h.port >= 0)
      out += ':' + std::to_string(h.port);
  }
  return out;
}

} // namespace drover::http
