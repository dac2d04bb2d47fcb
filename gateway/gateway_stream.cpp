// Stream tokens (gateway/stream_token.hpp) and the two ways a job's events
// are streamed: server-sent events (GET /api/jobs/{id}/stream) and
// WebSocket subscriptions (GET /api/ws). See
// gateway/detail/gateway_impl.hpp.

#include "gateway/detail/gateway_impl.hpp"

#include "gateway/stream_token.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"

#include <caf/send.hpp>

namespace drover::http::gateway_detail {

namespace {

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

} // namespace

// -- stream tokens (gateway/stream_token.hpp) ---------------------------------

bool gateway_impl::is_stream_endpoint(const target& t) {
  auto& p = t.path;
  return (p.size() == 2 && p[1] == "ws")
         || (p.size() == 4 && p[1] == "jobs" && p[3] == "stream");
}

/// The principal a `?token=` acts as (read scope only) and, in `job`,
/// what it grants. errc::conflict if the request also has an
/// Authorization header (400); other errors are 401s.
caf::expected<principal>
gateway_impl::authenticate_token(const target& t, const std::string& token,
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
void gateway_impl::route_token(const ex_ptr& ex, const principal& who,
                               const target& t, const std::string& job) {
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
void gateway_impl::mint_token(const ex_ptr& ex, const principal& who,
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

// -- streams ------------------------------------------------------------------

/// Runs one job's event stream into `sink` (gateway/job_stream.hpp).
caf::actor gateway_impl::run_stream(std::string id, uint64_t after,
                                    stream_sink sink) {
  return spawn_job_stream(sys_, api_, cfg_.request_timeout,
                          cfg_.keepalive_interval, std::move(id), after,
                          std::move(sink));
}

uint64_t gateway_impl::parse_event_id(std::string_view text, bool& ok) {
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

void gateway_impl::stream(const ex_ptr& ex, const principal& who,
                          const std::string& id, const target& t) {
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
    // One event after `after` says (not the whole log).
    self->ask<std::vector<job_event>>(
        ex,
        [self, ex, who, id, after](std::vector<job_event>& evs) {
          if (evs.empty()) {
            self->streams_finished_++;
            return ex->respond(204, {}, {}, {});
          }
          self->open_stream(ex, who, id, after);
        },
        events_atom::value, id, after, uint32_t{1});
  });
}

/// Answers `ex` with job `id`'s event stream after event `after`.
void gateway_impl::open_stream(const ex_ptr& ex, const principal& who,
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
  sink.emit
      = [ex](const std::string& event, uint64_t eid, const std::string& data) {
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

void gateway_impl::stream_stats(const ex_ptr& ex) {
  reply(ex, 200,
        "{\"stream_requests\":" + std::to_string(stream_requests_.load())
            + ",\"finished_no_content\":"
            + std::to_string(streams_finished_.load()) + "}");
}

/// `only_job`: "" (an API key: any visible job), "*" (a stream token for
/// any job of the tenant) or the one job a stream token names.
void gateway_impl::websocket(const ex_ptr& ex, const principal& who,
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
                    return send_error(
                        id, make_error(errc::not_found, "no job '" + id + "'"));
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
                    caf::anon_send_exit(actor, caf::exit_reason::user_shutdown);
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

} // namespace drover::http::gateway_detail
