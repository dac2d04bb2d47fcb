// The gateway's start, its plumbing (answers, errors, questions to the
// node API) and every request's way in: browser rules, authentication,
// rate limits and routing. See gateway/detail/gateway_impl.hpp.

#include "gateway/detail/gateway_impl.hpp"

#include "gateway/stream_token.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/json_text.hpp"

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>

namespace drover::http::gateway_detail {

namespace {

std::string percent_decode(std::string_view in) {
  std::string out;
  for (size_t i = 0; i < in.size(); ++i) {
    auto c = in[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%' && i + 2 < in.size()
               && std::isxdigit(static_cast<unsigned char>(in[i + 1]))
               && std::isxdigit(static_cast<unsigned char>(in[i + 2]))) {
      out += static_cast<char>(
          std::stoi(std::string{in.substr(i + 1, 2)}, nullptr, 16));
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

target split_target(std::string_view t) {
  target out;
  auto q = t.find('?');
  auto path = t.substr(0, q);
  size_t start = 0;
  while (start < path.size()) {
    auto slash = path.find('/', start);
    auto part = path.substr(start, slash == std::string_view::npos
                                       ? std::string_view::npos
                                       : slash - start);
    if (!part.empty())
      out.path.push_back(percent_decode(part));
    if (slash == std::string_view::npos)
      break;
    start = slash + 1;
  }
  if (q != std::string_view::npos) {
    auto query = t.substr(q + 1);
    size_t pos = 0;
    while (pos <= query.size()) {
      auto amp = query.find('&', pos);
      auto pair = query.substr(pos, amp == std::string_view::npos
                                        ? std::string_view::npos
                                        : amp - pos);
      if (!pair.empty()) {
        auto eq = pair.find('=');
        auto key = percent_decode(pair.substr(0, eq));
        auto value = eq == std::string_view::npos
                         ? std::string{}
                         : percent_decode(pair.substr(eq + 1));
        out.query[key] = value;
      }
      if (amp == std::string_view::npos)
        break;
      pos = amp + 1;
    }
  }
  return out;
}

/// The first part of the request target that is not valid UTF-8 without
/// NUL or control characters once percent-decoded (path segments, query
/// names and values), as a refusal naming it; none if all are fine.
caf::error check_target(const target& t) {
  for (const auto& segment : t.path)
    if (auto err = check_text_field(segment, "path"))
      return err;
  for (const auto& [name, value] : t.query) {
    if (auto err = check_text_field(name, "query parameter name"))
      return err;
    if (auto err = check_text_field(
            value, "query parameter '" + valid_utf8(name).substr(0, 64) + "'"))
      return err;
  }
  return {};
}

} // namespace

gateway_impl::gateway_impl(caf::actor_system& sys, api_actor api,
                           gateway_config cfg)
    : sys_(sys),
      api_(std::move(api)),
      cfg_(std::move(cfg)),
      keys_(cfg_.keys),
      limiter_(cfg_.keys.size(), cfg_.default_rate),
      streams_(cfg_.keys.size(), cfg_.max_streams_per_key) {
  json_limits_.max_bytes = cfg_.limits.max_body_bytes;
  json_limits_.max_json_depth = cfg_.max_json_depth;
}

caf::error gateway_impl::listen() {
  std::string error;
  auto self = this;
  server_ = server::create(
      cfg_.host, cfg_.port, cfg_.limits,
      [self](std::shared_ptr<exchange> ex) { self->handle(std::move(ex)); },
      error);
  if (!server_)
    return make_error(errc::bad_config, "http: " + error);
  // The Host check needs the bound port (port 0 picks one).
  browser_policy_config bp;
  bp.listen_host = cfg_.host;
  bp.port = server_->port();
  bp.allowed_hosts = cfg_.allowed_hosts;
  bp.cors_origins = cfg_.cors_origins;
  auto policy = browser_policy::make(std::move(bp));
  if (!policy) {
    server_->stop();
    return std::move(policy.error());
  }
  policy_ = std::move(*policy);
  if (cfg_.stream_token_key.empty())
    cfg_.stream_token_key = random_stream_token_key();
  server_->run(cfg_.threads);
  return {};
}

// -- plumbing -----------------------------------------------------------------

void gateway_impl::fail(const ex_ptr& ex, unsigned status,
                        std::string_view code, std::string_view message,
                        header_list headers) {
  reply(ex, status, error_json(code, message), std::move(headers));
}

void gateway_impl::fail(const ex_ptr& ex, const caf::error& err) {
  auto st = classify(err);
  header_list headers;
  // Overload (503) and a tenant over its cap of waiting jobs (429): the
  // client may try again, not at once.
  if (st.status == 503 || st.status == 429)
    headers.emplace_back("Retry-After", "1");
  fail(ex, st.status, st.code, context_of(err), std::move(headers));
}

/// Fetches the job and checks that `who` may see it (another tenant's
/// job is a 404, as if it didn't exist).
void gateway_impl::with_job(const ex_ptr& ex, const principal& who,
                            const std::string& id,
                            std::function<void(job_record&)> ok) {
  if (!valid_job_id(id)) {
    fail(ex, 404, "not_found", "no job '" + id + "'");
    return;
  }
  auto self = shared_from_this();
  ask<job_record>(
      ex,
      [self, ex, who, id, ok](job_record& job) {
        if (!self->visible(who, job)) {
          self->fail(ex, 404, "not_found", "no job '" + id + "'");
          return;
        }
        ok(job);
      },
      get_atom::value, id);
}

// -- dispatch -----------------------------------------------------------------

void gateway_impl::handle(ex_ptr raw) {
  // The browser rules first (Host, CORS preflight, Origin, JSON bodies:
  // gateway/browser_policy.hpp); they hold for every endpoint, and their
  // CORS headers go on every answer to this request.
  auto verdict = policy_.check(raw->req());
  auto ex = with_headers(std::move(raw), std::move(verdict.headers));
  if (verdict.status == 204)
    return ex->respond(204, {}, {}, {});
  if (verdict.status != 0)
    return fail(ex, verdict.status, verdict.code, verdict.message);
  auto& req = ex->req();
  auto t = split_target(
      std::string_view{req.target().data(), req.target().size()});
  auto method = req.method();
  using boost::beast::http::verb;
  auto& p = t.path;
  if (auto err = check_target(t))
    return fail(ex, err);
  if (p.size() == 1 && p[0] == "healthz") {
    if (method != verb::get)
      return not_allowed(ex, "GET");
    return reply(ex, 200, "{\"status\":\"ok\"}");
  }
  if (p.size() == 1 && p[0] == "readyz") {
    if (method != verb::get)
      return not_allowed(ex, "GET");
    return readyz(ex);
  }
  // /metrics (Prometheus) is authenticated like /api: admin scope.
  if (p.empty() || (p[0] != "api" && !(p.size() == 1 && p[0] == "metrics")))
    return fail(ex, 404, "not_found", "no such endpoint");
  // Everything under /api needs a principal: an API key, or a stream
  // token on the two stream endpoints.
  auto auth = req[boost::beast::http::field::authorization];
  auto token = t.query.find("token");
  std::string token_job; // what a stream token grants: a job id or "*"
  auto who
      = token == t.query.end()
            ? keys_.authenticate(std::string_view{auth.data(), auth.size()})
            : authenticate_token(t, token->second, !auth.empty(), token_job);
  if (!who) {
    if (is(who.error(), errc::conflict))
      return fail(ex, 400, "invalid_request", context_of(who.error()));
    return fail(ex, 401, "unauthorized", context_of(who.error()),
                {{"WWW-Authenticate", "Bearer"}});
  }
  double retry_after = 0;
  if (!limiter_.take(who->key,
                     who->key < keys_.size() ? keys_.at(who->key).rate : 0,
                     steady::now(), retry_after)) {
    auto secs
        = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(retry_after)));
    return fail(ex, 429, "rate_limited",
                "too many requests for key '" + who->key_name + "'",
                {{"Retry-After", std::to_string(secs)}});
  }
  if (!token_job.empty())
    return route_token(ex, *who, t, token_job);
  route(ex, *who, t);
}

void gateway_impl::not_allowed(const ex_ptr& ex, const char* allow) {
  fail(ex, 405, "method_not_allowed", "use " + std::string{allow},
       {{"Allow", allow}});
}

bool gateway_impl::require(const ex_ptr& ex, const principal& who, scope s) {
  if (who.has(s))
    return true;
  fail(ex, 403, "forbidden",
       "key '" + who.key_name + "' lacks the " + scope_name(s) + " scope");
  return false;
}

void gateway_impl::route(const ex_ptr& ex, const principal& who,
                         const target& t) {
  using boost::beast::http::verb;
  auto method = ex->req().method();
  auto& p = t.path;
  auto n = p.size();
  if (n == 1 && p[0] == "metrics") {
    if (method != verb::get)
      return not_allowed(ex, "GET");
    return require(ex, who, scope_admin) ? metrics(ex) : void();
  }
  if (n == 2 && p[1] == "ws") {
    if (!ex->wants_websocket())
      return fail(ex, 400, "bad_request", "expected a WebSocket upgrade");
    if (require(ex, who, scope_read))
      websocket(ex, who, {});
    return;
  }
  if (n == 2 && p[1] == "stream-token") { // for /api/ws: any job
    if (method != verb::post)
      return not_allowed(ex, "POST");
    return require(ex, who, scope_read) ? mint_token(ex, who, "*") : void();
  }
  if (n >= 2 && p[1] == "jobs") {
    if (n == 2) {
      if (method == verb::post)
        return require(ex, who, scope_submit) ? submit(ex, who) : void();
      if (method == verb::get)
        return require(ex, who, scope_read) ? list(ex, who, t, false) : void();
      return not_allowed(ex, "GET, POST");
    }
    if (n == 3 && p[2] == "batch") {
      if (method != verb::post)
        return not_allowed(ex, "POST");
      return require(ex, who, scope_submit) ? batch(ex, who) : void();
    }
    auto& id = p[2];
    if (n == 3) {
      if (method != verb::get)
        return not_allowed(ex, "GET");
      if (!require(ex, who, scope_read))
        return;
      return with_job(ex, who, id, [this, ex](job_record& job) {
        reply(ex, 200, job_json(job));
      });
    }
    if (n == 4 && p[3] == "cancel") {
      if (method != verb::post)
        return not_allowed(ex, "POST");
      return require(ex, who, scope_submit) ? cancel(ex, who, id) : void();
    }
    if (n == 4 && p[3] == "stream-token") {
      if (method != verb::post)
        return not_allowed(ex, "POST");
      if (!require(ex, who, scope_read))
        return;
      auto self = shared_from_this();
      return with_job(ex, who, id, [self, ex, who, id](job_record&) {
        self->mint_token(ex, who, id);
      });
    }
    if (n == 4 && method != verb::get)
      return not_allowed(ex, "GET");
    if (n == 4 && p[3] == "result")
      return require(ex, who, scope_read) ? result(ex, who, id) : void();
    if (n == 4 && p[3] == "events")
      return require(ex, who, scope_read) ? events(ex, who, id, t) : void();
    if (n == 4 && p[3] == "stream")
      return require(ex, who, scope_read) ? stream(ex, who, id, t) : void();
  }
  if (n >= 2 && p[1] == "dlq") {
    if (n == 2) {
      if (method == verb::get)
        return require(ex, who, scope_read) ? list(ex, who, t, true) : void();
      if (method == verb::delete_) // every tenant's: admin only
        return require(ex, who, scope_admin) ? purge_all(ex) : void();
      return not_allowed(ex, "GET, DELETE");
    }
    if (n == 3) {
      if (method != verb::delete_)
        return not_allowed(ex, "DELETE");
      return require(ex, who, scope_submit)
                 ? dlq_action(ex, who, p[2], 200, purge_atom::value)
                 : void();
    }
    if (n == 4 && p[3] == "retry") {
      if (method != verb::post)
        return not_allowed(ex, "POST");
      return require(ex, who, scope_submit)
                 ? dlq_action(ex, who, p[2], 202, redrive_atom::value)
                 : void();
    }
  }
  if (n == 4 && p[1] == "admin"
      && (p[2] == "rate-limits" || p[2] == "breakers")) {
    if (method != verb::put)
      return not_allowed(ex, "PUT");
    return require(ex, who, scope_admin) ? set_flow(
               ex, p[2] == "rate-limits" ? "rate_limit" : "breaker", p[3])
                                         : void();
  }
  if (n == 3 && p[1] == "admin") {
    if (method != verb::get)
      return not_allowed(ex, "GET");
    if (p[2] == "tree")
      return require(ex, who, scope_admin) ? tree(ex) : void();
    if (p[2] == "queues")
      return require(ex, who, scope_admin) ? queues(ex) : void();
    if (p[2] == "streams")
      return require(ex, who, scope_admin) ? stream_stats(ex) : void();
    if (p[2] == "nodes")
      return require(ex, who, scope_admin) ? nodes(ex) : void();
    if (p[2] == "flow")
      return require(ex, who, scope_admin) ? flow(ex) : void();
  }
  fail(ex, 404, "not_found", "no such endpoint");
}

} // namespace drover::http::gateway_detail

namespace drover::http {

bool is_loopback_host(const std::string& host) {
  if (host == "localhost")
    return true;
  boost::system::error_code ec;
  auto a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

caf::expected<std::unique_ptr<gateway>>
gateway::start(caf::actor_system& sys, api_actor api, gateway_config cfg) {
  if (cfg.keys.empty() && !is_loopback_host(cfg.host))
    return make_error(errc::bad_config,
                      "http: no API keys are configured, so the gateway only "
                      "listens on loopback (127.0.0.1, ::1); add --api-key to "
                      "serve "
                          + cfg.host);
  if (cfg.max_batch == 0 || cfg.threads == 0)
    return make_error(errc::bad_config,
                      "http: batch size and threads must be >= 1");
  if (!cfg.stream_token_key.empty()
      && cfg.stream_token_key.size() < min_stream_token_key_bytes)
    return make_error(errc::bad_config,
                      "http: the stream-token key must have at least 32 bytes");
  if (cfg.stream_token_ttl.count() < 1
      || cfg.stream_token_ttl > max_stream_token_ttl)
    return make_error(errc::bad_config,
                      "http: stream-token lifetime must be within [1, 600] s");
  auto gw = std::make_shared<gateway_detail::gateway_impl>(sys, std::move(api),
                                                           std::move(cfg));
  if (auto err = gw->listen())
    return err;
  // The caller owns it through a unique_ptr; handlers hold shared refs.
  struct holder : gateway {
    std::shared_ptr<gateway_detail::gateway_impl> impl;
    uint16_t port() const override {
      return impl->port();
    }
    bool development_mode() const override {
      return impl->development_mode();
    }
    void stop() override {
      impl->stop();
    }
    ~holder() override {
      impl->stop();
    }
  };
  auto h = std::make_unique<holder>();
  h->impl = std::move(gw);
  return std::unique_ptr<gateway>{std::move(h)};
}

} // namespace drover::http
