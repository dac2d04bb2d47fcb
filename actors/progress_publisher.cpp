#include "actors/progress_publisher.hpp"

#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/send_untyped.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <cmath>
#include <deque>
#include <limits>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>

namespace drover {

namespace {

// Private timers: only ever sent by the publisher to itself, so they are not
// part of progress_actor's typed interface, only of its private extension.
using flush_atom = caf::atom_constant<caf::atom("pp_flush")>;
using sweep_atom = caf::atom_constant<caf::atom("pp_sweep")>;

/// The publisher's own interface: progress_actor plus its timers. Only
/// spawn_progress_publisher sees it.
using publisher_impl_actor
    = progress_actor::extend<caf::reacts_to<flush_atom, std::string, uint64_t>,
                             caf::reacts_to<sweep_atom>>;

using time_point = caf::actor_clock::time_point;

/// One subscriber of one job.
struct subscription {
  caf::actor who;
  /// `job_entry::seq` of the last progress update this subscriber received;
  /// 0 = none. Keeps the snapshot sent at subscribe time and a later flush
  /// of the same update from reaching the subscriber twice.
  uint64_t seen_seq = 0;
  /// Also wants (changed_atom, job_id) notifications.
  bool wants_changes = false;
};

/// Everything the publisher knows about a job that has not finished.
struct job_entry {
  std::map<caf::actor_addr, subscription> subscribers;
  /// Latest accepted update, ready to send: `stages` complete, `eta_ms`
  /// filled in, `checkpoint` cleared. Valid when `seq > 0`.
  progress_update latest;
  /// Bumped at every accepted update; 0 = no progress yet.
  uint64_t seq = 0;
  /// `seq` of the update that went out to the subscribers last.
  uint64_t sent_seq = 0;
  /// Coalescing: no update goes out before this time; a later one waits
  /// for the flush timer.
  time_point window_end{};
  /// Id of the armed flush timer; 0 = none. Stale timers (an older id, or a
  /// job whose entry was released) are ignored.
  uint64_t flush_timer = 0;
  /// ETA base: the first sample of the newest attempt seen.
  uint32_t attempt = 0;
  double first_percent = 0;
  int64_t first_at_ms = 0;
};

/// A final record kept for late subscribers.
struct retained_final {
  job_record record;
  /// Matches the `expiry` entry that owns this record; an entry with
  /// another stamp is stale (the record was replaced since).
  uint64_t stamp = 0;
};

struct expiry {
  std::string job_id;
  time_point expires_at;
  uint64_t stamp = 0;
};

struct publisher_state {
  static inline const char* name = "progress_publisher";

  progress_options options;
  std::unordered_map<std::string, job_entry> jobs;
  /// Reverse index for the down handler and for monitor bookkeeping: the
  /// jobs each (monitored) subscriber follows. A subscriber is monitored
  /// exactly while it has an entry here.
  std::map<caf::actor_addr, std::set<std::string>> subscribers;
  std::unordered_map<std::string, retained_final> finals;
  /// Receivers of every final record (watch_finals_atom), monitored.
  std::map<caf::actor_addr, caf::actor> watchers;
  /// Retained finals in insertion order, which is also expiry order (the
  /// retention is constant). May hold stale entries; see `retained_final`.
  std::deque<expiry> expiries;
  uint64_t next_stamp = 1;
  uint64_t next_timer = 1;
  bool sweep_armed = false;
};

using self_ptr = publisher_impl_actor::stateful_pointer<publisher_state>;

time_point now(self_ptr self) {
  return self->clock().now();
}

/// Sends the latest update to every subscriber that has not seen it yet and
/// opens a new coalescing window.
void deliver(self_ptr self, job_entry& job) {
  for (auto& [addr, sub] : job.subscribers) {
    if (sub.seen_seq == job.seq)
      continue;
    sub.seen_seq = job.seq;
    send_untyped(self, sub.who, progress_atom::value, job.latest);
  }
  job.sent_seq = job.seq;
  job.window_end = now(self) + self->state.options.coalesce_interval;
}

/// Adds `job_id` to the reverse index, monitoring `who` on its first job.
void index_subscription(self_ptr self, const caf::actor& who,
                        const std::string& job_id) {
  auto [i, added] = self->state.subscribers.try_emplace(who.address());
  if (added && self->state.watchers.count(who.address()) == 0)
    self->monitor(who);
  i->second.insert(job_id);
}

/// Removes `job_id` from the reverse index; a subscriber without jobs is no
/// longer monitored, so the index never outgrows the live subscriptions.
void unindex_subscription(self_ptr self, const caf::actor_addr& who,
                          const std::string& job_id) {
  auto& subs = self->state.subscribers;
  auto i = subs.find(who);
  if (i == subs.end())
    return;
  i->second.erase(job_id);
  if (i->second.empty()) {
    if (self->state.watchers.count(who) == 0) // still watched: keep it
      self->demonitor(who);
    subs.erase(i);
  }
}

/// Drops the retained finals that expired and re-arms the sweep timer for
/// the next one.
void sweep_finals(self_ptr self) {
  auto& st = self->state;
  auto t = now(self);
  while (!st.expiries.empty() && st.expiries.front().expires_at <= t) {
    auto& front = st.expiries.front();
    auto i = st.finals.find(front.job_id);
    if (i != st.finals.end() && i->second.stamp == front.stamp)
      st.finals.erase(i);
    st.expiries.pop_front();
  }
  if (!st.expiries.empty() && !st.sweep_armed) {
    st.sweep_armed = true;
    self->delayed_send(self, st.expiries.front().expires_at - t,
                       sweep_atom::value);
  }
}

void retain_final(self_ptr self, job_record record) {
  auto& st = self->state;
  const auto& opts = st.options;
  if (opts.max_retained_finals == 0 || opts.final_retention.count() <= 0)
    return;
  auto stamp = st.next_stamp++;
  auto job_id = record.job_id;
  st.finals[job_id] = retained_final{std::move(record), stamp};
  st.expiries.push_back(
      expiry{std::move(job_id), now(self) + opts.final_retention, stamp});
  // Oldest first. Stale entries in front are popped on the way.
  while (st.finals.size() > opts.max_retained_finals) {
    auto& front = st.expiries.front();
    auto i = st.finals.find(front.job_id);
    if (i != st.finals.end() && i->second.stamp == front.stamp)
      st.finals.erase(i);
    st.expiries.pop_front();
  }
  // A job that finishes over and over leaves stale entries behind; keep the
  // queue proportional to the live records.
  if (st.expiries.size() > 2 * st.finals.size() + 64) {
    auto& q = st.expiries;
    q.erase(std::remove_if(q.begin(), q.end(),
                           [&st](const expiry& e) {
                             auto i = st.finals.find(e.job_id);
                             return i == st.finals.end()
                                    || i->second.stamp != e.stamp;
                           }),
            q.end());
  }
  sweep_finals(self);
}

void on_publish(self_ptr self, progress_update& update) {
  auto& st = self->state;
  // A finished job: reports of the attempt that ended (or older) are late
  // stragglers; a newer attempt means the job runs again (redrive) and the
  // final record no longer describes it.
  if (auto i = st.finals.find(update.job_id); i != st.finals.end()) {
    if (update.attempt <= i->second.record.attempt)
      return;
    st.finals.erase(i); // its expiry entry is stale from now on
  }
  auto& job = st.jobs[update.job_id];
  if (job.seq > 0 && update.attempt < job.attempt)
    return; // fenced: an older attempt than the newest seen
  if (job.seq == 0 || update.attempt > job.attempt) {
    job.attempt = update.attempt;
    job.first_percent = update.percent;
    job.first_at_ms = update.at_ms;
  }
  if (update.stages.empty())
    update.stages = job.latest.stages;
  // Checkpoints are for the store (the job supervisor persists them), not
  // for subscribers; coalescing would drop most of them anyway.
  update.checkpoint.clear();
  update.eta_ms = estimate_eta_ms(job.first_percent, job.first_at_ms,
                                  update.percent, update.at_ms);
  job.latest = std::move(update);
  ++job.seq;
  if (job.subscribers.empty()) {
    // Nobody to tell: the update is kept for the next subscriber's snapshot.
    job.sent_seq = job.seq;
    return;
  }
  if (job.flush_timer != 0)
    return; // the armed flush will send the latest update
  auto t = now(self);
  if (t >= job.window_end) {
    deliver(self, job); // first update after a quiet period: at once
    return;
  }
  job.flush_timer = st.next_timer++;
  self->delayed_send(self, job.window_end - t, flush_atom::value,
                     job.latest.job_id, job.flush_timer);
}

void on_flush(self_ptr self, const std::string& job_id, uint64_t timer) {
  auto& st = self->state;
  auto i = st.jobs.find(job_id);
  if (i == st.jobs.end() || i->second.flush_timer != timer)
    return;
  auto& job = i->second;
  job.flush_timer = 0;
  if (job.sent_seq != job.seq)
    deliver(self, job);
}

void on_final(self_ptr self, job_record& record) {
  auto& st = self->state;
  if (auto i = st.jobs.find(record.job_id); i != st.jobs.end()) {
    auto& job = i->second;
    // Pending progress first: per-sender ordering then puts the final
    // after it at every subscriber.
    if (job.seq > 0 && job.sent_seq != job.seq)
      deliver(self, job);
    for (auto& [addr, sub] : job.subscribers) {
      send_untyped(self, sub.who, final_atom::value, record);
      unindex_subscription(self, addr, record.job_id);
    }
    // Releases the job; an armed flush timer finds nothing and is ignored.
    st.jobs.erase(i);
  }
  for (const auto& [addr, watcher] : st.watchers)
    send_untyped(self, watcher, final_atom::value, record);
  retain_final(self, std::move(record));
}

caf::result<ok_atom> on_subscribe(self_ptr self, const std::string& job_id,
                                  const caf::actor& who,
                                  bool wants_changes = false) {
  auto& st = self->state;
  if (!who)
    return make_error(errc::invalid_value,
                      "progress subscription needs a subscriber");
  if (auto i = st.finals.find(job_id); i != st.finals.end()) {
    // Finished recently: the final record is the whole story.
    send_untyped(self, who, final_atom::value, i->second.record);
    return ok_atom::value;
  }
  auto& job = st.jobs[job_id];
  auto [i, added] = job.subscribers.try_emplace(who.address());
  if (added) {
    i->second.who = who;
    index_subscription(self, who, job_id);
  }
  auto& sub = i->second;
  sub.wants_changes = sub.wants_changes || wants_changes;
  if (job.seq > 0 && sub.seen_seq != job.seq) {
    sub.seen_seq = job.seq;
    send_untyped(self, who, progress_atom::value, job.latest);
  }
  return ok_atom::value;
}

void on_changed(self_ptr self, const std::string& job_id) {
  auto& st = self->state;
  // A transition after a final record (a redrive): the job runs again and
  // the retained final no longer describes it.
  st.finals.erase(job_id); // its expiry entry is stale from now on
  auto i = st.jobs.find(job_id);
  if (i == st.jobs.end())
    return;
  for (auto& [addr, sub] : i->second.subscribers)
    if (sub.wants_changes)
      send_untyped(self, sub.who, changed_atom::value, job_id);
}

/// Ends one subscription; a job left without subscribers and without
/// progress carries no information and is released.
void drop_subscription(self_ptr self, const std::string& job_id,
                       const caf::actor_addr& who) {
  auto& st = self->state;
  auto i = st.jobs.find(job_id);
  if (i == st.jobs.end())
    return;
  i->second.subscribers.erase(who);
  if (i->second.subscribers.empty() && i->second.seq == 0)
    st.jobs.erase(i);
}

void on_unsubscribe(self_ptr self, const std::string& job_id,
                    const caf::actor& who) {
  if (!who)
    return;
  drop_subscription(self, job_id, who.address());
  unindex_subscription(self, who.address(), job_id);
}

caf::result<ok_atom> on_watch_finals(self_ptr self, const caf::actor& who) {
  auto& st = self->state;
  if (!who)
    return make_error(errc::invalid_value, "watching finals needs a watcher");
  bool added = st.watchers.try_emplace(who.address(), who).second;
  // A subscriber is monitored already (see index_subscription).
  if (added && st.subscribers.count(who.address()) == 0)
    self->monitor(who);
  return ok_atom::value;
}

void on_down(self_ptr self, const caf::down_msg& dm) {
  self->state.watchers.erase(dm.source);
  auto& subs = self->state.subscribers;
  auto i = subs.find(dm.source);
  if (i == subs.end())
    return;
  for (const auto& job_id : i->second)
    drop_subscription(self, job_id, dm.source);
  subs.erase(i);
}

publisher_impl_actor::behavior_type publisher_impl(self_ptr self,
                                                   progress_options options) {
  auto& opts = self->state.options;
  opts = options;
  opts.coalesce_interval
      = std::max(opts.coalesce_interval, std::chrono::milliseconds{0});
  self->set_down_handler([self](caf::down_msg& dm) { on_down(self, dm); });
  // We make no requests; this only keeps a stray error message (e.g. a
  // subscriber answering a send with an error) from killing the publisher,
  // which is CAF's default. Such an error is a subscriber's bug: logged.
  self->set_error_handler([](caf::error& err) {
    log::warn("progress", "unexpected error message",
              {{"error", describe(err)}});
  });
  return {
      [self](publish_atom, progress_update& update) {
        on_publish(self, update);
      },
      [self](final_atom, job_record& record) { on_final(self, record); },
      [self](subscribe_atom, const std::string& job_id, const caf::actor& who)
          -> caf::result<ok_atom> { return on_subscribe(self, job_id, who); },
      [self](subscribe_atom, const std::string& job_id, const caf::actor& who,
             changed_atom) -> caf::result<ok_atom> {
        return on_subscribe(self, job_id, who, true);
      },
      [self](changed_atom, const std::string& job_id) {
        on_changed(self, job_id);
      },
      [self](unsubscribe_atom, const std::string& job_id,
             const caf::actor& who) { on_unsubscribe(self, job_id, who); },
      [self](watch_finals_atom, const caf::actor& who) -> caf::result<ok_atom> {
        return on_watch_finals(self, who);
      },
      [self](get_atom, const std::string& job_id) -> progress_update {
        auto i = self->state.jobs.find(job_id);
        if (i == self->state.jobs.end() || i->second.seq == 0)
          return progress_update{};
        return i->second.latest;
      },
      [self](flush_atom, const std::string& job_id, uint64_t timer) {
        on_flush(self, job_id, timer);
      },
      [self](sweep_atom) {
        self->state.sweep_armed = false;
        sweep_finals(self);
      },
  };
}

} // namespace

progress_actor spawn_progress_publisher(caf::actor_system& sys,
                                        progress_options options) {
  // The private extension converts to its subset: no actor_cast.
  return sys.spawn(publisher_impl, options);
}

int64_t estimate_eta_ms(double first_percent, int64_t first_at_ms,
                        double latest_percent, int64_t latest_at_ms) {
  if (!std::isfinite(first_percent) || !std::isfinite(latest_percent))
    return -1;
  if (latest_percent >= 100.0)
    return 0;
  auto moved = latest_percent - first_percent;
  // Subtract in double: int64 differences of arbitrary inputs may overflow.
  auto elapsed
      = static_cast<double>(latest_at_ms) - static_cast<double>(first_at_ms);
  if (!(moved > 0.0) || !(elapsed > 0.0))
    return -1;
  auto eta = (100.0 - latest_percent) * elapsed / moved;
  // Beyond int64 (a crawl over a huge span) is as good as unknown.
  if (!std::isfinite(eta)
      || eta >= static_cast<double>(std::numeric_limits<int64_t>::max()))
    return -1;
  return static_cast<int64_t>(std::llround(eta));
}

} // namespace drover
