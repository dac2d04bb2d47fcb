// The queue and the control log of rate limiters and circuit breakers
// (drover.control_log, docs/jobs.md): recording their state changes, run-time
// settings, reading both back when the queue starts, and — coordinators
// sharing the partitions — following the settings and breaker openings made
// at the others. The gates themselves are in actors/queue_flow.cpp.

#include "actors/detail/queue_state.hpp"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <map>
#include <optional>
#include <utility>

namespace drover::queue_detail {

namespace {

/// Writes `c` (its at_ms the wall clock's) to the control log. The state
/// itself is the queue's; a failed entry is lost (a deposed coordinator's
/// refused write, PostgreSQL down) but for a breaker's opening at a
/// coordinator sharing the partitions: the others follow it from the log,
/// so it is kept and written again at the next settings poll
/// (retry_openings), said once.
void write_change(self_ptr self, flow_change c, bool again = false) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, control_atom::value, c.at_ms,
                c.kind, c.key, c.state, c.detail)
      .then([](ok_atom) {},
            [self, c, again](caf::error& err) mutable {
              auto& st = self->state;
              bool keep = st.opts.settings_poll.count() > 0
                          && c.kind == "breaker" && c.state == "open"
                          && st.unrecorded_openings.size() < 1000;
              if (!again)
                log_failure(keep ? "recording a breaker's opening (will retry: "
                                   "the other coordinators follow it)"
                                 : "recording a flow-control change",
                            err, {}, log::level::warn);
              if (keep)
                st.unrecorded_openings.push_back(std::move(c));
            });
}

/// Writes again the openings whose write failed, but those whose cooldown
/// is over (nobody follows them any more) or whose breaker is gone.
void retry_openings(self_ptr self) {
  auto& st = self->state;
  auto pending = std::move(st.unrecorded_openings);
  st.unrecorded_openings.clear();
  auto now = now_ms(self);
  for (auto& c : pending) {
    auto b = st.flow.breakers().find(c.key);
    if (b != st.flow.breakers().end()
        && c.at_ms + b->second.config().cooldown_ms > now)
      write_change(self, std::move(c), true);
  }
}

} // namespace

/// Sends the limiters' and breakers' state changes to the control log
/// (the store's drover.control_log), and logs them.
void record_flow_changes(self_ptr self) {
  auto& st = self->state;
  if (!st.flow.has_changes())
    return;
  for (auto& c : st.flow.drain_changes()) {
    // The log's time is the wall clock's.
    c.at_ms = c.wall_ms != 0 ? c.wall_ms : now_ms(self);
    log::info("queue",
              "flow control: " + c.kind + " '" + c.key + "' " + c.state,
              {{"detail", c.detail}});
    write_change(self, std::move(c));
  }
}

caf::result<std::string> set_flow(self_ptr self, const std::string& kind,
                                  const std::string& key,
                                  const std::string& spec) {
  auto& st = self->state;
  if (!st.flow_loaded)
    // A setting made now could be overwritten by the older one being read.
    return make_error(errc::unavailable,
                      "the coordinator is still reading its rate limits and "
                      "breakers; retry");
  if (spec.empty() || spec.size() > 1024)
    return make_error(errc::invalid_request, "spec: 1-1024 bytes");
  if (auto err = st.flow.set_setting(kind, key, spec, flow_now(self), true))
    return err;
  // Durable first: a setting the log does not hold would be lost by the
  // next takeover.
  auto rp = self->make_response_promise<std::string>();
  self->request(st.deps.store, store_timeout, control_atom::value, now_ms(self),
                kind, key, std::string{"configured"}, spec)
      .then(
          [self, rp, kind, key, spec](ok_atom) mutable {
            auto& st = self->state;
            auto err = st.flow.set_setting(kind, key, spec, flow_now(self));
            if (err) { // room taken by a setting that came in meanwhile
              rp.deliver(std::move(err));
              return;
            }
            st.applied_settings[kind + '\n' + key] = spec;
            st.made_here[kind + '\n' + key] = ++st.settings_made;
            log::info("queue", "flow control: " + kind + " '" + key + "' set",
                      {{"spec", spec}});
            on_flow_timer(self); // a looser limit lets parked jobs go now
            rp.deliver(flow_json(self));
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

namespace {

/// Records the run-time settings in `quads` (the last states read back at
/// start, control_last's answer) as applied here: what the follow reads
/// compare with (apply_followed).
void note_applied(queue_state& st, const std::string& kind,
                  const std::vector<std::string>& quads) {
  for (size_t i = 0; i + 3 < quads.size(); i += 4)
    if (quads[i + 1] == "configured")
      st.applied_settings[kind + '\n' + quads[i]] = quads[i + 3];
}

/// Polls after the log's last sequence moved that still read it, and how
/// many polls back a read starts (queue_state::follow_marks): an entry's
/// sequence is taken at its INSERT and seen at its COMMIT, so one committed
/// up to that many polls after a later one was read is still followed
/// (queue_state::openings_read keeps an opening from being followed twice;
/// a setting read again is applied only if it is newer than the one
/// applied).
constexpr uint32_t follow_window = 5;

/// Polls between two reads of every key's last setting over the whole log:
/// the net under the incremental reads (an entry committed later than
/// follow_window polls, rows removed by hand).
constexpr uint32_t full_read_polls = 300;

/// The sequences of control-log sextuples; nullopt (and a warning) if one
/// does not read as a number.
std::optional<std::vector<int64_t>>
sequences_of(const std::vector<std::string>& six) {
  std::vector<int64_t> seqs;
  for (size_t i = 0; i + 5 < six.size(); i += 6) {
    const auto& text = six[i];
    int64_t seq = 0;
    auto [end, ec]
        = std::from_chars(text.data(), text.data() + text.size(), seq);
    if (ec != std::errc{} || end != text.data() + text.size()) {
      log::warn("queue", "the control log's settings and openings are "
                         "unreadable (will retry)");
      return std::nullopt;
    }
    seqs.push_back(seq);
  }
  return seqs;
}

/// Applies the run-time settings among control-log sextuples `six` (with
/// their sequences `seqs`), read when queue_state::settings_made was
/// `asked_at`: each key's last one, if its sequence is above the one
/// applied here (an older one read late never undoes a newer one) and its
/// spec is not the one applied (applying it again would start a breaker's
/// counts over). A key set here since it was asked is left alone. Whether
/// any applied.
bool apply_followed(self_ptr self, const std::vector<std::string>& six,
                    const std::vector<int64_t>& seqs, uint64_t asked_at) {
  auto& st = self->state;
  std::map<std::string, size_t> last; // "<kind>\n<key>" -> its row
  for (size_t n = 0; n < seqs.size(); ++n) {
    const auto& kind = six[6 * n + 1];
    if (six[6 * n + 3] != "configured"
        || (kind != "rate_limit" && kind != "breaker"))
      continue;
    auto [at, fresh] = last.try_emplace(kind + '\n' + six[6 * n + 2], n);
    if (!fresh && seqs[at->second] < seqs[n])
      at->second = n;
  }
  std::map<std::string, std::vector<std::string>> changed; // by kind
  for (const auto& [name, n] : last) {
    if (auto m = st.made_here.find(name);
        m != st.made_here.end() && m->second > asked_at)
      continue;
    auto& seq = st.applied_sequence[name];
    if (seq >= seqs[n])
      continue;
    seq = seqs[n];
    auto i = 6 * n;
    auto& spec = st.applied_settings[name];
    if (spec == six[i + 5])
      continue;
    spec = six[i + 5];
    changed[six[i + 1]].insert(
        changed[six[i + 1]].end(),
        {six[i + 2], six[i + 3], six[i + 4], six[i + 5]});
  }
  for (const auto& [kind, quads] : changed)
    st.flow.apply_configured(kind, quads, flow_now(self));
  return !changed.empty();
}

/// After settings or openings were followed: their changes to the log,
/// and the gates' timers.
void after_followed(self_ptr self, bool looser, bool opened) {
  if (looser || opened)
    record_flow_changes(self);
  if (looser)
    on_flow_timer(self); // a looser limit lets parked jobs go
  else if (opened)
    rearm_flow(self); // the cooldown's end
}

/// Follows what another coordinator sharing the partitions wrote to the
/// control log after sequence `after`, one page: the last run-time setting
/// of each key (apply_followed), then the breaker openings
/// (flow_control::follow_opened). Then `then` with the page's last
/// sequence if it was full (more may follow), else nullopt. A failed read
/// says so and tries again at the next poll.
void follow_log(self_ptr self, int64_t after,
                std::function<void(std::optional<int64_t>)> then) {
  auto& st = self->state;
  auto asked_at = st.settings_made;
  auto again = [self] {
    self->delayed_send(self, self->state.opts.settings_poll,
                       settings_atom::value);
  };
  self->request(st.deps.store, store_timeout, control_atom::value,
                follow_atom::value, after)
      .then(
          [self, then, asked_at, again](std::vector<std::string>& six) {
            auto& st = self->state;
            auto seqs = sequences_of(six);
            if (!seqs)
              return again();
            std::vector<std::string> fresh;
            for (size_t n = 0; n < seqs->size(); ++n) {
              auto i = 6 * n;
              auto seq = (*seqs)[n];
              st.follow_after = std::max(st.follow_after, seq);
              if (six[i + 1] == "breaker" && six[i + 3] == "open"
                  && st.openings_read.insert(seq).second)
                fresh.insert(fresh.end(),
                             {six[i], six[i + 2], six[i + 4], six[i + 5]});
            }
            auto looser = apply_followed(self, six, *seqs, asked_at);
            auto opened
                = st.flow.follow_opened(fresh, now_ms(self), flow_now(self));
            after_followed(self, looser, opened);
            if (six.size() >= 6 * size_t{max_follow_read})
              then(seqs->back());
            else
              then(std::nullopt);
          },
          [again](caf::error& err) {
            log::debug("queue",
                       "reading the control log's settings and openings "
                       "(will retry)",
                       {{"error", describe(err)}});
            again();
          });
}

/// follow_log from `after`, page after page, then `done`.
void follow_pages(self_ptr self, int64_t after, int64_t last,
                  std::function<void()> done) {
  follow_log(self, after, [self, last, done](std::optional<int64_t> more) {
    if (more)
      return follow_pages(self, *more, last, done);
    // Read through `last`: the next read starts there, not at the last
    // setting or opening (the rows between are not scanned again).
    auto& st = self->state;
    st.follow_after = std::max(st.follow_after, last);
    done();
  });
}

/// Every key's last setting over the whole log, applied as a follow read's
/// (apply_followed); then `then`, read or not (a failure is said and the
/// next poll reads again).
void read_all_settings(self_ptr self, std::function<void()> then) {
  auto& st = self->state;
  auto asked_at = st.settings_made;
  self->request(st.deps.store, store_timeout, control_atom::value,
                configured_atom::value)
      .then(
          [self, then, asked_at](std::vector<std::string>& six) {
            if (auto seqs = sequences_of(six))
              after_followed(self, apply_followed(self, six, *seqs, asked_at),
                             false);
            else
              self->state.polls_to_full_read = 0;
            then();
          },
          [self, then](caf::error& err) {
            log::debug("queue",
                       "reading the control log's settings (will retry)",
                       {{"error", describe(err)}});
            self->state.polls_to_full_read = 0;
            then();
          });
}

} // namespace

void follow_settings(self_ptr self) {
  // Settings made and breakers opened at another coordinator sharing the
  // partitions: the control log is where they are first (set_flow writes
  // before it applies).
  auto& st = self->state;
  retry_openings(self);
  auto again = [self] {
    self->delayed_send(self, self->state.opts.settings_poll,
                       settings_atom::value);
  };
  // Armed by load_flow once the settings were read back. The log's last
  // sequence first (its primary key's last entry): the log is read while
  // it moves, and for follow_window polls after.
  self->request(st.deps.store, store_timeout, control_atom::value,
                get_atom::value)
      .then(
          [self, again](int64_t last) {
            auto& st = self->state;
            if (last < st.follow_after || last < st.follow_last) {
              // Rows removed by hand, the sequence restarted: read on from
              // where the log is now, every key's last setting first.
              log::warn("queue",
                        "the control log's last sequence went "
                        "back: reading its settings and openings "
                        "again from there",
                        {{"last", std::to_string(last)}});
              st.follow_after = last;
              st.follow_marks.clear();
              st.openings_read.clear();
              st.applied_sequence.clear();
              st.follow_last = -1;
              st.polls_to_full_read = 0;
            }
            if (last != st.follow_last) {
              st.follow_last = last;
              st.follow_quiet = 0;
            } else if (st.follow_quiet < follow_window) {
              ++st.follow_quiet;
            }
            auto read = [self, again, last] {
              auto& st = self->state;
              if (st.follow_quiet >= follow_window)
                return again();
              st.follow_marks.push_back(st.follow_after);
              while (st.follow_marks.size() > follow_window)
                st.follow_marks.pop_front();
              auto from = st.follow_marks.front();
              // Openings at or before the start are not read again.
              st.openings_read.erase(st.openings_read.begin(),
                                     st.openings_read.upper_bound(from));
              follow_pages(self, from, last, again);
            };
            if (st.polls_to_full_read > 0) {
              --st.polls_to_full_read;
              return read();
            }
            st.polls_to_full_read = full_read_polls;
            read_all_settings(self, read);
          },
          [again](caf::error& err) {
            log::debug("queue",
                       "reading the control log's last sequence (will retry)",
                       {{"error", describe(err)}});
            again();
          });
}

void load_flow(self_ptr self) {
  // Without them a recovered job naming a key set at run time would run
  // unlimited: keep trying, as recovery does.
  auto retry = [self](const std::string& what, const caf::error& err) {
    auto& st = self->state;
    log_failure("reading the control log's " + what + " (will retry)", err, {},
                log::level::warn);
    self->delayed_send(self, st.recover_backoff.next(draw(self)),
                       flow_load_atom::value);
  };
  auto read
      = [self, retry](const std::string& kind,
                      std::function<void(std::vector<std::string>&)> then) {
          self->request(self->state.deps.store, store_timeout,
                        control_atom::value, kind)
              .then([then](std::vector<std::string>& quads) { then(quads); },
                    [retry, kind](caf::error& err) {
                      retry(kind + " entries", err);
                    });
        };
  // Breakers start as the control log last saw them: a restart or a
  // takeover must not close a breaker that was open.
  self->state.flow.hold_breakers();
  auto load = [self, read] {
    read("rate_limit", [self, read](std::vector<std::string>& rates) {
      auto both = std::make_shared<std::vector<std::string>>(std::move(rates));
      read("breaker", [self, both](std::vector<std::string>& quads) {
        auto& st = self->state;
        st.flow.apply_configured("rate_limit", *both, flow_now(self));
        st.flow.apply_configured("breaker", quads, flow_now(self));
        note_applied(st, "rate_limit", *both);
        note_applied(st, "breaker", quads);
        if (!st.flow_loaded && st.opts.settings_poll.count() > 0)
          self->delayed_send(self, st.opts.settings_poll, settings_atom::value);
        st.flow.restore_breakers(quads, true, now_ms(self), flow_now(self));
        st.flow_loaded = true;
        st.polls_to_full_read = full_read_polls; // read just now
        record_flow_changes(self);
        rearm_flow(self);
        recover(self);
      });
    });
  };
  auto& st = self->state;
  if (st.opts.settings_poll.count() == 0)
    return load();
  // Sharing: the settings and openings to follow are those after the ones
  // read back here (follow_settings); read again at each try, so that none
  // read back is older than the sequence the follow reads start from.
  self->request(st.deps.store, store_timeout, control_atom::value,
                get_atom::value)
      .then(
          [self, load](int64_t last) {
            self->state.follow_after = last;
            load();
          },
          [retry](caf::error& err) { retry("last sequence", err); });
}

} // namespace drover::queue_detail
