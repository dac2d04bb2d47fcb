#include "gateway/metrics_endpoint.hpp"

#include "gateway/auth.hpp"
#include "gateway/browser_policy.hpp"
#include "gateway/metrics.hpp"
#include "runtime/errors.hpp"

#include <boost/beast/http/field.hpp>
#include <boost/beast/http/verb.hpp>

#include <mutex>
#include <string_view>
#include <utility>

namespace drover::http {

namespace {

namespace bhttp = boost::beast::http;

/// What the listener shares with the answers under way: an answer that
/// arrives after stop() finds `open` false and is dropped, and the server
/// (its io_context) lives until the last exchange is gone.
struct core {
  std::mutex mx;
  bool open = true;
  std::unique_ptr<server> srv;
  browser_policy policy;
  /// The scrapers' token as the one key of a ring (key_ring: the bearer
  /// parse and the constant-time compare of the HTTP API); no key = no
  /// token asked (loopback).
  key_ring token{{}};
  metrics_source source;
};

/// One answer under way. Members go in reverse order: the exchange (its
/// connection) before the core that owns the io_context.
struct pending {
  std::shared_ptr<core> owner;
  std::shared_ptr<exchange> ex;
};

void answer(const std::shared_ptr<exchange>& ex, unsigned status,
            std::string text, header_list headers = {}) {
  headers.emplace_back("X-Content-Type-Options", "nosniff");
  ex->respond(status, std::move(text) + '\n', std::move(headers),
              "text/plain; charset=utf-8");
}

void handle(const std::shared_ptr<core>& c, std::shared_ptr<exchange> ex) {
  const auto& req = ex->req();
  if (auto v = c->policy.check_host(req); v.status != 0)
    return answer(ex, v.status, v.message);
  auto target = req.target();
  std::string_view path{target.data(), target.size()};
  path = path.substr(0, path.find('?'));
  if (path != "/metrics")
    return answer(ex, 404, "not found: this port serves GET /metrics only");
  auto method = req.method();
  if (method != bhttp::verb::get && method != bhttp::verb::head)
    return answer(ex, 405, "method not allowed: GET or HEAD",
                  {{"Allow", "GET, HEAD"}});
  auto auth = req[bhttp::field::authorization];
  if (!c->token.development_mode()
      && !c->token.authenticate(std::string_view{auth.data(), auth.size()}))
    return answer(ex, 401, "unauthorized: send Authorization: Bearer <token>",
                  {{"WWW-Authenticate", "Bearer"}});
  auto p = std::make_shared<pending>(pending{c, std::move(ex)});
  c->source([p](caf::expected<std::string> text) {
    std::lock_guard<std::mutex> guard{p->owner->mx};
    if (!p->owner->open)
      return;
    if (!text)
      return answer(p->ex, 503,
                    "the figures are not available now: "
                        + describe(text.error()),
                    {{"Retry-After", "1"}});
    p->ex->respond(200, std::move(*text),
                   {{"X-Content-Type-Options", "nosniff"}},
                   metrics_content_type);
  });
}

class endpoint_impl : public metrics_endpoint {
public:
  explicit endpoint_impl(std::shared_ptr<core> c) : core_(std::move(c)) {
    // nop
  }

  uint16_t port() const override {
    return core_->srv->port();
  }

  void stop() override {
    {
      std::lock_guard<std::mutex> guard{core_->mx};
      if (!core_->open)
        return;
      core_->open = false;
    }
    core_->srv->stop();
  }

  ~endpoint_impl() override {
    stop();
  }

private:
  std::shared_ptr<core> core_;
};

} // namespace

caf::expected<std::unique_ptr<metrics_endpoint>>
metrics_endpoint::start(metrics_endpoint_config cfg, metrics_source source) {
  auto c = std::make_shared<core>();
  c->source = std::move(source);
  if (!cfg.bearer_token.empty()) {
    api_key k;
    k.name = "metrics";
    k.hash = sha256(cfg.bearer_token);
    k.scopes = scope_read;
    c->token = key_ring{{k}};
  }
  server_limits limits;
  limits.max_body_bytes = 0;
  limits.max_header_bytes = 8 * 1024;
  // A scraper sends its request at once: 2 s for it (and between
  // keep-alive requests) keeps idle sockets from filling the connections
  // for long. The cap is not per peer: a peer that keeps 128 idle sockets
  // open still blocks scrapes (docs/operations.md: firewall the port).
  limits.idle_timeout = std::chrono::seconds{2};
  limits.write_timeout = std::chrono::seconds{10};
  limits.max_stream_backlog_bytes = 0;
  limits.max_ws_message_bytes = 0;
  limits.max_connections = 128;
  // The server holds the handler and the core holds the server: a weak
  // reference breaks the cycle (the core outlives the server's threads).
  std::weak_ptr<core> weak = c;
  std::string error;
  c->srv = server::create(
      cfg.host, cfg.port, limits,
      [weak](std::shared_ptr<exchange> ex) {
        if (auto strong = weak.lock())
          handle(strong, std::move(ex));
      },
      error);
  if (!c->srv)
    return make_error(errc::bad_config, "metrics: " + error);
  browser_policy_config bp;
  bp.listen_host = cfg.host;
  bp.port = c->srv->port();
  bp.allowed_hosts = std::move(cfg.allowed_hosts);
  bp.allowed_hosts_option = cfg.allowed_hosts_option;
  auto policy = browser_policy::make(std::move(bp));
  if (!policy)
    return std::move(policy.error());
  c->policy = std::move(*policy);
  c->srv->run(1);
  return std::unique_ptr<metrics_endpoint>{new endpoint_impl(std::move(c))};
}

} // namespace drover::http
