#include "gateway/gateway.hpp"

#include "gateway/browser_policy.hpp"
#include "gateway/http_api.hpp"
#include "gateway/job_stream.hpp"
#include "gateway/metrics.hpp"
#include "gateway/stream_token.hpp"
#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/send.hpp>

#include <boost/asio/ip/address.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cmath>
#include <map>
#include <mutex>

namespace drover::http {

namespace {

using steady = std::chrono::steady_clock;

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

struct target {
  std::vector<std::string> path;
  std::map<std::string, std::string> query;
};

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

bool valid_job_id(const std::string& id) {
  return plausible_job_id(id);
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

/// Formats one server-sent event.
std::string sse(const std::string& event, uint64_t id,
                const std::string& data) {
  std::string out;
  out.reserve(data.size() + event.size() + 32);
  if (id > 0) {
    out += "id: ";
    out += std::to_string(id);
    out += '\n';
  }
  out += "event: ";
  out += event;
  out += "\ndata: ";
  out += data; // our JSON never contains raw newlines
  out += "\n\n";
  return out;
}

class gateway_impl : public gateway,
                     public std::enable_shared_from_this<gateway_impl> {
public:
  gateway_impl(caf::actor_system& sys, api_actor api, gateway_config cfg)
      : sys_(sys),
        api_(std::move(api)),
        cfg_(std::move(cfg)),
        keys_(cfg_.keys),
        limiter_(cfg_.keys.size(), cfg_.default_rate),
        streams_(cfg_.keys.size(), cfg_.max_streams_per_key) {
    json_limits_.max_bytes = cfg_.limits.max_body_bytes;
    json_limits_.max_json_depth = cfg_.max_json_depth;
  }

  caf::error listen() {
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

  uint16_t port() const override {
    return server_ ? server_->port() : 0;
  }

  bool development_mode() const override {
    return keys_.development_mode();
  }

  void stop() override {
    if (server_)
      server_->stop();
  }

  ~gateway_impl() override {
    stop();
  }

private:
  using ex_ptr = std::shared_ptr<exchange>;

  // -- plumbing ---------------------------------------------------------------

  void reply(const ex_ptr& ex, unsigned status, std::string body,
             header_list headers = {}) {
    ex->respond(status, std::move(body), std::move(headers));
  }

  void fail(const ex_ptr& ex, unsigned status, std::string_view code,
            std::string_view message, header_list headers = {}) {
    reply(ex, status, error_json(code, message), std::move(headers));
  }

  void fail(const ex_ptr& ex, const caf::error& err) {
    auto st = classify(err);
    header_list headers;
    // Overload (503) and a tenant over its cap of waiting jobs (429): the
    // client may try again, not at once.
    if (st.status == 503 || st.status == 429)
      headers.emplace_back("Retry-After", "1");
    fail(ex, st.status, st.code, context_of(err), std::move(headers));
  }

  /// Sends `xs` to the node API from a short-lived actor; `ok` gets the
  /// answer, errors go to the client.
  template <class R, class... Ts>
  void ask(const ex_ptr& ex, std::function<void(R&)> ok, Ts... xs) {
    auto api = api_;
    auto timeout = cfg_.request_timeout;
    auto self = shared_from_this();
    sys_.spawn([=](caf::event_based_actor* a) {
      a->request(api, timeout, xs...)
          .then([ok](R& r) { ok(r); },
                [self, ex](caf::error& err) { self->fail(ex, err); });
    });
  }

  /// Fetches the job and checks that `who` may see it (another tenant's
  /// job is a 404, as if it didn't exist).
  void with_job(const ex_ptr& ex, const principal& who, const std::string& id,
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

  bool visible(const principal& who, const job_record& job) const {
    return keys_.development_mode() || job.spec.tenant == who.tenant;
  }

  // -- dispatch ---------------------------------------------------------------

  void handle(ex_ptr raw) {
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

  // -- stream tokens (gateway/stream_token.hpp) -------------------------------

  static bool is_stream_endpoint(const target& t) {
    auto& p = t.path;
    return (p.size() == 2 && p[1] == "ws")
           || (p.size() == 4 && p[1] == "jobs" && p[3] == "stream");
  }

  /// The principal a `?token=` acts as (read scope only) and, in `job`,
  /// what it grants. errc::conflict if the request also has an
  /// Authorization header (400); other errors are 401s.
  caf::expected<principal> authenticate_token(const target& t,
                                              const std::string& token,
                                              bool has_authorization,
                                              std::string& job) const {
    if (has_authorization)
      return make_error(errc::conflict,
                        "send either an Authorization header or a stream "
                        "token, not both");
    if (!is_stream_endpoint(t))
      return make_error(errc::invalid_request,
                        "stream tokens are accepted only on GET "
                        "/api/jobs/{id}/stream and GET /api/ws");
    auto grant
        = verify_stream_token(cfg_.stream_token_key, token, unix_seconds_now());
    if (!grant)
      return std::move(grant.error());
    principal p;
    p.scopes = scope_read;
    if (keys_.development_mode()) {
      if (!grant->key_name.empty())
        return make_error(errc::invalid_request,
                          "stream token: minted by a gateway with API keys");
      p.key_name = "development";
    } else {
      // The key must still exist, for the same tenant, with read scope:
      // removing a key revokes its tokens.
      size_t i = 0;
      while (i < keys_.size() && keys_.at(i).name != grant->key_name)
        ++i;
      if (i == keys_.size() || keys_.at(i).tenant != grant->tenant
          || (keys_.at(i).scopes & scope_read) == 0)
        return make_error(errc::invalid_request,
                          "stream token: the key that minted it is no longer "
                          "configured with read scope");
      p.key = i;
      p.key_name = keys_.at(i).name;
      p.tenant = keys_.at(i).tenant;
    }
    job = grant->job;
    return p;
  }

  /// A request authenticated by a stream token: only the endpoint and the
  /// job it was minted for.
  void route_token(const ex_ptr& ex, const principal& who, const target& t,
                   const std::string& job) {
    using boost::beast::http::verb;
    if (ex->req().method() != verb::get)
      return not_allowed(ex, "GET");
    auto unauthorized = [&](const char* why) {
      fail(ex, 401, "unauthorized", why, {{"WWW-Authenticate", "Bearer"}});
    };
    if (t.path.size() == 2) { // /api/ws
      if (!ex->wants_websocket())
        return fail(ex, 400, "bad_request", "expected a WebSocket upgrade");
      return websocket(ex, who, job);
    }
    auto& id = t.path[2];
    if (job == "*")
      return unauthorized("stream token: this token is for WebSocket "
                          "subscriptions (GET /api/ws)");
    if (job != id)
      return unauthorized("stream token: this token is for another job");
    stream(ex, who, id, t);
  }

  /// Answers `{"token", "job_id", "expires_at"}` for `job` ("*": any job of
  /// the tenant, WebSocket only). The caller checked scope and visibility.
  void mint_token(const ex_ptr& ex, const principal& who,
                  const std::string& job) {
    auto& body = ex->req().body();
    if (!body.empty() && body != "{}")
      return fail(ex, 400, "invalid_request", "this endpoint takes no body");
    stream_grant g;
    g.key_name = who.key < keys_.size() ? who.key_name : std::string{};
    g.tenant = who.tenant;
    g.job = job;
    g.expires_at = unix_seconds_now() + cfg_.stream_token_ttl.count();
    auto token = mint_stream_token(cfg_.stream_token_key, g);
    if (!token)
      return fail(ex, token.error());
    reply(ex, 200,
          "{\"token\":" + json_quote(*token) + ",\"job_id\":" + json_quote(job)
              + ",\"expires_at\":" + json_quote(rfc3339(g.expires_at * 1000))
              + "}");
  }

  void not_allowed(const ex_ptr& ex, const char* allow) {
    fail(ex, 405, "method_not_allowed", "use " + std::string{allow},
         {{"Allow", allow}});
  }

  bool require(const ex_ptr& ex, const principal& who, scope s) {
    if (who.has(s))
      return true;
    fail(ex, 403, "forbidden",
         "key '" + who.key_name + "' lacks the " + scope_name(s) + " scope");
    return false;
  }

  // -- exec scope (issue 11 item 3) -------------------------------------------
  /// Jobs of type `exec` run programs on the workers: submitting one needs
  /// the exec scope on top of submit. The message a key without it gets,
  /// or "" if it may.
  static std::string exec_refusal(const principal& who,
                                  const std::string& type) {
    if (type != "exec" || who.has(scope_exec))
      return {};
    return "key '" + who.key_name
           + "' lacks the exec scope (needed for jobs of type exec)";
  }

  void route(const ex_ptr& ex, const principal& who, const target& t) {
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
          return require(ex, who, scope_read) ? list(ex, who, t, false)
                                              : void();
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
        return require(ex, who, scope_read) ? events(ex, who, id) : void();
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

  // -- endpoints --------------------------------------------------------------

  /// Applies the Idempotency-Key header; false (and answered) if it
  /// contradicts the body.
  bool apply_idempotency_header(const ex_ptr& ex, submit_request& req) {
    auto& fields = ex->req();
    auto found = fields.find("Idempotency-Key");
    if (found == fields.end())
      return true;
    auto h = found->value();
    std::string key{h.data(), h.size()};
    if (key.empty()) {
      fail(ex, 400, "invalid_request",
           "Idempotency-Key header: must not be empty (omit it for none)");
      return false;
    }
    if (auto err = check_text_field(key, "Idempotency-Key header")) {
      fail(ex, err);
      return false;
    }
    if (!req.idempotency_key.empty() && req.idempotency_key != key) {
      fail(ex, 400, "invalid_request",
           "Idempotency-Key header and idempotency_key field differ");
      return false;
    }
    req.idempotency_key = std::move(key);
    return true;
  }

  void submit(const ex_ptr& ex, const principal& who) {
    auto req = parse_submit(ex->req().body(), json_limits_);
    if (!req)
      return fail(ex, req.error());
    if (!apply_idempotency_header(ex, *req))
      return;
    if (auto refusal = exec_refusal(who, req->type); !refusal.empty())
      return fail(ex, 403, "forbidden", refusal); // exec scope check
    req->tenant = who.tenant;
    auto api = api_;
    auto timeout = cfg_.request_timeout;
    auto self = shared_from_this();
    sys_.spawn([=](caf::event_based_actor* a) {
      a->request(api, timeout, submit_atom::value, *req)
          .then(
              [self, ex](job_record& job) {
                self->reply(ex, 202, submitted_json(job),
                            {{"Location", "/api/jobs/" + job.job_id}});
              },
              [self, ex](caf::error& err) {
                if (is(err, errc::conflict))
                  self->fail(
                      ex, 422, "idempotency_conflict",
                      "this idempotency key was used for a different job "
                      "specification");
                else
                  self->fail(ex, err);
              });
    });
  }

  void batch(const ex_ptr& ex, const principal& who) {
    auto items = parse_batch(ex->req().body(), json_limits_, cfg_.max_batch);
    if (!items)
      return fail(ex, items.error());
    // Items the parser refused are answered here; the others go to the
    // node in one request, which the store commits in one transaction.
    std::vector<std::string> results(items->size());
    std::vector<size_t> index; // result slot of each request sent
    std::vector<submit_request> reqs;
    size_t accepted = 0;
    for (size_t i = 0; i < items->size(); ++i) {
      auto& item = (*items)[i];
      if (item.error) {
        auto s = classify(item.error);
        results[i] = item_error_json(s.code, context_of(item.error), s.status);
        continue;
      }
      if (auto refusal = exec_refusal(who, item.request.type);
          !refusal.empty()) { // exec scope check
        results[i] = item_error_json("forbidden", refusal, 403);
        continue;
      }
      item.request.tenant = who.tenant;
      index.push_back(i);
      reqs.push_back(std::move(item.request));
    }
    auto finish = [](const ex_ptr& ex, gateway_impl& gw,
                     const std::vector<std::string>& results, size_t accepted) {
      std::string body
          = "{\"accepted\":" + std::to_string(accepted) + ",\"rejected\":"
            + std::to_string(results.size() - accepted) + ",\"results\":[";
      for (size_t i = 0; i < results.size(); ++i) {
        if (i > 0)
          body += ',';
        body += results[i];
      }
      body += "]}";
      gw.reply(ex, 200, std::move(body));
    };
    if (reqs.empty())
      return finish(ex, *this, results, accepted);
    auto self = shared_from_this();
    auto shared
        = std::make_shared<std::vector<std::string>>(std::move(results));
    ask<std::vector<job_record>>(
        ex,
        [self, ex, shared, index, finish](std::vector<job_record>& recs) {
          size_t accepted = 0;
          for (size_t k = 0; k < recs.size() && k < index.size(); ++k) {
            auto& rec = recs[k];
            auto& out = (*shared)[index[k]];
            if (!rec.job_id.empty()) {
              out = submitted_json(rec);
              ++accepted;
              continue;
            }
            auto code = rec.error.code == "conflict"
                            ? std::string{"idempotency_conflict"}
                            : rec.error.code;
            // A tenant's or a partition's cap of waiting jobs (admission
            // control) keeps its code: the client should retry that item
            // later.
            auto status = code == "idempotency_conflict" ? 422u
                          : code == "too_large"          ? 413u
                          : code == "rate_limited"       ? 429u
                          : code == "overloaded"         ? 503u
                                                         : 400u;
            if (status == 400)
              code = "invalid_request";
            out = item_error_json(code, rec.error.message, status);
          }
          finish(ex, *self, *shared, accepted);
        },
        submit_atom::value, std::move(reqs));
  }

  /// One refused batch item: the error and the status it would have had
  /// as a single submission.
  static std::string item_error_json(const std::string& code,
                                     const std::string& message,
                                     unsigned status) {
    auto body = error_json(code, message);
    body.pop_back();
    return body + ",\"status\":" + std::to_string(status) + "}";
  }

  void list(const ex_ptr& ex, const principal& who, const target& t, bool dlq) {
    job_query q;
    q.tenant = keys_.development_mode() ? std::string{} : who.tenant;
    q.dead_lettered = dlq;
    for (auto& kv : t.query) {
      if (kv.first == "status") {
        job_status s;
        if (!from_string(kv.second, s))
          return fail(ex, 400, "invalid_request",
                      "status: unknown status '" + kv.second + "'");
        q.status = static_cast<int32_t>(s);
      } else if (kv.first == "type") {
        q.type = kv.second;
      } else if (kv.first == "cursor") {
        if (!kv.second.empty() && !valid_job_id(kv.second))
          return fail(ex, 400, "invalid_request", "cursor: not a job id");
        q.after = kv.second;
      } else if (kv.first == "limit") {
        char* end = nullptr;
        auto n = std::strtol(kv.second.c_str(), &end, 10);
        if (kv.second.empty() || *end != '\0' || n < 1 || n > 1000)
          return fail(ex, 400, "invalid_request",
                      "limit: an integer from 1 to 1000");
        q.limit = static_cast<uint32_t>(n);
      } else {
        return fail(ex, 400, "invalid_request",
                    kv.first + ": unknown query parameter");
      }
    }
    auto want = q.limit;
    q.limit = want + 1; // one more tells whether there is a next page
    auto self = shared_from_this();
    ask<std::vector<job_record>>(
        ex,
        [self, ex, want](std::vector<job_record>& jobs) {
          bool more = jobs.size() > want;
          if (more)
            jobs.resize(want);
          self->reply(ex, 200, job_page_json(jobs, more));
        },
        list_atom::value, q);
  }

  /// Sends `msg` to the node, then answers 202 with job `id` as it is
  /// afterwards.
  template <class... Ts>
  void act_then_show(const ex_ptr& ex, unsigned status, const std::string& id,
                     Ts... msg) {
    auto self = shared_from_this();
    ask<ok_atom>(
        ex,
        [self, ex, status, id](ok_atom&) {
          self->ask<job_record>(
              ex,
              [self, ex, status](job_record& job) {
                self->reply(ex, status, job_json(job));
              },
              get_atom::value, id);
        },
        msg...);
  }

  void cancel(const ex_ptr& ex, const principal& who, const std::string& id) {
    auto reason = parse_reason(ex->req().body(), json_limits_);
    if (!reason)
      return fail(ex, reason.error());
    auto self = shared_from_this();
    // The audit log records who asked (the key's name) and why.
    auto why = "requested with API key '" + who.key_name + "'"
               + (reason->empty() ? std::string{} : ": " + *reason);
    with_job(ex, who, id, [self, ex, id, why](job_record& job) {
      if (is_terminal(job.status)) {
        self->fail(ex, 409, "conflict",
                   "job '" + id + "' is already " + to_string(job.status));
        return;
      }
      self->act_then_show(ex, 202, id, cancel_atom::value, id, why);
    });
  }

  /// A dead-letter-queue operation on one job — retry (`redrive_atom`,
  /// 202) or purge (`purge_atom`, 200: the job leaves the DLQ for good, its
  /// history stays with a `purged` event) — answered with the job as it is
  /// afterwards; 409 unless the job is in the DLQ.
  template <class Atom>
  void dlq_action(const ex_ptr& ex, const principal& who, const std::string& id,
                  unsigned status, Atom op) {
    auto self = shared_from_this();
    with_job(ex, who, id, [self, ex, id, status, op](job_record& job) {
      if (!job.dead_lettered) {
        self->fail(ex, 409, "not_dead_lettered",
                   "job '" + id + "' is not in the dead-letter queue");
        return;
      }
      self->act_then_show(ex, status, id, op, id);
    });
  }

  /// Purges the whole dead-letter queue (every tenant's); `{"purged": n}`.
  void purge_all(const ex_ptr& ex) {
    auto self = shared_from_this();
    ask<uint32_t>(
        ex,
        [self, ex](uint32_t& n) {
          self->reply(ex, 200, "{\"purged\":" + std::to_string(n) + "}");
        },
        purge_atom::value, all_atom::value);
  }

  void result(const ex_ptr& ex, const principal& who, const std::string& id) {
    auto self = shared_from_this();
    with_job(ex, who, id, [self, ex, id](job_record& job) {
      if (job.status == job_status::completed) {
        self->reply(ex, 200, job.result.empty() ? "null" : job.result);
        return;
      }
      self->fail(ex, 409, "not_completed",
                 "job '" + id + "' is " + to_string(job.status)
                     + "; its result exists once it is completed");
    });
  }

  void events(const ex_ptr& ex, const principal& who, const std::string& id) {
    auto self = shared_from_this();
    with_job(ex, who, id, [self, ex, id](job_record&) {
      self->ask<std::vector<job_event>>(
          ex,
          [self, ex, id](std::vector<job_event>& evs) {
            self->reply(ex, 200, events_json(id, evs));
          },
          events_atom::value, id);
    });
  }

  void tree(const ex_ptr& ex) {
    // The tree as the supervisors describe it, with each running job's
    // record (progress, stage, ETA as last committed) under its node.
    auto api = api_;
    auto timeout = cfg_.request_timeout;
    auto self = shared_from_this();
    sys_.spawn([=](caf::event_based_actor* a) {
      a->request(api, timeout, describe_atom::value)
          .then(
              [=](tree_node& t) {
                std::vector<std::string> ids;
                running_job_ids(t, ids);
                auto tree = std::make_shared<tree_node>(std::move(t));
                auto jobs
                    = std::make_shared<std::map<std::string, job_record>>();
                auto pending = std::make_shared<size_t>(ids.size());
                if (ids.empty())
                  return self->reply(ex, 200, tree_json(*tree, *jobs));
                for (auto& id : ids)
                  a->request(api, timeout, get_atom::value, id)
                      .then(
                          [=](job_record& job) {
                            auto key = job.job_id;
                            jobs->emplace(key, std::move(job));
                            if (--*pending == 0)
                              self->reply(ex, 200, tree_json(*tree, *jobs));
                          },
                          [=](caf::error& err) {
                            // Finished meanwhile: shown without its record.
                            log::debug("http", log::job{id},
                                       "the tree shows a job without its "
                                       "record",
                                       {{"error", describe(err)}});
                            if (--*pending == 0)
                              self->reply(ex, 200, tree_json(*tree, *jobs));
                          });
              },
              [self, ex](caf::error& err) { self->fail(ex, err); });
    });
  }

  void nodes(const ex_ptr& ex) {
    auto self = shared_from_this();
    ask<std::string>(
        ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
        nodes_atom::value);
  }

  /// Rate limiters, breakers and the newest control-log entries.
  void flow(const ex_ptr& ex) {
    auto self = shared_from_this();
    ask<std::string>(
        ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
        flow_atom::value, uint32_t{50});
  }

  /// Creates or changes a rate limit or breaker; answers like flow().
  void set_flow(const ex_ptr& ex, const std::string& kind,
                const std::string& key) {
    auto spec = parse_flow_spec(ex->req().body(), json_limits_);
    if (!spec)
      return fail(ex, spec.error());
    auto self = shared_from_this();
    ask<std::string>(
        ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
        flow_atom::value, kind, key, std::move(*spec));
  }

  void queues(const ex_ptr& ex) {
    auto self = shared_from_this();
    ask<queue_stats>(
        ex,
        [self, ex](queue_stats& s) {
          std::array<double, 3> rates{-1, -1, -1};
          {
            std::lock_guard<std::mutex> guard{self->rates_mx_};
            auto now = steady::now();
            if (self->last_stats_at_ != steady::time_point{}) {
              std::chrono::duration<double> dt = now - self->last_stats_at_;
              if (dt.count() > 0)
                for (size_t i = 0; i < 3; ++i)
                  rates[i]
                      = (s.dispatched[i] >= self->last_stats_.dispatched[i]
                             ? s.dispatched[i] - self->last_stats_.dispatched[i]
                             : 0)
                        / dt.count();
            }
            self->last_stats_ = s;
            self->last_stats_at_ = now;
          }
          self->reply(ex, 200, queues_json(s, rates));
        },
        stats_atom::value);
  }

  void metrics(const ex_ptr& ex) {
    auto self = shared_from_this();
    auto api = api_;
    auto timeout = cfg_.request_timeout;
    ask<queue_stats>(
        ex,
        [self, ex, api, timeout](queue_stats& s) {
          auto text = std::make_shared<std::string>(
              metrics_text(s, read_process_figures()));
          // Then the limiters' and breakers' figures; without them if the
          // queue does not answer (the rest is still worth scraping).
          self->sys_.spawn([=](caf::event_based_actor* a) {
            a->request(api, timeout, flow_atom::value, uint32_t{0})
                .then(
                    [=](std::string& flow) {
                      self->reply(ex, 200, *text + flow_metrics_text(flow),
                                  {{"Content-Type", metrics_content_type}});
                    },
                    [=](caf::error& err) {
                      // The queue's figures still hold.
                      log::debug("http",
                                 "/metrics without the flow-control figures",
                                 {{"error", describe(err)}});
                      self->reply(ex, 200, *text,
                                  {{"Content-Type", metrics_content_type}});
                    });
          });
        },
        stats_atom::value);
  }

  void readyz(const ex_ptr& ex) {
    // Ready = the queue answers and the store can write.
    auto api = api_;
    auto self = shared_from_this();
    auto timeout
        = std::min(cfg_.request_timeout, std::chrono::milliseconds{2000});
    sys_.spawn([=](caf::event_based_actor* a) {
      // The queue's cheapest answer (its partitions); through a gateway
      // node's router, one coordinator's in turn (the figures would wait
      // for all of them: one paused coordinator would make every gateway
      // unready).
      a->request(api, timeout, partitions_atom::value)
          .then(
              [=](std::string&, int32_t) {
                // The store's write path, not just reads: a store that is
                // reconnecting refuses submits, so it is not ready.
                a->request(api, timeout, ping_atom::value)
                    .then(
                        [=](ok_atom) {
                          self->reply(ex, 200, "{\"status\":\"ready\"}");
                        },
                        [=](caf::error& err) {
                          self->fail(ex, 503, "unavailable",
                                     "store: " + context_of(err),
                                     {{"Retry-After", "1"}});
                        });
              },
              [=](caf::error& err) {
                self->fail(ex, 503, "unavailable", "queue: " + context_of(err),
                           {{"Retry-After", "1"}});
              });
    });
  }

  // -- streams ----------------------------------------------------------------

  /// Runs one job's event stream into `sink` (gateway/job_stream.hpp).
  caf::actor run_stream(std::string id, uint64_t after, stream_sink sink) {
    return spawn_job_stream(sys_, api_, cfg_.request_timeout,
                            cfg_.keepalive_interval, std::move(id), after,
                            std::move(sink));
  }

  static uint64_t parse_event_id(std::string_view text, bool& ok) {
    ok = true;
    if (text.empty())
      return 0;
    uint64_t n = 0;
    for (char c : text) {
      if (c < '0' || c > '9' || n > (uint64_t{1} << 60)) {
        ok = false;
        return 0;
      }
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
    return n;
  }

  void stream(const ex_ptr& ex, const principal& who, const std::string& id,
              const target& t) {
    auto h = ex->req()["Last-Event-ID"];
    std::string last{h.data(), h.size()};
    if (last.empty()) {
      auto q = t.query.find("last_event_id");
      if (q != t.query.end())
        last = q->second;
    }
    bool ok = true;
    auto after = parse_event_id(last, ok);
    if (!ok)
      return fail(ex, 400, "invalid_request",
                  "Last-Event-ID: expected an event sequence number");
    auto self = shared_from_this();
    with_job(ex, who, id, [self, ex, who, id, after](job_record& job) {
      self->stream_requests_++;
      if (!is_terminal(job.status))
        return self->open_stream(ex, who, id, after);
      // A finished job whose log holds nothing after the client's last
      // event: 204 tells an EventSource to stop reconnecting (HTML
      // standard); a plain stream would end at once and be retried forever.
      self->ask<std::vector<job_event>>(
          ex,
          [self, ex, who, id, after](std::vector<job_event>& evs) {
            if (evs.empty() || evs.back().sequence <= after) {
              self->streams_finished_++;
              return ex->respond(204, {}, {}, {});
            }
            self->open_stream(ex, who, id, after);
          },
          events_atom::value, id);
    });
  }

  /// Answers `ex` with job `id`'s event stream after event `after`.
  void open_stream(const ex_ptr& ex, const principal& who,
                   const std::string& id, uint64_t after) {
    if (!streams_.acquire(who.key))
      return fail(ex, 429, "too_many_streams",
                  "key '" + who.key_name + "' has too many open streams",
                  {{"Retry-After", "5"}});
    ex->start_stream();
    // A dropped connection (a restart, a proxy) is resumed soon; after the
    // terminal event the resumption is answered 204 and the client stops.
    ex->send("retry: 2000\n\n");
    stream_sink sink;
    sink.emit = [ex](const std::string& event, uint64_t eid,
                     const std::string& data) {
      return ex->send(sse(event, eid, data));
    };
    sink.keepalive = [ex] { return ex->send(": keep-alive\n\n"); };
    sink.end = [ex] { ex->end_stream(); };
    auto actor = run_stream(id, after, std::move(sink));
    auto key = who.key;
    auto self = shared_from_this();
    ex->on_close([self, actor, key] {
      caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
      self->streams_.release(key);
    });
  }

  void stream_stats(const ex_ptr& ex) {
    reply(ex, 200,
          "{\"stream_requests\":" + std::to_string(stream_requests_.load())
              + ",\"finished_no_content\":"
              + std::to_string(streams_finished_.load()) + "}");
  }

  /// `only_job`: "" (an API key: any visible job), "*" (a stream token for
  /// any job of the tenant) or the one job a stream token names.
  void websocket(const ex_ptr& ex, const principal& who,
                 const std::string& only_job) {
    auto self = shared_from_this();
    ex->accept_websocket([self, who, only_job](std::shared_ptr<ws_channel> ch) {
      // Subscriptions of this socket: job id -> streaming actor.
      struct subs {
        std::mutex mx;
        std::map<std::string, caf::actor> active;
        bool closed = false;
      };
      auto s = std::make_shared<subs>();
      auto send_refusal = [ch](const std::string& job_id, unsigned status,
                               const std::string& code,
                               const std::string& message) {
        std::string msg = "{\"type\":\"error\",\"job_id\":" + json_quote(job_id)
                          + ",\"error\":{\"code\":" + json_quote(code)
                          + ",\"message\":" + json_quote(message)
                          + "},\"status\":" + std::to_string(status) + "}";
        ch->send(std::move(msg));
      };
      auto send_error
          = [send_refusal](const std::string& job_id, const caf::error& err) {
              auto st = classify(err);
              send_refusal(job_id, st.status, st.code, context_of(err));
            };
      ch->on_message([self, who, only_job, ch, s, send_error,
                      send_refusal](std::string text) {
        auto cmd = parse_ws_command(text, self->json_limits_);
        if (!cmd)
          return send_error("", cmd.error());
        auto id = cmd->job_id;
        if (!cmd->subscribe) {
          caf::actor actor;
          {
            std::lock_guard<std::mutex> guard{s->mx};
            auto i = s->active.find(id);
            if (i == s->active.end())
              return;
            actor = i->second;
            s->active.erase(i);
          }
          caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
          self->streams_.release(who.key);
          return;
        }
        if (!valid_job_id(id))
          return send_error(id,
                            make_error(errc::not_found, "no job '" + id + "'"));
        if (!only_job.empty() && only_job != "*" && only_job != id)
          return send_refusal(id, 401, "unauthorized",
                              "stream token: this token is for another job");
        {
          std::lock_guard<std::mutex> guard{s->mx};
          if (s->active.count(id) > 0)
            return; // already subscribed
        }
        if (!self->streams_.acquire(who.key))
          return send_refusal(id, 429, "too_many_streams",
                              "key '" + who.key_name
                                  + "' has too many open streams");
        auto after = cmd->last_event_id;
        // Tenant check first: another tenant's job is "not found".
        auto api = self->api_;
        auto timeout = self->cfg_.request_timeout;
        self->sys_.spawn([=](caf::event_based_actor* a) {
          a->request(api, timeout, get_atom::value, id)
              .then(
                  [=](job_record& job) {
                    if (!self->visible(who, job)) {
                      self->streams_.release(who.key);
                      return send_error(id, make_error(errc::not_found,
                                                       "no job '" + id + "'"));
                    }
                    stream_sink sink;
                    sink.emit = [ch, id](const std::string& event, uint64_t eid,
                                         const std::string& data) {
                      std::string msg
                          = "{\"type\":\"event\",\"job_id\":" + json_quote(id)
                            + ",\"event\":" + json_quote(event) + ",\"id\":"
                            + (eid > 0 ? std::to_string(eid) : "null")
                            + ",\"data\":" + data + "}";
                      return ch->send(std::move(msg));
                    };
                    sink.keepalive = [] { return true; }; // WebSocket pings
                    sink.end = [ch, id, s, self, who] {
                      std::lock_guard<std::mutex> guard{s->mx};
                      if (s->active.erase(id) > 0)
                        self->streams_.release(who.key);
                      ch->send("{\"type\":\"end\",\"job_id\":" + json_quote(id)
                               + "}");
                    };
                    auto actor = self->run_stream(id, after, std::move(sink));
                    std::lock_guard<std::mutex> guard{s->mx};
                    if (s->closed) {
                      caf::anon_send_exit(actor,
                                          caf::exit_reason::user_shutdown);
                      self->streams_.release(who.key);
                      return;
                    }
                    s->active.emplace(id, actor);
                  },
                  [=](caf::error& err) {
                    self->streams_.release(who.key);
                    send_error(id, err);
                  });
        });
      });
      ch->on_close([self, who, s] {
        std::map<std::string, caf::actor> active;
        {
          std::lock_guard<std::mutex> guard{s->mx};
          s->closed = true;
          active.swap(s->active);
        }
        for (auto& kv : active) {
          caf::anon_send_exit(kv.second, caf::exit_reason::user_shutdown);
          self->streams_.release(who.key);
        }
      });
    });
  }

  caf::actor_system& sys_;
  api_actor api_;
  gateway_config cfg_;
  key_ring keys_;
  rate_limiter limiter_;
  stream_counter streams_;
  decode_limits json_limits_;
  std::unique_ptr<server> server_;
  /// Set in listen() before the first request; read-only afterwards.
  browser_policy policy_;
  /// Event-stream requests (GET /api/jobs/{id}/stream) that reached a job,
  /// and those answered 204 because the job had finished: read with GET
  /// /api/admin/streams (how a test sees that an EventSource stopped).
  std::atomic<uint64_t> stream_requests_{0};
  std::atomic<uint64_t> streams_finished_{0};
  std::mutex rates_mx_;
  queue_stats last_stats_;
  steady::time_point last_stats_at_;
};

} // namespace

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
  auto gw = std::make_shared<gateway_impl>(sys, std::move(api), std::move(cfg));
  if (auto err = gw->listen())
    return err;
  // The caller owns it through a unique_ptr; handlers hold shared refs.
  struct holder : gateway {
    std::shared_ptr<gateway_impl> impl;
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
