#include "gateway/detail/webhook_dispatcher_state.hpp"

#include "actors/queue.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>

#include <algorithm>

namespace drover {

namespace webhook_detail {

// -- delivery threads
// -----------------------------------------------------------

struct sender_state {
  std::shared_ptr<const webhook_client> client;
  static inline const char* name = "drover.webhook_sender";
};

webhook_sender_actor::behavior_type
sender_impl(webhook_sender_actor::stateful_pointer<sender_state> self,
            std::shared_ptr<const webhook_client> client) {
  self->state.client = std::move(client);
  return {
      [self](post_atom, const webhook_request& req) -> webhook_response {
        return self->state.client->post(req);
      },
  };
}

int64_t now_ms(self_ptr self) {
  const auto& clock = self->state.cfg.clock_ms;
  return clock ? clock() : system_clock_ms();
}

void pump(self_ptr self);
void record(self_ptr self, job_event ev, uint32_t tries);

void remember_settled(self_ptr self, const std::string& id) {
  auto& st = self->state;
  if (!st.settled.insert(id).second)
    return;
  st.settled_order.push_back(id);
  if (st.settled_order.size() > settled_memory) {
    st.settled.erase(st.settled_order.front());
    st.settled_order.pop_front();
  }
}

/// Makes `d` ready at `at_ms` (at once if that has passed).
void schedule(self_ptr self, delivery& d, int64_t at_ms) {
  auto& st = self->state;
  d.generation = st.next_generation++;
  auto delay = at_ms - now_ms(self);
  if (delay <= 0) {
    d.state = phase::ready;
    st.ready.push_back(d.job_id);
    pump(self);
    return;
  }
  d.state = phase::waiting;
  self->delayed_send(self, std::chrono::milliseconds{delay}, due_atom::value,
                     d.job_id, d.generation);
}

job_event attempt_event(const delivery& d, uint32_t attempt_number,
                        int64_t at_ms) {
  job_event ev;
  ev.job_id = d.job_id;
  ev.attempt = d.job_attempt;
  ev.kind = event_kind::webhook_attempted;
  ev.webhook.url = d.url;
  ev.webhook.webhook_id = d.webhook_id;
  ev.webhook.terminal_sequence = d.terminal_sequence;
  ev.webhook.attempt_number = attempt_number;
  ev.webhook.at_ms = at_ms;
  return ev;
}

/// Records that `d` is not attempted because its URL is disabled.
void record_disabled(self_ptr self, delivery& d) {
  auto ev = attempt_event(d, 0, now_ms(self));
  ev.at_ms = ev.webhook.at_ms;
  ev.webhook.outcome = webhook_outcome::disabled;
  ev.webhook.error = "not attempted: an earlier delivery to this URL got 410 "
                     "Gone, so the endpoint is disabled";
  d.state = phase::recording;
  record(self, std::move(ev), 0);
}

/// Decides what an attempt's answer means and records it.
void on_response(self_ptr self, const delivery& snapshot,
                 uint32_t attempt_number, int64_t started_at_ms,
                 webhook_response r) {
  auto& st = self->state;
  auto ev = attempt_event(snapshot, attempt_number, started_at_ms);
  auto now = now_ms(self);
  ev.at_ms = now;
  auto& w = ev.webhook;
  w.status_code = r.status_code;
  w.error = std::move(r.error);
  if (w.error.empty()) {
    w.outcome = webhook_outcome::delivered;
  } else if (r.status_code == 410) {
    w.outcome = webhook_outcome::disabled;
    st.disabled_urls.insert(snapshot.url);
  } else if (r.refused) {
    w.outcome = webhook_outcome::failed;
  } else {
    std::uniform_real_distribution<double> u{0.0, 1.0};
    auto next
        = now
          + webhook_backoff(st.cfg.options, attempt_number, u(st.rng)).count();
    if (next > snapshot.give_up_at_ms) {
      w.outcome = webhook_outcome::failed;
      w.error += " (giving up after " + std::to_string(attempt_number)
                 + " attempt" + (attempt_number == 1 ? "" : "s")
                 + ": the retry period of "
                 + std::to_string(st.cfg.options.retry_period.count())
                 + " ms is over)";
    } else {
      w.outcome = webhook_outcome::retrying;
      w.next_attempt_at_ms = next;
    }
  }
  auto i = st.deliveries.find(snapshot.job_id);
  if (i != st.deliveries.end()
      && i->second.terminal_sequence == snapshot.terminal_sequence)
    i->second.state = phase::recording;
  record(self, std::move(ev), 0);
}

void start_attempt(self_ptr self, delivery& d) {
  auto& st = self->state;
  if (st.disabled_urls.count(d.url) > 0) {
    record_disabled(self, d);
    return;
  }
  auto sender = st.idle_senders.back();
  st.idle_senders.pop_back();
  d.state = phase::running;
  auto attempt_number = ++d.attempts;
  webhook_request req;
  req.url = d.url;
  req.webhook_id = d.webhook_id;
  req.body = d.body;
  req.at_ms = now_ms(self);
  delivery snapshot = d;
  snapshot.body.clear();
  auto started = req.at_ms;
  // The client enforces the deadline; this bound only catches a delivery
  // thread stuck beyond it (a slow system resolver).
  auto bound = st.cfg.options.timeout + std::chrono::seconds{60};
  self->request(sender, bound, post_atom::value, std::move(req))
      .then(
          [self, sender, snapshot, attempt_number,
           started](webhook_response& r) {
            self->state.idle_senders.push_back(sender);
            on_response(self, snapshot, attempt_number, started, std::move(r));
            pump(self);
          },
          [self, sender, snapshot, attempt_number, started](caf::error& err) {
            self->state.idle_senders.push_back(sender);
            webhook_response r;
            r.error = "delivery thread: " + describe(err);
            on_response(self, snapshot, attempt_number, started, std::move(r));
            pump(self);
          });
}

/// Starts ready deliveries while delivery threads are idle.
void pump(self_ptr self) {
  auto& st = self->state;
  while (!st.idle_senders.empty() && !st.ready.empty()) {
    auto job_id = std::move(st.ready.front());
    st.ready.pop_front();
    auto i = st.deliveries.find(job_id);
    if (i == st.deliveries.end() || i->second.state != phase::ready)
      continue;
    start_attempt(self, i->second);
  }
}

/// The event `ev` is committed: the delivery it belongs to goes on.
void on_recorded(self_ptr self, const job_event& ev) {
  auto& st = self->state;
  if (st.cfg.on_recorded)
    st.cfg.on_recorded(ev);
  const auto& w = ev.webhook;
  if (is_final(w.outcome))
    remember_settled(self, w.webhook_id);
  auto i = st.deliveries.find(ev.job_id);
  if (i == st.deliveries.end()
      || i->second.terminal_sequence != w.terminal_sequence
      || i->second.state != phase::recording)
    return; // replaced by a newer terminal event meanwhile
  if (is_final(w.outcome)) {
    st.deliveries.erase(i);
    return;
  }
  schedule(self, i->second, w.next_attempt_at_ms);
}

/// Drops the delivery `ev` belongs to (its job is gone, or the store
/// refuses its events for good).
void forget(self_ptr self, const job_event& ev) {
  auto& st = self->state;
  auto i = st.deliveries.find(ev.job_id);
  if (i != st.deliveries.end()
      && i->second.terminal_sequence == ev.webhook.terminal_sequence)
    st.deliveries.erase(i);
}

void record(self_ptr self, job_event ev, uint32_t tries) {
  auto& st = self->state;
  auto retry = [self, tries](job_event ev) {
    std::uniform_real_distribution<double> u{0.0, 1.0};
    self->delayed_send(self, record_backoff.delay(tries, u(self->state.rng)),
                       record_atom::value, std::move(ev), tries + 1);
  };
  auto store = st.cfg.handles->store();
  if (!store) {
    retry(std::move(ev));
    return;
  }
  self->request(store, store_timeout, append_atom::value,
                std::vector<job_event>{ev})
      .then([self, ev](ok_atom) { on_recorded(self, ev); },
            [self, ev, tries, retry](caf::error& err) {
              if (is(err, errc::not_found) || is(err, errc::invalid_value)) {
                log::error("webhooks", log::job{ev.job_id},
                           "dropping the webhook: its job refuses the attempt",
                           {{"webhook", ev.webhook.webhook_id},
                            {"error", describe(err)}});
                forget(self, ev);
                return;
              }
              if (is(err, errc::not_owner)) {
                // The job's partition went to another coordinator
                // (--share-partitions): the webhook is its to deliver.
                log::info("webhooks", log::job{ev.job_id},
                          "leaving the webhook to the job's new coordinator",
                          {{"webhook", ev.webhook.webhook_id}});
                forget(self, ev);
                return;
              }
              if (tries == 0)
                log::warn("webhooks", log::job{ev.job_id},
                          "recording a webhook attempt failed, will retry",
                          {{"webhook", ev.webhook.webhook_id},
                           {"error", describe(err)}});
              retry(ev);
            });
}

void admit(self_ptr self, const job_record& rec, uint32_t prior_attempts,
           int64_t not_before_ms) {
  auto& st = self->state;
  auto seq = rec.webhook_pending_sequence;
  if (seq == 0 || rec.spec.callback_url.empty())
    return;
  auto id = webhook_id(rec.job_id, seq);
  if (st.settled.count(id) > 0)
    return;
  auto i = st.deliveries.find(rec.job_id);
  if (i != st.deliveries.end() && i->second.terminal_sequence >= seq)
    return; // already on it (the live final and a scan both found it)
  delivery d;
  d.job_id = rec.job_id;
  d.url = rec.spec.callback_url;
  d.webhook_id = std::move(id);
  d.body = webhook_body(rec);
  d.terminal_sequence = seq;
  d.job_attempt = rec.attempt;
  auto ended = rec.completed_at_ms != 0 ? rec.completed_at_ms : now_ms(self);
  d.give_up_at_ms = ended + st.cfg.options.retry_period.count();
  d.attempts = prior_attempts;
  auto& slot = st.deliveries[rec.job_id];
  slot = std::move(d);
  if (st.disabled_urls.count(slot.url) > 0) {
    record_disabled(self, slot);
    return;
  }
  schedule(self, slot, std::max(not_before_ms, now_ms(self)));
}

dispatcher_impl_actor::behavior_type
dispatcher_impl(self_ptr self, webhook_dispatcher_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.rng.seed(st.cfg.seed != 0 ? st.cfg.seed : std::random_device{}());
  auto client = std::make_shared<const webhook_client>(st.cfg.options);
  auto threads = std::max<size_t>(st.cfg.options.concurrency, 1);
  for (size_t i = 0; i < threads; ++i) {
    auto sender = self->system().spawn<caf::detached>(sender_impl, client);
    // Delivery threads end with the dispatcher (after the attempt they are
    // in, if any), and a failing one restarts it.
    self->link_to(sender);
    st.idle_senders.push_back(sender);
  }
  if (st.cfg.options.key.empty())
    log::warn("webhooks", "no --webhook-secret: webhooks go out unsigned");
  self->set_default_handler(log_and_drop);
  // We only make requests with response handlers; this keeps a stray error
  // message from killing the dispatcher, which is CAF's default, and says
  // so in the log.
  self->set_error_handler([](caf::error& err) {
    log::warn("webhooks", "unexpected error message",
              {{"error", describe(err)}});
  });
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source != st.publisher.address())
      return;
    // The job system restarts: watch its next publisher, and look for
    // finals that went by meanwhile.
    st.dead_publisher = dm.source;
    st.publisher = nullptr;
    connect(self);
  });
  connect(self);
  return {
      [self](final_atom, const job_record& rec) { admit(self, rec, 0, 0); },
      [self](connect_atom) { connect(self); },
      [self](partitions_atom) {
        // The node took partitions: scan again from the start (what is
        // known already is skipped), unless the publisher is not watched
        // yet (connecting scans anyway).
        auto& st = self->state;
        if (st.publisher)
          scan(self, ++st.scan_epoch, std::string{}, 0);
      },
      [self](scan_atom, uint64_t epoch, std::string& after, uint32_t failures) {
        scan(self, epoch, std::move(after), failures);
      },
      [self](due_atom, const std::string& job_id, uint64_t generation) {
        auto& st = self->state;
        auto i = st.deliveries.find(job_id);
        if (i == st.deliveries.end() || i->second.generation != generation
            || i->second.state != phase::waiting)
          return;
        i->second.state = phase::ready;
        st.ready.push_back(job_id);
        pump(self);
      },
      [self](record_atom, job_event& ev, uint32_t tries) {
        record(self, std::move(ev), tries);
      },
  };
}

} // namespace webhook_detail

void webhook_dispatcher_slot::set(webhook_dispatcher_actor d) {
  std::lock_guard<std::mutex> guard{mx_};
  current_ = std::move(d);
}

webhook_dispatcher_actor webhook_dispatcher_slot::get() const {
  std::lock_guard<std::mutex> guard{mx_};
  return current_;
}

webhook_dispatcher_actor
spawn_webhook_dispatcher(caf::actor_system& sys,
                         webhook_dispatcher_config cfg) {
  // The private extension converts to its subset: no actor_cast.
  return sys.spawn(webhook_detail::dispatcher_impl, std::move(cfg));
}

child_spec webhook_child(webhook_dispatcher_config cfg) {
  auto shared
      = std::make_shared<const webhook_dispatcher_config>(std::move(cfg));
  child_spec spec;
  spec.name = "webhooks";
  spec.start = [shared](caf::actor_system& sys, const caf::actor_addr&) {
    auto d = spawn_webhook_dispatcher(sys, *shared);
    if (shared->running)
      shared->running->set(d);
    return child_handle(d);
  };
  return spec;
}

} // namespace drover
