// The worker agent's attempts (actors/worker_agent.hpp): running leases
// on the local workers, the outbox of progress and outcomes, heartbeats,
// token takes, and its figures. See actors/detail/agent_state.hpp.

#include "actors/detail/agent_state.hpp"

#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

#include <algorithm>

namespace drover::agent_detail {

void check_drained(agent_actor self) {
  auto& st = self->state;
  check_left(self);
  if (!st.draining || st.drained || !st.running.empty() || !st.waiting.empty()
      || !st.completions.empty())
    return;
  st.drained = true;
  log::info("worker_agent", "drained: every attempt finished and settled");
  if (st.cfg.on_drained)
    st.cfg.on_drained();
}

/// Runs waiting leases on idle workers of their class.
void refuse_stale(agent_actor self, const lease& l, int64_t newest) {
  auto& st = self->state;
  st.counters->stale_leases_refused.fetch_add(1, std::memory_order_relaxed);
  if (st.refused.size() < 4096) // told once; the rest lapse at the sender
    st.refused.push_back(running_attempt{l.job_id, l.attempt, {}});
  log::warn("worker_agent",
            "refused a lease from a deposed coordinator: its partition was "
            "leased here at a newer epoch",
            {{"job", l.job_id},
             {"attempt", l.attempt},
             {"partition", partition_of_id(l.job_id)},
             {"epoch", l.partition_epoch},
             {"newest_epoch", newest}});
}

void start_waiting(agent_actor self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  for (auto i = st.waiting.begin(); i != st.waiting.end();) {
    // Buffered before a newer epoch of its partition came: its sender has
    // been deposed since. Dropped (no longer listed, it lapses there).
    auto partition = partition_of_id(i->job_id);
    if (st.cfg.epochs->stale(partition, i->partition_epoch, now)) {
      refuse_stale(self, *i, st.cfg.epochs->of(partition));
      i = st.waiting.erase(i);
      continue;
    }
    const auto& cls = resource_class_of(i->spec);
    auto& idle = st.idle[cls];
    if (idle.empty()) {
      ++i;
      continue;
    }
    auto worker = idle.front();
    idle.pop_front();
    run_info r;
    r.attempt = i->attempt;
    r.resource_class = cls;
    r.worker = worker;
    // Takes coalesce per set of keys: one request asks for tokens of each.
    for (const auto& k : rate_limit_keys_of(i->spec))
      r.rate_key += (r.rate_key.empty() ? "" : "\n") + k;
    st.running[i->job_id] = r;
    auto started = st.counters->started_by_class.find(cls);
    if (started != st.counters->started_by_class.end())
      started->second.fetch_add(1, std::memory_order_relaxed);
    // The agent owns the attempt on this node: its reports come here.
    caf::anon_send(worker, run_atom::value, std::move(*i),
                   attempt_owner_actor{self});
    i = st.waiting.erase(i);
  }
}

/// Forces a running attempt off its worker: nothing more from it counts,
/// and the worker stays taken (listed as stuck) until its thread returns.
void abandon_running(agent_actor self,
                     std::map<std::string, run_info>::iterator i) {
  auto& st = self->state;
  caf::anon_send(i->second.worker, abandon_atom::value, i->first,
                 i->second.attempt);
  // A borrowed attempt's worker is another agent's: it stays taken there.
  if (!i->second.borrowed)
    st.stuck[i->second.worker.address()]
        = running_attempt{i->first, i->second.attempt, {}};
  st.running.erase(i);
  check_drained(self);
}

void end_attempt(agent_actor self, std::map<std::string, run_info>::iterator i,
                 completion c) {
  auto& st = self->state;
  bool superseded = i->second.superseded;
  auto cls = i->second.resource_class;
  st.running.erase(i);
  // A move it took back stays claimable on the board until it ends.
  st.cfg.handovers->withdraw(c.job_id, c.attempt, self->address());
  st.counters->attempts_finished.fetch_add(1, std::memory_order_relaxed);
  if (!superseded) {
    st.progress.erase(c.job_id); // the outcome says more
    st.checkpoints.erase(c.job_id);
    st.completion_class[{c.job_id, c.attempt}] = cls;
    st.completions[{c.job_id, c.attempt}] = std::move(c);
    maybe_report(self);
  }
  check_drained(self);
}

/// Removes a buffered (not yet started) lease; false if there is none.
bool take_waiting(agent_actor self, const std::string& job_id,
                  uint32_t attempt) {
  auto& w = self->state.waiting;
  auto i = std::find_if(w.begin(), w.end(), [&](const lease& l) {
    return l.job_id == job_id && l.attempt == attempt;
  });
  if (i == w.end())
    return false;
  w.erase(i);
  return true;
}

/// Applies the coordinator's settled, superseded, handed-over and adopted
/// lists.
void apply_reply(agent_actor self, coordinator_reply& r) {
  auto& st = self->state;
  if (!r.handed_over.empty())
    lend(self, r.handed_over);
  if (!r.owned_elsewhere.empty())
    lend(self, r.owned_elsewhere, true);
  if (!r.adopted.empty())
    claim(self, r.adopted);
  for (auto& s : r.settled) {
    st.completions.erase({s.job_id, s.attempt});
    st.completion_class.erase({s.job_id, s.attempt});
    st.sent.erase({s.job_id, s.attempt});
  }
  for (auto& s : r.superseded) {
    st.completions.erase({s.job_id, s.attempt});
    st.completion_class.erase({s.job_id, s.attempt});
    st.sent.erase({s.job_id, s.attempt});
    auto p = st.progress.find(s.job_id);
    if (p != st.progress.end() && p->second.attempt == s.attempt)
      st.progress.erase(p);
    if (take_waiting(self, s.job_id, s.attempt))
      continue;
    auto i = st.running.find(s.job_id);
    if (i == st.running.end() || i->second.attempt != s.attempt
        || i->second.superseded || (i->second.lent && !i->second.moving))
      continue;
    if (i->second.moving) {
      // Refused where it was offered to move from (say, an adoption there
      // lost the race to the offer): if the node's agent joined there
      // takes it, it runs on there; if nobody does, it is stopped at the
      // deadline like any hand-over.
      i->second.moving = false;
      st.cfg.handovers->as_hand_over(s.job_id, s.attempt, self->address());
      continue;
    }
    i->second.superseded = true;
    log::warn("worker_agent", log::job{s.job_id},
              "attempt superseded (its lease lapsed): stopping it",
              {{"attempt", s.attempt}});
    caf::anon_send(i->second.worker, cancel_atom::value, s.job_id, s.attempt);
    self->delayed_send(self, st.cfg.supersede_grace, force_atom::value,
                       s.job_id, s.attempt);
  }
  check_drained(self);
}

/// Sends a coalesced token request (token_relay) to the coordinator; its
/// answer is shared out and the next one for the key goes out.
void ask_tokens(agent_actor self, std::optional<token_relay::request> req) {
  if (!req)
    return;
  auto& st = self->state;
  auto key = req->key;
  auto answer = [self, key](uint32_t granted, int64_t retry_ms,
                            const caf::error& err) {
    if (!err)
      self->state.counters->tokens_granted.fetch_add(granted,
                                                     std::memory_order_relaxed);
    ask_tokens(self, self->state.tokens.answered(key, granted, retry_ms, err));
  };
  if (!st.link || st.protocol < 2) {
    // Not connected (or to a coordinator without tokens): the takes ask
    // again after a while, within their handlers' deadlines.
    answer(0, 0, make_error(errc::unavailable, "no coordinator"));
    return;
  }
  self->request(st.link, std::chrono::seconds{10}, take_atom::value,
                req->job_id, req->attempt, req->wanted)
      .then([answer](uint32_t granted,
                     int64_t retry_ms) { answer(granted, retry_ms, {}); },
            [answer](caf::error& err) { answer(0, 0, err); });
}

caf::result<uint32_t, int64_t> on_take(agent_actor self,
                                       const std::string& job_id,
                                       const worker_actor& worker,
                                       uint32_t wanted) {
  auto& st = self->state;
  auto i = st.running.find(job_id);
  if (i == st.running.end() || i->second.worker != worker
      || i->second.superseded)
    return make_error(errc::stale_attempt,
                      "job " + job_id + " does not run on this worker");
  if (i->second.lent) {
    // Its tokens come from the coordinator that took it over.
    if (i->second.lent_home)
      return self->delegate(i->second.lent_home, take_atom::value, job_id,
                            worker, wanted);
    return make_error(errc::unavailable,
                      "attempt of job " + job_id
                          + " is being handed to another coordinator; ask "
                            "again");
  }
  if (i->second.rate_key.empty())
    return make_error(errc::invalid_request,
                      "the job names no rate limit (rate_limit_key) to take "
                      "tokens of");
  if (st.link && st.protocol < 2)
    return make_error(errc::forbidden,
                      "the coordinator speaks node protocol "
                          + std::to_string(st.protocol)
                          + ", without tokens mid-attempt (it needs 2)");
  auto rp = self->make_response_promise<uint32_t, int64_t>();
  ask_tokens(self, st.tokens.add(i->second.rate_key, job_id, i->second.attempt,
                                 wanted,
                                 [rp](uint32_t granted, int64_t retry_ms,
                                      caf::error err) mutable {
                                   if (err)
                                     rp.deliver(std::move(err));
                                   else
                                     rp.deliver(granted, retry_ms);
                                 }));
  return rp;
}

void maybe_report(agent_actor self) {
  auto& st = self->state;
  if (!st.link || st.report_in_flight)
    return;
  progress_batch pb;
  completion_batch cb;
  for (auto& [job_id, c] : st.checkpoints)
    pb.updates.push_back(std::move(c));
  st.checkpoints.clear();
  for (auto& [job_id, u] : st.progress)
    pb.updates.push_back(std::move(u));
  st.progress.clear();
  std::vector<attempt_key> keys;
  for (auto& [key, c] : st.completions)
    if (st.sent.count(key) == 0) {
      cb.completions.push_back(c);
      keys.push_back(key);
    }
  if (pb.updates.empty() && cb.completions.empty())
    return;
  for (auto& k : keys)
    st.sent.insert(k);
  st.report_in_flight = true;
  // An answer from a connection given up since (lost, or left to go home)
  // is not this connection's: its flags stay.
  auto gen = st.handshake;
  self->request(st.link, std::chrono::seconds{10}, report_atom::value,
                std::move(pb), std::move(cb))
      .then(
          [self, gen](coordinator_reply& r) {
            if (self->state.handshake == gen)
              self->state.report_in_flight = false;
            apply_reply(self, r);
            maybe_report(self);
          },
          [self, keys, gen](caf::error& err) {
            auto& st = self->state;
            if (st.handshake != gen)
              return;
            st.report_in_flight = false;
            // Progress of a failed report is stale by the next one; the
            // outcomes stay and go again.
            for (auto& k : keys)
              st.sent.erase(k);
            log::warn("worker_agent", "a report failed; it goes again",
                      {{"error", describe(err)}});
          });
}

void send_heartbeat(agent_actor self) {
  auto& st = self->state;
  if (st.link && !st.beat_in_flight) {
    heartbeat hb;
    hb.node_id = st.cfg.node_id;
    hb.at_ms = st.cfg.clock_ms();
    // Going home says "draining" too: no new leases here.
    hb.draining = st.draining || st.leaving;
    for (auto& [job_id, r] : st.running)
      // A moving one is listed as lent where it still reports: that link
      // keeps its lease and lets it move (moving_protocol).
      (r.lent ? hb.lent : hb.running)
          .push_back(running_attempt{job_id, r.attempt, {}});
    hb.offered = st.cfg.handovers->offers(self->address(), st.link.address());
    auto posts = st.cfg.handovers->posts();
    if (posts != st.posts_seen) {
      // An agent of the node lends an attempt: perhaps to this agent's
      // first coordinator, back again. It needs this agent home to be
      // offered there.
      st.posts_seen = posts;
      look_home_now(self);
    }
    hb.refused.swap(st.refused);
    for (auto& l : st.waiting)
      hb.running.push_back(running_attempt{l.job_id, l.attempt, {}});
    for (auto& [addr, ra] : st.stuck)
      hb.running.push_back(ra);
    for (auto& [key, c] : st.completions)
      hb.unacknowledged.push_back(running_attempt{key.first, key.second, {}});
    st.beat_in_flight = true;
    auto said_leaving = st.leaving;
    auto gen = st.handshake;
    self->request(st.link, st.lease_ttl, heartbeat_atom::value, std::move(hb))
        .then(
            [self, said_leaving, gen](coordinator_reply& r) {
              auto& st = self->state;
              if (st.handshake == gen) {
                st.beat_in_flight = false;
                st.last_answer = std::chrono::steady_clock::now();
                if (said_leaving && st.leaving)
                  st.leave_acknowledged = true;
              }
              apply_reply(self, r);
              maybe_report(self); // outcomes whose report failed
            },
            [self, gen](caf::error& err) {
              if (self->state.handshake != gen)
                return; // a connection given up since
              self->state.beat_in_flight = false;
              self->state.counters->heartbeats_unanswered.fetch_add(
                  1, std::memory_order_relaxed);
              if (is(err, errc::forbidden)) {
                // The coordinator no longer takes this agent as the node
                // (another process joined with its id): join again.
                on_link_lost(self, describe(err));
                return;
              }
              log::warn("worker_agent", "a heartbeat went unanswered",
                        {{"error", describe(err)}});
            });
  }
}

void beat(agent_actor self) {
  send_heartbeat(self);
  self->delayed_send(self, self->state.heartbeat_interval, beat_atom::value);
}

tree_node describe_agent(agent_actor self) {
  auto& st = self->state;
  tree_node n;
  n.name = "agent";
  n.kind = child_kind::worker;
  n.last_exit = std::string{st.link ? "connected" : "disconnected"}
                + (st.draining ? ", draining" : "") + ", "
                + std::to_string(st.running.size()) + " running";
  for (auto& [job_id, r] : st.running) {
    tree_node job;
    job.name = "job " + job_id;
    job.kind = child_kind::worker;
    job.restart = restart_type::temporary;
    job.last_exit = "attempt " + std::to_string(r.attempt)
                    + (r.superseded ? " (superseded)" : "");
    n.children.push_back(std::move(job));
  }
  return n;
}

worker_figures figures_of(agent_actor self) {
  auto& st = self->state;
  auto& c = *st.counters;
  worker_figures f;
  for (const auto& [cls, n] : st.cfg.slots) {
    auto& k = f.classes[cls];
    k.slots = n;
    auto e = st.cfg.elastic_slots.find(cls);
    k.elastic_min = e != st.cfg.elastic_slots.end() ? e->second : 0;
    auto started = c.started_by_class.find(cls);
    if (started != c.started_by_class.end())
      k.started = started->second.load(std::memory_order_relaxed);
  }
  for (const auto& [addr, cls] : st.worker_class)
    ++f.classes[cls].busy;
  for (const auto& [cls, idle] : st.idle) {
    auto& busy = f.classes[cls].busy;
    busy -= std::min<uint32_t>(busy, static_cast<uint32_t>(idle.size()));
  }
  for (const auto& [job_id, r] : st.running)
    ++f.classes[r.resource_class].running;
  for (const auto& l : st.waiting)
    ++f.classes[resource_class_of(l.spec)].buffered;
  f.unsettled_outcomes = st.completions.size();
  f.connected = static_cast<bool>(st.link);
  f.draining = st.draining;
  if (st.last_answer)
    f.since_answer_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::steady_clock::now() - *st.last_answer)
                            .count();
  f.token_takes_waiting = st.tokens.waiting();
  auto joins = c.joins.load(std::memory_order_relaxed);
  f.leases_received = c.leases_received.load(std::memory_order_relaxed);
  f.attempts_finished = c.attempts_finished.load(std::memory_order_relaxed);
  f.reconnects = joins > 0 ? joins - 1 : 0;
  f.connection_failures = c.connection_failures.load(std::memory_order_relaxed);
  f.heartbeats_unanswered
      = c.heartbeats_unanswered.load(std::memory_order_relaxed);
  f.tokens_granted = c.tokens_granted.load(std::memory_order_relaxed);
  f.stale_leases_refused
      = c.stale_leases_refused.load(std::memory_order_relaxed);
  return f;
}

} // namespace drover::agent_detail
