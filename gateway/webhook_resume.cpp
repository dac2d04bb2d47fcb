// The webhook dispatcher's resumption: it watches the current progress
// publisher for finals, and finds in the store the webhooks still owed
// (after a restart, a restart of the job system, or partitions taken),
// resuming each from its job's history. See
// gateway/detail/webhook_dispatcher_state.hpp.

#include "gateway/detail/webhook_dispatcher_state.hpp"

#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>

#include <algorithm>

namespace drover::webhook_detail {

/// Looks again from the start after `delay` (deliveries already known are
/// skipped then).
void rescan_later(self_ptr self, uint64_t epoch, uint32_t failures) {
  std::uniform_real_distribution<double> u{0.0, 1.0};
  self->delayed_send(self, rescan_backoff.delay(failures, u(self->state.rng)),
                     scan_atom::value, epoch, std::string{}, failures + 1);
}

void resume_next(self_ptr self, uint64_t epoch);

namespace {

/// A read of a job's history during the resumption: a page of its events.
constexpr uint32_t history_page = 1000;

/// What a job's history says of the webhook owed for its terminal event.
struct owed_webhook {
  uint32_t attempts = 0;
  int64_t next_at = 0;
  bool settled = false;
};

/// Reads `rec`'s history after sequence `after`, a page at a time, for
/// the attempts of the webhook owed for its terminal event `seq` (they all
/// come after it: the store refuses an attempt naming a later event), then
/// admits the delivery unless settled and goes on with the next job.
void read_owed(self_ptr self, uint64_t epoch, job_record rec, uint64_t after,
               owed_webhook so_far) {
  auto store = self->state.cfg.handles->store();
  if (!store) {
    self->state.resuming.clear();
    rescan_later(self, epoch, 0);
    return;
  }
  auto seq = rec.webhook_pending_sequence;
  self->request(store, store_timeout, events_atom::value, rec.job_id, after,
                history_page)
      .then(
          [self, epoch, rec, seq, so_far](std::vector<job_event>& events) {
            auto owed = so_far;
            for (const auto& ev : events) {
              if (ev.kind != event_kind::webhook_attempted
                  || ev.webhook.terminal_sequence != seq)
                continue;
              owed.settled = owed.settled || is_final(ev.webhook.outcome);
              owed.attempts
                  = std::max(owed.attempts, ev.webhook.attempt_number);
              owed.next_at = ev.webhook.next_attempt_at_ms;
            }
            if (epoch != self->state.scan_epoch)
              return;
            if (events.size() == history_page) { // more: read on
              read_owed(self, epoch, rec, events.back().sequence, owed);
              return;
            }
            // Settled after the scan read the record: nothing to do.
            if (!owed.settled)
              admit(self, rec, owed.attempts, owed.next_at);
            resume_next(self, epoch);
          },
          [self, epoch, rec](caf::error& err) {
            auto& st = self->state;
            if (epoch != st.scan_epoch)
              return;
            log::warn("webhooks", log::job{rec.job_id},
                      "reading the job's history failed; looking again later",
                      {{"error", describe(err)}});
            st.resuming.clear();
            rescan_later(self, epoch, 0);
          });
}

} // namespace

/// Resumes the deliveries of the page the last scan found, one job at a
/// time (a restart with many of them must not flood the store), then
/// fetches the next page. Each job's history after its terminal event says
/// how many attempts were made and when the next one is due.
void resume_next(self_ptr self, uint64_t epoch) {
  auto& st = self->state;
  while (epoch == st.scan_epoch && !st.resuming.empty()) {
    auto rec = std::move(st.resuming.front());
    st.resuming.pop_front();
    auto seq = rec.webhook_pending_sequence;
    if (seq == 0 || st.settled.count(webhook_id(rec.job_id, seq)) > 0)
      continue;
    if (auto i = st.deliveries.find(rec.job_id);
        i != st.deliveries.end() && i->second.terminal_sequence >= seq)
      continue; // the live final got there first
    read_owed(self, epoch, std::move(rec), seq, {});
    return;
  }
  if (epoch == st.scan_epoch && st.scan_more)
    scan(self, epoch, st.scan_next, 0);
}

void scan(self_ptr self, uint64_t epoch, std::string after, uint32_t failures) {
  auto& st = self->state;
  if (epoch != st.scan_epoch)
    return;
  auto store = st.cfg.handles->store();
  if (!store) {
    rescan_later(self, epoch, failures);
    return;
  }
  self->request(store, store_timeout, webhooks_atom::value, after, scan_page)
      .then(
          [self, epoch](std::vector<job_record>& recs) {
            auto& st = self->state;
            if (epoch != st.scan_epoch)
              return;
            st.scan_more = recs.size() == scan_page;
            if (!recs.empty())
              st.scan_next = recs.back().job_id;
            st.resuming.assign(std::make_move_iterator(recs.begin()),
                               std::make_move_iterator(recs.end()));
            resume_next(self, epoch);
          },
          [self, epoch, failures](caf::error& err) {
            if (failures == 0)
              log::warn("webhooks",
                        "looking for pending webhooks failed, will retry",
                        {{"error", describe(err)}});
            // From the start: simpler than remembering where, and what is
            // known already is skipped.
            rescan_later(self, epoch, failures);
          });
}

void connect(self_ptr self) {
  auto& st = self->state;
  auto retry = [self] {
    auto& st = self->state;
    std::uniform_real_distribution<double> u{0.0, 1.0};
    self->delayed_send(self, st.connect_retries.next(u(st.rng)),
                       connect_atom::value);
  };
  auto publisher = st.cfg.handles->publisher();
  if (!publisher || publisher.address() == st.dead_publisher) {
    retry();
    return;
  }
  // The publisher sends finals to any actor, untyped: it checks nothing
  // there (progress_actor's watch_finals_atom takes a caf::actor).
  self->request(publisher, std::chrono::seconds{5}, watch_finals_atom::value,
                caf::actor_cast<caf::actor>(self))
      .then(
          [self, publisher](ok_atom) {
            auto& st = self->state;
            st.publisher = publisher;
            st.connect_retries.reset();
            self->monitor(publisher);
            // Finals published while nobody watched are in the store.
            scan(self, ++st.scan_epoch, std::string{}, 0);
          },
          [retry](caf::error& err) {
            // The publisher is gone or restarting with the job system:
            // expected while it restarts, so at debug only; retried with
            // backoff until the next one answers.
            log::debug("webhooks", "watching the progress publisher failed",
                       {{"error", describe(err)}});
            retry();
          });
}

} // namespace drover::webhook_detail
