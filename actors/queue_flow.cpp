// The queue's gates: concurrency keys, rate limits and circuit breakers, and
// the pools attempts give back. See actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

#include <charconv>
#include <cstdint>

namespace drover::queue_detail {

/// A slot of `key` is free: an attempt ended (its outcome committed, or it
/// was given up as lost), or a woken job left the queue without running.
void release_slot(self_ptr self, const std::string& key) {
  if (key.empty())
    return;
  self->state.concurrency.release(key);
  slot_freed(self, key);
  wake_parked(self, key);
}

/// Frees the first `count` slots of `keys` (an attempt ended, or a job that
/// held them left the queue or parked at a gate).
void release_slots(self_ptr self, const slot_keys& keys, size_t count) {
  for (size_t i = 0; i < count && i < keys.size; ++i)
    release_slot(self, keys.key[i]);
}

/// Where a job of `e` must wait now, if anywhere (flow_control::gate), the
/// tokens it already holds not asked again. Waiting at a rate limit, it
/// takes and keeps the tokens of the limits before it, which it passed.
std::optional<flow_wait> flow_gate(self_ptr self, ready_entry& e) {
  auto& st = self->state;
  auto now = flow_now(self);
  auto wait = st.flow.gate(e.flow, now, e.rate_taken);
  if (wait)
    keep_tokens_before(self, e, *wait);
  return wait;
}

/// `e` waits at `wait`: the tokens of its rate limits before it are taken
/// and kept.
void keep_tokens_before(self_ptr self, ready_entry& e, const flow_wait& wait) {
  if (wait.rate > static_cast<size_t>(e.rate_taken) + 1) {
    self->state.flow.take_rates(e.flow, flow_now(self), e.rate_taken,
                                wait.rate - 1);
    e.rate_taken = static_cast<uint8_t>(wait.rate - 1);
  }
}

/// The number of the job's rate limits and breaker (flow_control::intern).
uint32_t flow_of(queue_state& st, const job_spec& spec) {
  return st.flow.intern(rate_limit_keys_of(spec), spec.breaker_key);
}

own_key_ref own_key_for(const job_spec& spec) {
  return own_key_of(spec.tenant, spec.concurrency_key, spec.concurrency_limit);
}

slot_keys slot_keys_of(const queue_state& st, const std::string& type,
                       const ready_entry& entry) {
  return st.concurrency.keys_of(type, st.admission.tenant_name(entry.tenant),
                                entry.own);
}

slot_keys slot_keys_of(const queue_state& st, const job_spec& spec) {
  return st.concurrency.keys_of(spec.type, spec.tenant, own_key_for(spec));
}

/// Takes the slots of `keys` that `pe` does not hold yet, in order. If one
/// has none free, or jobs already wait behind it (first come, first
/// served: with jobs of one key naming different limits, a job with a
/// higher limit must not overtake one with a lower limit for good), or
/// recovery has not yet counted every attempt that runs, `pe` waits behind
/// that key, in order, without a worker and with the slots before it:
/// answers false, and `pe` was moved.
bool take_slots(self_ptr self, parked_entry& pe, const slot_keys& keys) {
  auto& st = self->state;
  while (pe.entry.holds < keys.size) {
    auto i = pe.entry.holds;
    auto line = st.parked.find(keys.key[i]);
    // A job granted a permit of a type's key across coordinators does not
    // wait behind jobs refused one (they cannot run before it anyway).
    bool queued = line != st.parked.end() && !line->second.empty()
                  && !holds_permit(st, keys.key[i], pe.entry.job_id);
    if (!st.recovered || queued
        || !take_slot(self, keys.key[i], keys.limit[i], pe.entry.job_id)) {
      st.parked[keys.key[i]].push_back(std::move(pe));
      return false;
    }
    ++pe.entry.holds;
  }
  return true;
}

/// `worker` (of `node`) was leased an attempt drawing `shape`: it holds the
/// amounts until it lets go (let_go_pools). `acquired`: the books count them
/// already (an attempt recovered for adoption).
void hold_pools(self_ptr self, const worker_actor& worker, std::string node,
                shape_ref shape, bool acquired) {
  if (!shape)
    return;
  auto& st = self->state;
  let_go_pools(self, worker.address()); // never two holds of one worker
  if (!acquired)
    st.resources.acquire(node, shape);
  if (st.workers.count(worker.address()) == 0)
    self->monitor(worker); // its death lets go
  st.pool_holds[worker.address()] = {std::move(node), std::move(shape)};
}

/// `worker` let go of its attempt (it offers itself again, or it died): the
/// amounts it held go back.
void let_go_pools(self_ptr self, const caf::actor_addr& worker) {
  auto& st = self->state;
  auto h = st.pool_holds.find(worker);
  if (h == st.pool_holds.end())
    return;
  auto hold = std::move(h->second);
  st.pool_holds.erase(h);
  release_pools(self, hold.node, hold.shape);
}

/// Amounts of `shape` on `node` came back (a worker let go of its attempt,
/// or an attempt waiting for adoption was given up): what waited for them
/// may fit now, on any class of that node.
void release_pools(self_ptr self, const std::string& node,
                   const shape_ref& shape) {
  if (!shape)
    return;
  auto& st = self->state;
  st.resources.release(node, shape);
  std::vector<std::string> classes;
  for (const auto& [cls, q] : st.classes)
    if (!q.idle_workers.empty())
      classes.push_back(cls);
  for (const auto& cls : classes)
    dispatch(self, cls);
  if (!st.flow_parked.empty())
    rearm_flow(self);
}

/// The flow-control clock: monotonic ms, so that a step of the wall clock
/// neither stops rate-limited dispatch nor cuts a cooldown short.
int64_t flow_now(self_ptr self) {
  if (self->state.opts.flow_clock_ms)
    return self->state.opts.flow_clock_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Arms the flow timer for `at_ms` (flow_now's clock) unless an earlier
/// wake-up is armed (0 = nothing to arm).
void arm_flow_timer(self_ptr self, int64_t at_ms) {
  auto& st = self->state;
  if (at_ms == 0 || (st.flow_armed_ms != 0 && st.flow_armed_ms <= at_ms))
    return;
  st.flow_armed_ms = at_ms;
  auto delay = std::max<int64_t>(0, at_ms - flow_now(self));
  self->delayed_send(self, std::chrono::milliseconds{delay},
                     flow_timer_atom::value, ++st.flow_generation);
}

/// Arms the flow timer for the first gate with parked jobs that may open:
/// called after anything that changes what a gate lets through (a token
/// taken, an outcome, a woken job taken or gone), so no parked job waits
/// for an event that will not come.
/// Jobs parked at a gate that a worker could take now (their class has an
/// idle worker), looked for among the first 1,000: only those are woken.
bool runnable(const queue_state& st, const parked_entry& pe) {
  auto c = st.classes.find(pe.resource_class);
  if (c == st.classes.end())
    return false;
  if (!pe.shape)
    return !c->second.idle_workers.empty();
  // ...and one of them on a node with the pools it needs free.
  for (const auto& w : c->second.idle_workers) {
    auto i = st.workers.find(w.address());
    if (i != st.workers.end()
        && st.resources.fits_now(i->second.node, pe.shape))
      return true;
  }
  return false;
}

void rearm_flow(self_ptr self) {
  auto& st = self->state;
  auto now = flow_now(self);
  for (const auto& kv : st.flow_parked) {
    auto at = st.flow.next_check_ms(kv.first, now);
    if (at == now) {
      // Open now: worth a look only if one of its jobs has a worker (a
      // worker becoming idle looks again: worker_ready).
      size_t scanned = 0;
      bool any = false;
      for (const auto& pe : kv.second) {
        if (runnable(st, pe) || ++scanned >= 1000) {
          any = true;
          break;
        }
      }
      if (!any)
        continue;
    }
    arm_flow_timer(self, at);
  }
}

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

/// A job woken from a gate left the ready queue (taken, parked again,
/// removed): the gate may let another through.
void left_gate(self_ptr self, ready_entry& e) {
  if (e.woken_gate == 0)
    return;
  auto gates = self->state.flow.gates_of(e.flow);
  if (e.woken_gate <= gates.size())
    self->state.flow.unwoke(gates[e.woken_gate - 1]);
  e.woken_gate = 0;
}

/// Moves the jobs that may pass `gate` now back to their ready queues, where
/// their age puts them: as many as the rate limit has tokens, a half-open
/// breaker probes, a closed one all (less those woken and not yet taken).
/// They take what they need when a worker takes them.
void wake_gate(self_ptr self, const std::string& gate,
               std::vector<std::string>& classes) {
  auto& st = self->state;
  auto p = st.flow_parked.find(gate);
  if (p == st.flow_parked.end())
    return;
  auto n = std::min(st.flow.wakeable(gate, flow_now(self)), p->second.size());
  // The oldest jobs a worker can take now: a job of a class with no idle
  // worker would hold the token (or the probe) while every other class
  // waits.
  size_t woken = 0;
  auto& dq = p->second;
  for (auto i = dq.begin();
       i != dq.end() && woken < n && i - dq.begin() < 1000;) {
    if (!runnable(st, *i)) {
      ++i;
      continue;
    }
    auto pe = std::move(*i);
    i = dq.erase(i);
    auto gates = st.flow.gates_of(pe.entry.flow);
    pe.entry.woken_gate = static_cast<uint8_t>(
        std::find(gates.begin(), gates.end(), gate) - gates.begin() + 1);
    back_to_ready(st, std::move(pe), classes);
    ++woken;
  }
  st.flow.woke(gate, woken);
  if (p->second.empty())
    st.flow_parked.erase(p);
}

/// Parks `pe` behind `gate`, where its age puts it (a job woken and parked
/// again keeps its place).
void park_at_gate(queue_state& st, const std::string& gate, parked_entry pe) {
  auto& dq = st.flow_parked[gate];
  auto at = std::upper_bound(dq.begin(), dq.end(), pe,
                             [](const parked_entry& x, const parked_entry& y) {
                               return x.entry.key < y.entry.key;
                             });
  dq.insert(at, std::move(pe));
}

/// The flow timer fired: every gate that may open now.
void on_flow_timer(self_ptr self) {
  auto& st = self->state;
  st.flow_armed_ms = 0;
  std::vector<std::string> gates;
  for (const auto& kv : st.flow_parked)
    gates.push_back(kv.first);
  std::vector<std::string> classes;
  for (const auto& g : gates)
    wake_gate(self, g, classes);
  for (const auto& cls : classes)
    dispatch(self, cls);
  rearm_flow(self);
  record_flow_changes(self);
}

/// An attempt of a job with flow keys ended: its breaker learns how.
void flow_outcome(self_ptr self, const running_entry& entry, bool success,
                  const std::string& code) {
  auto& st = self->state;
  if (entry.flow == 0)
    return;
  st.flow.outcome(entry.flow, entry.probe, success, code, flow_now(self));
  rearm_flow(self);
  record_flow_changes(self);
}

std::string flow_json(self_ptr self) {
  auto& st = self->state;
  std::map<std::string, size_t> waiting;
  for (const auto& [gate, dq] : st.flow_parked)
    waiting[gate] = dq.size();
  // And the resource pools of the worker nodes, with what their attempts
  // hold now (runtime/resources.hpp).
  auto out = st.flow.to_json(flow_now(self), waiting);
  if (!out.empty() && out.back() == '}')
    out.insert(out.size() - 1, ",\"resource_pools\":" + st.resources.to_json());
  return out;
}

std::string hold_reason(self_ptr self, const job_spec& spec) {
  auto& st = self->state;
  auto keys = slot_keys_of(st, spec);
  for (size_t i = 0; i < keys.size; ++i) {
    const auto& key = keys.key[i];
    auto p = st.parked.find(key);
    if (p == st.parked.end() || p->second.empty())
      continue;
    auto limit
        = keys.limit[i] != 0 ? keys.limit[i] : st.concurrency.limit_of(key);
    auto what = keys.limit[i] != 0
                    ? "its concurrency key '"
                          + spec.concurrency_key.substr(0, 128) + "'"
                    : std::string{"its concurrency limit"};
    return "a free slot of " + what + " ("
           + std::to_string(st.concurrency.running(key)) + " of "
           + std::to_string(limit) + " running"
           + (needs_permit(st, key) ? " here, more at the other coordinators"
                                      " sharing the partitions"
                                    : "")
           + "; " + std::to_string(p->second.size()) + " job(s) wait for one)";
  }
  auto rates = flow_control::key_set(rate_limit_keys_of(spec));
  std::vector<size_t> at_rate;
  for (const auto& k : rates) {
    auto g = st.flow_parked.find("r" + k);
    at_rate.push_back(g == st.flow_parked.end() ? 0 : g->second.size());
  }
  return st.flow.hold_reason(rates, spec.breaker_key, at_rate, flow_now(self));
}

caf::error check_flow_keys(self_ptr self, const job_spec& spec) {
  auto& st = self->state;
  auto err
      = st.flow.check(rate_limit_keys_of(spec), spec.breaker_key, spec.tenant);
  if (err && !st.flow_loaded)
    // Perhaps a key set at run time, not read back yet.
    return make_error(errc::unavailable,
                      "the coordinator is still reading its rate limits and "
                      "breakers; retry");
  return err;
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

/// Records the run-time settings in `quads` (the control log's answer,
/// asked for when queue_state::settings_made was `asked_at`) as applied
/// here; answers those that were not (a new key, another spec). A key set
/// here since it was asked is left alone: the answer may predate it.
std::vector<std::string> note_applied(queue_state& st, const std::string& kind,
                                      const std::vector<std::string>& quads,
                                      uint64_t asked_at = UINT64_MAX) {
  std::vector<std::string> changed;
  for (size_t i = 0; i + 3 < quads.size(); i += 4) {
    if (quads[i + 1] != "configured")
      continue;
    auto name = kind + '\n' + quads[i];
    if (auto m = st.made_here.find(name);
        m != st.made_here.end() && m->second > asked_at)
      continue;
    auto& spec = st.applied_settings[name];
    if (spec == quads[i + 3])
      continue;
    spec = quads[i + 3];
    changed.insert(changed.end(), quads.begin() + static_cast<ptrdiff_t>(i),
                   quads.begin() + static_cast<ptrdiff_t>(i + 4));
  }
  return changed;
}

/// How many sequences before the last one read a read of the breaker
/// openings goes back: an opening's sequence is taken at its INSERT and
/// seen at its COMMIT, so one committed just after a later one was read
/// comes in at the next poll (queue_state::openings_read keeps it from
/// being followed twice).
constexpr int64_t opened_reread = 100;

/// Opens the breakers that another coordinator sharing the partitions
/// opened (flow_control::follow_opened): reads the log's openings after
/// queue_state::opened_after (less opened_reread), a page at a time, then
/// `then` with whether a full page may have more. A failed read says so
/// and tries again at the next poll.
void follow_opened(self_ptr self, std::function<void(bool)> then) {
  auto& st = self->state;
  auto after = st.opened_after < 0
                   ? st.opened_after
                   : std::max<int64_t>(0, st.opened_after - opened_reread);
  self->request(st.deps.store, store_timeout, control_atom::value,
                opened_atom::value, after)
      .then(
          [self, then](std::vector<std::string>& quads) {
            auto& st = self->state;
            std::vector<std::string> fresh;
            for (size_t i = 0; i + 3 < quads.size(); i += 4) {
              const auto& text = quads[i];
              int64_t seq = 0;
              auto [end, ec] = std::from_chars(text.data(),
                                               text.data() + text.size(), seq);
              if (ec != std::errc{} || end != text.data() + text.size()) {
                log::warn("queue", "the control log's breaker openings are "
                                   "unreadable (will retry)");
                return self->delayed_send(self, st.opts.settings_poll,
                                          settings_atom::value);
              }
              if (!st.openings_read.insert(seq).second)
                continue; // followed already
              st.opened_after = std::max(st.opened_after, seq);
              fresh.insert(fresh.end(),
                           quads.begin() + static_cast<ptrdiff_t>(i),
                           quads.begin() + static_cast<ptrdiff_t>(i + 4));
            }
            st.openings_read.erase(
                st.openings_read.begin(),
                st.openings_read.upper_bound(st.opened_after - opened_reread));
            if (st.flow.follow_opened(fresh, now_ms(self), flow_now(self))) {
              record_flow_changes(self);
              rearm_flow(self); // the cooldown's end
            }
            then(quads.size() >= 4 * size_t{max_openings_read});
          },
          [self](caf::error& err) {
            log::debug("queue",
                       "reading the control log's breaker openings (will "
                       "retry)",
                       {{"error", describe(err)}});
            self->delayed_send(self, self->state.opts.settings_poll,
                               settings_atom::value);
          });
}

} // namespace

void follow_settings(self_ptr self) {
  // Settings made at another coordinator sharing the partitions: the
  // control log is where they are first (set_flow writes before it
  // applies). A key whose last setting is not the one applied here is
  // applied now; one applied already is not touched (applying it again
  // would start a breaker's counts over).
  auto& st = self->state;
  retry_openings(self);
  auto again = [self] {
    self->delayed_send(self, self->state.opts.settings_poll,
                       settings_atom::value);
  };
  auto read = [self, again](const std::string& kind,
                            std::function<void()> then) {
    auto asked_at = self->state.settings_made;
    self->request(self->state.deps.store, store_timeout, control_atom::value,
                  kind)
        .then(
            [self, kind, then, asked_at](std::vector<std::string>& quads) {
              auto& st = self->state;
              auto changed = note_applied(st, kind, quads, asked_at);
              if (!changed.empty()) {
                st.flow.apply_configured(kind, changed, flow_now(self));
                record_flow_changes(self);
                on_flow_timer(self); // a looser limit lets parked jobs go
              }
              then();
            },
            [again, kind](caf::error& err) {
              log::debug("queue",
                         "reading the control log's " + kind
                             + " settings (will retry)",
                         {{"error", describe(err)}});
              again();
            });
  };
  // Armed by load_flow once the settings were read back. The log's last
  // sequence first (its primary key's last entry): the
  // settings are read only when something was written since the last read.
  self->request(st.deps.store, store_timeout, control_atom::value,
                get_atom::value)
      .then(
          [self, read, again](int64_t last) {
            auto& st = self->state;
            if (last < st.opened_after || last < st.settings_seen) {
              // Rows removed by hand, the sequence restarted: read on from
              // where the log is now.
              log::warn("queue",
                        "the control log's last sequence went "
                        "back: reading its settings and openings "
                        "again from there",
                        {{"last", std::to_string(last)}});
              st.opened_after = last;
              st.openings_read.clear();
              st.settings_seen = -1;
            }
            if (last == st.settings_seen)
              return again();
            read("rate_limit", [self, read, again, last] {
              read("breaker", [self, again, last] {
                follow_opened(self, [self, again, last](bool more) {
                  if (!more) // else the next poll reads on
                    self->state.settings_seen = last;
                  again();
                });
              });
            });
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
        record_flow_changes(self);
        rearm_flow(self);
        recover(self);
      });
    });
  };
  auto& st = self->state;
  if (st.opts.settings_poll.count() == 0 || st.opened_after >= 0)
    return load();
  // Sharing: the breaker openings to follow are those after the states
  // restored here (follow_settings).
  self->request(st.deps.store, store_timeout, control_atom::value,
                get_atom::value)
      .then(
          [self, load](int64_t last) {
            self->state.opened_after = last;
            load();
          },
          [retry](caf::error& err) { retry("last sequence", err); });
}

} // namespace drover::queue_detail
