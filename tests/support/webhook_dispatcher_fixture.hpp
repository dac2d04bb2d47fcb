#pragma once

// The webhook dispatcher end to end on a memory store, for the webhook
// tests (tests/gateway/webhook_test.cpp, webhook_resume_test.cpp): a store,
// a progress publisher and a dispatcher under test, with helpers to make
// finished jobs and read their webhook history.

#include "gateway/webhook.hpp"
#include "gateway/webhook_dispatcher.hpp"

#include "actors/job_system.hpp"
#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/type_ids.hpp"

#include "support/actor_config.hpp"
#include "support/webhook_log.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace drover::testing::webhooks {

using namespace std::chrono_literals;

/// Generous: only a failing test waits this long.
inline constexpr auto patience = 20s;

inline std::string key_of(const std::string& secret) {
  auto key = decode_webhook_secret(secret);
  REQUIRE(key);
  return *key;
}

inline const std::string test_secret
    = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

inline ip_network net(const std::string& text) {
  auto x = parse_ip_network(text);
  REQUIRE(x);
  return *x;
}

struct dispatcher_fixture {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  std::shared_ptr<drover::testing::recorded_log> log
      = std::make_shared<drover::testing::recorded_log>();
  store_actor store;
  progress_actor publisher;
  webhook_dispatcher_actor dispatcher;
  uint32_t next_job = 1;

  dispatcher_fixture() : sys(drover::testing::real_config(cfg)), self(sys) {
    store = spawn_memory_store(sys);
    publisher = spawn_progress_publisher(sys);
    handles->set_store(store);
    handles->set_publisher(publisher);
  }

  ~dispatcher_fixture() {
    if (dispatcher)
      self->send_exit(dispatcher, caf::exit_reason::user_shutdown);
    self->send_exit(publisher, caf::exit_reason::user_shutdown);
    self->send_exit(store, caf::exit_reason::user_shutdown);
  }

  webhook_dispatcher_config config(webhook_options opts) {
    webhook_dispatcher_config dc;
    dc.options = std::move(opts);
    dc.handles = handles;
    dc.seed = 42;
    dc.on_recorded = drover::testing::recorded_log::recorder(log);
    return dc;
  }

  void start(webhook_options opts) {
    dispatcher = spawn_webhook_dispatcher(sys, config(std::move(opts)));
  }

  static webhook_options fast_options() {
    webhook_options opts;
    opts.key = key_of(test_secret);
    opts.allow = {net("127.0.0.1/32")};
    opts.initial_backoff = 40ms;
    opts.max_backoff = 400ms;
    opts.retry_period = 60s;
    opts.timeout = 2000ms;
    return opts;
  }

  template <class T, class... Ts>
  T ask(const store_actor& who, Ts... xs) {
    T result;
    caf::error failure;
    self->request(who, 10s, xs...)
        .receive([&](T& x) { result = std::move(x); },
                 [&](caf::error& err) { failure = std::move(err); });
    if (failure)
      FAIL(describe(failure));
    return result;
  }

  void append(job_event ev) {
    ask<ok_atom>(store, append_atom::value, std::vector<job_event>{ev});
  }

  /// A job that ran once and ended with `status`, with a callback URL.
  job_record finished_job(const std::string& url,
                          job_status status = job_status::completed) {
    job_event ev;
    ev.job_id = "j" + std::to_string(next_job++);
    ev.kind = event_kind::submitted;
    ev.at_ms = 1000;
    ev.spec.type = "noop";
    ev.spec.callback_url = url;
    ask<job_record>(store, submit_atom::value, ev);
    ev.spec = {};
    ev.kind = event_kind::started;
    ev.attempt = 1;
    ev.sequence = 0;
    append(ev);
    if (status == job_status::completed) {
      ev.kind = event_kind::completed;
      ev.result = R"({"ok":true})";
    } else {
      ev.kind = event_kind::failed;
      ev.error = {"boom", "it broke", false};
    }
    ev.at_ms = system_clock_ms();
    append(ev);
    return ask<job_record>(store, get_atom::value, ev.job_id);
  }

  /// Attempt `n` of the webhook `rec` owes, made at `at_ms` with
  /// `outcome`: delivered (HTTP 200) or failed with HTTP 503 (retrying: due
  /// again 50 ms later).
  static job_event attempt_event(const job_record& rec, uint32_t n,
                                 webhook_outcome outcome, int64_t at_ms) {
    job_event ev;
    ev.job_id = rec.job_id;
    ev.attempt = rec.attempt;
    ev.at_ms = at_ms;
    ev.kind = event_kind::webhook_attempted;
    ev.webhook.url = rec.spec.callback_url;
    ev.webhook.webhook_id
        = webhook_id(rec.job_id, rec.webhook_pending_sequence);
    ev.webhook.terminal_sequence = rec.webhook_pending_sequence;
    ev.webhook.attempt_number = n;
    ev.webhook.outcome = outcome;
    ev.webhook.at_ms = at_ms;
    if (outcome == webhook_outcome::delivered) {
      ev.webhook.status_code = 200;
    } else {
      ev.webhook.status_code = 503;
      ev.webhook.error = "HTTP 503";
      ev.webhook.next_attempt_at_ms = at_ms + 50;
    }
    return ev;
  }

  /// The job ends: the publisher tells its finals watchers.
  void publish_final(const job_record& rec) {
    self->send(publisher, final_atom::value, rec);
  }

  std::vector<job_event> webhook_events(const std::string& job_id) {
    auto events
        = ask<std::vector<job_event>>(store, events_atom::value, job_id);
    std::vector<job_event> result;
    for (auto& ev : events)
      if (ev.kind == event_kind::webhook_attempted)
        result.push_back(ev);
    return result;
  }

  /// The history replays to the stored record (invariant 5).
  void check_replay(const std::string& job_id) {
    auto events
        = ask<std::vector<job_event>>(store, events_atom::value, job_id);
    auto replayed = replay(events);
    REQUIRE(replayed);
    CHECK(*replayed == ask<job_record>(store, get_atom::value, job_id));
  }
};

} // namespace drover::testing::webhooks
