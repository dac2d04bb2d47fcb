#pragma once

// The HTTP gateway's implementation (the contract is gateway/gateway.hpp),
// one class whose members are spread over gateway/gateway.cpp (starting,
// plumbing, authentication and routing), gateway/gateway_jobs.cpp (the
// job and dead-letter-queue endpoints), gateway/gateway_admin.cpp (the
// operator endpoints, /metrics and /readyz) and gateway/gateway_stream.cpp
// (stream tokens, server-sent events and WebSocket). Internal to those.

#include "gateway/gateway.hpp"

#include "gateway/browser_policy.hpp"
#include "gateway/http_api.hpp"
#include "gateway/job_stream.hpp"
#include "runtime/atoms.hpp"
#include "runtime/ids.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace drover::http::gateway_detail {

using steady = std::chrono::steady_clock;

struct target {
  std::vector<std::string> path;
  std::map<std::string, std::string> query;
};

inline bool valid_job_id(const std::string& id) {
  return plausible_job_id(id);
}

class gateway_impl : public gateway,
                     public std::enable_shared_from_this<gateway_impl> {
public:
  gateway_impl(caf::actor_system& sys, api_actor api, gateway_config cfg);

  caf::error listen();

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

  // -- plumbing (gateway.cpp) -------------------------------------------------

  void reply(const ex_ptr& ex, unsigned status, std::string body,
             header_list headers = {}) {
    ex->respond(status, std::move(body), std::move(headers));
  }

  void fail(const ex_ptr& ex, unsigned status, std::string_view code,
            std::string_view message, header_list headers = {});
  void fail(const ex_ptr& ex, const caf::error& err);

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

  void with_job(const ex_ptr& ex, const principal& who, const std::string& id,
                std::function<void(job_record&)> ok);

  bool visible(const principal& who, const job_record& job) const {
    return keys_.development_mode() || job.spec.tenant == who.tenant;
  }

  // -- dispatch (gateway.cpp) -------------------------------------------------

  void handle(ex_ptr raw);
  void not_allowed(const ex_ptr& ex, const char* allow);
  bool require(const ex_ptr& ex, const principal& who, scope s);
  void route(const ex_ptr& ex, const principal& who, const target& t);

  // -- stream tokens (gateway_stream.cpp) -------------------------------------

  static bool is_stream_endpoint(const target& t);
  caf::expected<principal> authenticate_token(const target& t,
                                              const std::string& token,
                                              bool has_authorization,
                                              std::string& job) const;
  void route_token(const ex_ptr& ex, const principal& who, const target& t,
                   const std::string& job);
  void mint_token(const ex_ptr& ex, const principal& who,
                  const std::string& job);

  // -- jobs and the dead-letter queue (gateway_jobs.cpp) ----------------------

  static std::string exec_refusal(const principal& who,
                                  const std::string& type);
  bool apply_idempotency_header(const ex_ptr& ex, submit_request& req);
  void submit(const ex_ptr& ex, const principal& who);
  void batch(const ex_ptr& ex, const principal& who);
  static std::string item_error_json(const std::string& code,
                                     const std::string& message,
                                     unsigned status);
  void list(const ex_ptr& ex, const principal& who, const target& t, bool dlq);

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

  void cancel(const ex_ptr& ex, const principal& who, const std::string& id);

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

  void purge_all(const ex_ptr& ex);
  void result(const ex_ptr& ex, const principal& who, const std::string& id);
  void events(const ex_ptr& ex, const principal& who, const std::string& id,
              const target& t);

  // -- operators (gateway_admin.cpp) ------------------------------------------

  void tree(const ex_ptr& ex);
  void nodes(const ex_ptr& ex);
  void flow(const ex_ptr& ex);
  void set_flow(const ex_ptr& ex, const std::string& kind,
                const std::string& key);
  void queues(const ex_ptr& ex);
  void metrics(const ex_ptr& ex);
  void readyz(const ex_ptr& ex);

  // -- streams (gateway_stream.cpp) -------------------------------------------

  caf::actor run_stream(std::string id, uint64_t after, stream_sink sink);
  static uint64_t parse_event_id(std::string_view text, bool& ok);
  void stream(const ex_ptr& ex, const principal& who, const std::string& id,
              const target& t);
  void open_stream(const ex_ptr& ex, const principal& who,
                   const std::string& id, uint64_t after);
  void stream_stats(const ex_ptr& ex);
  void websocket(const ex_ptr& ex, const principal& who,
                 const std::string& only_job);

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

} // namespace drover::http::gateway_detail
