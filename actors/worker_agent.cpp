#include "actors/worker_agent.hpp"

#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/log.hpp"
#include "runtime/submit.hpp"
#include "runtime/token_relay.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <deque>
#include <optional>
#include <random>

namespace drover {

namespace {

using connect_now_atom = agent_timers::connect_atom;
using agent_timers::beat_atom;
using agent_timers::deadline_atom;
using agent_timers::force_atom;

/// Reconnecting to the coordinator: 100 ms doubling, jittered, up to a
/// quarter of the lease TTL (so a worker is back well within its leases'
/// lifetime once the coordinator is) and at most 5 s.
backoff_schedule reconnect_schedule(std::chrono::milliseconds lease_ttl) {
  auto cap = std::clamp<std::chrono::milliseconds>(
      lease_ttl / 4, std::chrono::milliseconds{100},
      std::chrono::milliseconds{5000});
  return {std::chrono::milliseconds{100}, cap, 2.0, 0.5};
}

struct run_info {
  uint32_t attempt = 0;
  std::string resource_class;
  caf::actor worker;
  bool superseded = false;
  /// The job's rate-limit key ("" = none): what its takes draw on.
  std::string rate_key;
};

using attempt_key = std::pair<std::string, uint32_t>;

struct agent_state {
  worker_agent_config cfg;
  std::map<std::string, std::deque<caf::actor>> idle;
  std::map<caf::actor_addr, std::string> worker_ids;
  /// The slot class of each worker that said it is ready (for figures:
  /// a known worker that is not idle is busy).
  std::map<caf::actor_addr, std::string> worker_class;
  std::map<std::string, run_info> running;
  std::deque<lease> waiting;
  // outbox
  std::map<std::string, progress_update> progress;
  /// Newest checkpoint per job (only the last one matters for a resume).
  std::map<std::string, progress_update> checkpoints;
  std::map<attempt_key, completion> completions;
  /// The slot class of each outcome in the outbox (listed in a join, so
  /// that a restarted coordinator can adopt the attempt and take it).
  std::map<attempt_key, std::string> completion_class;
  /// Abandoned attempts whose worker is still busy (a handler that ignores
  /// its cancel): listed in heartbeats so their slots stay taken until the
  /// worker is free again.
  std::map<caf::actor_addr, running_attempt> stuck;
  std::set<attempt_key> sent;
  bool report_in_flight = false;
  bool beat_in_flight = false;
  // connection
  cluster_endpoint_actor endpoint;
  node_link_actor link;
  bool connecting = false;
  /// Counts handshakes (connect, hello, join); an answer of an older one
  /// (its coordinator went down mid-handshake and a new one began) is
  /// ignored.
  uint64_t handshake = 0;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds lease_ttl{2000};
  /// Failed connection attempts in a row.
  uint32_t reconnect_failures = 0;
  /// Index (modulo their number) of the coordinator the next connection
  /// attempt goes to: moves on after a failed attempt.
  size_t coordinator_turn = 0;
  std::minstd_rand rng{std::random_device{}()};
  bool draining = false;
  bool drained = false;
  std::shared_ptr<worker_counters> counters;
  /// When the coordinator last answered a heartbeat or the join.
  std::optional<std::chrono::steady_clock::time_point> last_answer;
  /// The node protocol of the connection (2: tokens mid-attempt).
  uint32_t protocol = 0;
  token_relay tokens;

  static inline const char* name = "drover.worker_agent";
};

using agent_actor = worker_agent_local::stateful_pointer<agent_state>;

void connect(agent_actor self);
void maybe_report(agent_actor self);

void schedule_reconnect(agent_actor self) {
  auto& st = self->state;
  std::uniform_real_distribution<double> u{0.0, 1.0};
  auto delay = reconnect_schedule(st.lease_ttl)
                   .delay(st.reconnect_failures, u(st.rng));
  if (st.reconnect_failures < 64)
    ++st.reconnect_failures;
  self->delayed_send(self, delay, connect_now_atom::value);
}

void fatal(agent_actor self, const std::string& why) {
  log::error("worker_agent", "the coordinator refused this node",
             {{"reason", why}});
  if (self->state.cfg.on_fatal)
    self->state.cfg.on_fatal(why);
}

void check_drained(agent_actor self) {
  auto& st = self->state;
  if (!st.draining || st.drained || !st.running.empty() || !st.waiting.empty()
      || !st.completions.empty())
    return;
  st.drained = true;
  log::info("worker_agent", "drained: every attempt finished and settled");
  if (st.cfg.on_drained)
    st.cfg.on_drained();
}

/// Runs waiting leases on idle workers of their class.
void start_waiting(agent_actor self) {
  auto& st = self->state;
  for (auto i = st.waiting.begin(); i != st.waiting.end();) {
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
    caf::anon_send(worker, run_atom::value, std::move(*i),
                   caf::actor_cast<caf::actor>(self));
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
  st.stuck[i->second.worker.address()]
      = running_attempt{i->first, i->second.attempt, {}};
  st.running.erase(i);
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

/// Applies the coordinator's settled and superseded lists.
void apply_reply(agent_actor self, coordinator_reply& r) {
  auto& st = self->state;
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
        || i->second.superseded)
      continue;
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

void on_link_lost(agent_actor self, const std::string& why) {
  auto& st = self->state;
  if (!st.link && !st.endpoint)
    return;
  log::warn("worker_agent",
            "lost the coordinator; attempts keep running, reconnecting",
            {{"reason", why}, {"running", st.running.size()}});
  st.link = nullptr;
  st.endpoint = nullptr;
  // A handshake in flight died with its endpoint: begin the next at once
  // rather than wait for its request to time out (10 s, longer than the
  // grace a new coordinator gives running attempts to be re-reported).
  st.connecting = false;
  ++st.handshake;
  st.report_in_flight = false;
  st.beat_in_flight = false;
  st.sent.clear();
  schedule_reconnect(self);
}

register_worker registration(agent_actor self) {
  auto& st = self->state;
  register_worker reg;
  reg.node_id = st.cfg.node_id;
  reg.worker_id = st.cfg.node_id;
  reg.role = "worker";
  reg.protocol_min = st.cfg.protocol_min;
  reg.protocol_max = st.cfg.protocol_max;
  for (auto& [cls, n] : st.cfg.slots)
    reg.capacity.push_back(resource_capacity{cls, n});
  reg.job_types = st.cfg.job_types;
  reg.prefetch = st.cfg.prefetch;
  for (const auto& [pool, amount] : st.cfg.resources)
    reg.resources.push_back(resource_request{pool, amount});
  for (const auto& [cls, n] : st.cfg.elastic_slots)
    reg.elastic.push_back(resource_capacity{cls, n});
  if (!reg.elastic.empty())
    reg.elastic_idle_ms = static_cast<uint32_t>(st.cfg.elastic_idle.count());
  reg.draining = st.draining;
  for (auto& [job_id, r] : st.running)
    if (!r.superseded)
      reg.running.push_back(
          running_attempt{job_id, r.attempt, r.resource_class});
  // Buffered leases are held too: their leases must survive a reconnect.
  for (auto& l : st.waiting)
    reg.running.push_back(
        running_attempt{l.job_id, l.attempt, resource_class_of(l.spec)});
  // So are finished attempts whose outcome is not settled yet: a restarted
  // coordinator adopts them and takes the outcome.
  for (auto& [key, cls] : st.completion_class)
    reg.running.push_back(running_attempt{key.first, key.second, cls});
  return reg;
}

/// The hello or the join failed: a refusal is final, anything else is
/// tried again after the reconnect backoff.
void handshake_failed(agent_actor self, const char* step,
                      const caf::error& err) {
  auto& st = self->state;
  st.connecting = false;
  if (is(err, errc::forbidden))
    return fatal(self, describe(err));
  st.counters->connection_failures.fetch_add(1, std::memory_order_relaxed);
  log::warn("worker_agent", std::string{step} + " failed; retrying",
            {{"error", describe(err)}});
  st.endpoint = nullptr;
  ++st.coordinator_turn;
  schedule_reconnect(self);
}

void join(agent_actor self, const std::string& challenge, uint64_t gen) {
  auto& st = self->state;
  auto reg = registration(self);
  if (!st.cfg.join_secret.empty())
    reg.proof
        = join_proof(st.cfg.join_secret, reg.role, reg.node_id, challenge);
  self->request(st.endpoint, std::chrono::seconds{10}, join_atom::value, reg,
                worker_agent_actor{self})
      .then(
          [self, gen](coordinator_reply& r, node_link_actor& link) {
            auto& st = self->state;
            if (st.handshake != gen)
              return;
            st.connecting = false;
            st.reconnect_failures = 0;
            st.link = link;
            st.last_answer = std::chrono::steady_clock::now();
            st.counters->joins.fetch_add(1, std::memory_order_relaxed);
            self->monitor(link);
            st.heartbeat_interval = std::chrono::milliseconds{
                std::max<int64_t>(10, r.heartbeat_interval_ms)};
            st.lease_ttl = std::chrono::milliseconds{r.lease_ttl_ms};
            st.protocol = r.protocol;
            log::announce("worker_agent", "joined the coordinator",
                          {{"coordinator", r.coordinator_id},
                           {"protocol", r.protocol},
                           {"running", st.running.size()}});
            apply_reply(self, r);
            maybe_report(self);
          },
          [self, gen](caf::error& err) {
            if (self->state.handshake == gen)
              handshake_failed(self, "join", err);
          });
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
                                       const caf::actor& worker,
                                       uint32_t wanted) {
  auto& st = self->state;
  auto i = st.running.find(job_id);
  if (i == st.running.end() || i->second.worker != worker
      || i->second.superseded)
    return make_error(errc::stale_attempt,
                      "job " + job_id + " does not run on this worker");
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

void hello(agent_actor self, uint64_t gen) {
  auto& st = self->state;
  auto reg = registration(self);
  reg.running.clear();
  self->request(st.endpoint, std::chrono::seconds{10}, hello_atom::value, reg)
      .then(
          [self, gen](coordinator_reply& r) {
            if (self->state.handshake == gen)
              join(self, r.challenge, gen);
          },
          [self, gen](caf::error& err) {
            if (self->state.handshake == gen)
              handshake_failed(self, "hello", err);
          });
}

void connect(agent_actor self) {
  auto& st = self->state;
  if (st.connecting || st.link)
    return;
  st.connecting = true;
  auto gen = ++st.handshake;
  auto mm = st.cfg.tls ? self->system().openssl_manager().actor_handle()
                       : self->system().middleman().actor_handle();
  const auto& target
      = st.cfg.coordinators[st.coordinator_turn % st.cfg.coordinators.size()];
  self->request(mm, std::chrono::seconds{10}, caf::connect_atom::value,
                target.host, target.port)
      .then(
          [self, target, gen](caf::node_id&, caf::strong_actor_ptr& ptr,
                              std::set<std::string>& ifs) {
            auto& st = self->state;
            if (st.handshake != gen)
              return;
            auto expected
                = self->system().message_types<cluster_endpoint_actor>();
            if (!ptr || !self->system().assignable(ifs, expected)) {
              st.connecting = false;
              return fatal(self, "the peer at " + target.text()
                                     + " is not a Drover coordinator's cluster "
                                       "port (its interface differs)");
            }
            // What remote_actor<cluster_endpoint_actor> does, without
            // blocking this actor: the interface was checked above.
            st.endpoint = caf::actor_cast<cluster_endpoint_actor>(ptr);
            self->monitor(st.endpoint);
            hello(self, gen);
          },
          [self, target, gen](caf::error& err) {
            auto& st = self->state;
            if (st.handshake != gen)
              return;
            st.connecting = false;
            st.counters->connection_failures.fetch_add(
                1, std::memory_order_relaxed);
            if (st.reconnect_failures == 0)
              log::warn("worker_agent",
                        "cannot reach the coordinator; retrying with backoff",
                        {{"coordinator", target.text()},
                         {"error", self->system().render(err)}});
            ++st.coordinator_turn;
            schedule_reconnect(self);
          });
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
  self->request(st.link, std::chrono::seconds{10}, report_atom::value,
                std::move(pb), std::move(cb))
      .then(
          [self](coordinator_reply& r) {
            self->state.report_in_flight = false;
            apply_reply(self, r);
            maybe_report(self);
          },
          [self, keys](caf::error& err) {
            auto& st = self->state;
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
    hb.draining = st.draining;
    for (auto& [job_id, r] : st.running)
      hb.running.push_back(running_attempt{job_id, r.attempt, {}});
    for (auto& l : st.waiting)
      hb.running.push_back(running_attempt{l.job_id, l.attempt, {}});
    for (auto& [addr, ra] : st.stuck)
      hb.running.push_back(ra);
    for (auto& [key, c] : st.completions)
      hb.unacknowledged.push_back(running_attempt{key.first, key.second, {}});
    st.beat_in_flight = true;
    self->request(st.link, st.lease_ttl, heartbeat_atom::value, std::move(hb))
        .then(
            [self](coordinator_reply& r) {
              self->state.beat_in_flight = false;
              self->state.last_answer = std::chrono::steady_clock::now();
              apply_reply(self, r);
              maybe_report(self); // outcomes whose report failed
            },
            [self](caf::error& err) {
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
  return f;
}

worker_agent_local::behavior_type agent_impl(agent_actor self,
                                             worker_agent_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.counters = st.cfg.counters
                    ? st.cfg.counters
                    : std::make_shared<worker_counters>(st.cfg.slots);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if ((st.link && dm.source == st.link.address())
        || (st.endpoint && dm.source == st.endpoint.address())) {
      on_link_lost(self, self->system().render(dm.reason));
      return;
    }
    // A local worker died: its attempt ended with it.
    auto w = st.worker_ids.find(dm.source);
    if (w == st.worker_ids.end())
      return;
    st.worker_ids.erase(w);
    st.worker_class.erase(dm.source);
    st.stuck.erase(dm.source);
    for (auto& [cls, idle] : st.idle)
      idle.erase(std::remove_if(idle.begin(), idle.end(),
                                [&](const caf::actor& a) {
                                  return a.address() == dm.source;
                                }),
                 idle.end());
    for (auto i = st.running.begin(); i != st.running.end(); ++i) {
      if (i->second.worker.address() != dm.source)
        continue;
      completion c;
      c.job_id = i->first;
      c.attempt = i->second.attempt;
      c.outcome = completion_outcome::failed_retryable;
      c.error = {"worker_lost", "the worker running the attempt died", true};
      st.counters->attempts_finished.fetch_add(1, std::memory_order_relaxed);
      bool superseded = i->second.superseded;
      st.running.erase(i);
      if (!superseded)
        st.completions[{c.job_id, c.attempt}] = std::move(c);
      maybe_report(self);
      break;
    }
  });
  self->send(self, connect_now_atom::value);
  self->send(self, beat_atom::value);
  return {
      [self](lease_atom, lease_batch& batch) {
        auto& st = self->state;
        st.counters->leases_received.fetch_add(batch.leases.size(),
                                               std::memory_order_relaxed);
        for (auto& l : batch.leases) {
          auto r = st.running.find(l.job_id);
          if (r != st.running.end()) {
            if (r->second.attempt >= l.attempt)
              continue; // a duplicate
            // The job came back with a newer attempt: the one still running
            // here is superseded (its lease lapsed while this node was
            // away). It is stopped; its worker stays taken until it is.
            caf::anon_send(r->second.worker, cancel_atom::value, l.job_id,
                           r->second.attempt);
            st.stuck[r->second.worker.address()]
                = running_attempt{l.job_id, r->second.attempt, {}};
            st.running.erase(r);
          }
          st.waiting.push_back(std::move(l));
        }
        start_waiting(self);
      },
      [self](cancel_atom, std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        if (take_waiting(self, job_id, attempt)) {
          // Never started: it ends cancelled at once.
          completion c;
          c.job_id = job_id;
          c.attempt = attempt;
          c.outcome = completion_outcome::cancelled;
          st.completions[{job_id, attempt}] = std::move(c);
          maybe_report(self);
          return;
        }
        auto i = st.running.find(job_id);
        if (i != st.running.end() && i->second.attempt == attempt)
          caf::anon_send(i->second.worker, cancel_atom::value, job_id, attempt);
      },
      [self](abandon_atom, std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        if (take_waiting(self, job_id, attempt)) {
          check_drained(self);
          return;
        }
        auto i = st.running.find(job_id);
        if (i == st.running.end() || i->second.attempt != attempt)
          return;
        abandon_running(self, i);
      },
      [self](force_atom, std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        auto i = st.running.find(job_id);
        if (i == st.running.end() || i->second.attempt != attempt
            || !i->second.superseded)
          return;
        abandon_running(self, i);
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             caf::actor& worker) {
        auto& st = self->state;
        if (st.worker_ids.emplace(worker.address(), worker_id).second)
          self->monitor(worker);
        st.worker_class[worker.address()] = cls;
        st.stuck.erase(worker.address()); // free again
        st.idle[cls].push_back(std::move(worker));
        start_waiting(self);
      },
      [self](progress_atom, progress_update& u) {
        auto& st = self->state;
        auto i = st.running.find(u.job_id);
        if (i == st.running.end() || i->second.attempt != u.attempt
            || i->second.superseded)
          return;
        st.progress[u.job_id] = std::move(u);
        maybe_report(self);
      },
      [self](checkpoint_atom, std::string& job_id, uint32_t attempt,
             std::string& bytes) {
        auto& st = self->state;
        auto i = st.running.find(job_id);
        if (i == st.running.end() || i->second.attempt != attempt
            || i->second.superseded)
          return;
        progress_update u;
        u.job_id = std::move(job_id);
        u.attempt = attempt;
        u.checkpoint = std::move(bytes);
        u.at_ms = st.cfg.clock_ms();
        st.checkpoints[u.job_id] = std::move(u);
        maybe_report(self);
      },
      [self](take_atom, const std::string& job_id, const caf::actor& worker,
             uint32_t wanted) { return on_take(self, job_id, worker, wanted); },
      [self](done_atom, completion& c) {
        auto& st = self->state;
        auto i = st.running.find(c.job_id);
        if (i == st.running.end() || i->second.attempt != c.attempt)
          return;
        bool superseded = i->second.superseded;
        auto cls = i->second.resource_class;
        st.running.erase(i);
        st.counters->attempts_finished.fetch_add(1, std::memory_order_relaxed);
        if (!superseded) {
          st.progress.erase(c.job_id); // the outcome says more
          st.checkpoints.erase(c.job_id);
          st.completion_class[{c.job_id, c.attempt}] = cls;
          st.completions[{c.job_id, c.attempt}] = std::move(c);
          maybe_report(self);
        }
        check_drained(self);
      },
      [self](stop_atom) {
        auto& st = self->state;
        if (st.draining)
          return;
        st.draining = true;
        log::info("worker_agent",
                  "draining: no new leases; running attempts finish",
                  {{"running", st.running.size()},
                   {"deadline_ms", st.cfg.drain_timeout.count()}});
        self->delayed_send(self, st.cfg.drain_timeout, deadline_atom::value);
        send_heartbeat(self); // tell the coordinator now (if none in flight)
        check_drained(self);
      },
      [self](deadline_atom) {
        auto& st = self->state;
        if (st.drained)
          return;
        log::warn(
            "worker_agent",
            "drain deadline reached: handing the remaining attempts "
            "back (they run elsewhere, not counted as failures)",
            {{"running", st.running.size()}, {"buffered", st.waiting.size()}});
        // Handed back, not failed: their outcomes (cancelled) are never
        // reported; the last heartbeat no longer lists them, and the
        // coordinator takes the leases back at once.
        for (auto& [job_id, r] : st.running) {
          r.superseded = true;
          caf::anon_send(r.worker, cancel_atom::value, job_id, r.attempt);
        }
        st.waiting.clear();
        st.drained = true;
        auto done = [self] {
          if (self->state.cfg.on_drained)
            self->state.cfg.on_drained();
        };
        if (!st.link) {
          done();
          return;
        }
        heartbeat hb;
        hb.node_id = st.cfg.node_id;
        hb.at_ms = st.cfg.clock_ms();
        hb.draining = true;
        for (auto& [key, c] : st.completions)
          hb.unacknowledged.push_back(
              running_attempt{key.first, key.second, {}});
        self->request(st.link, std::chrono::seconds{2}, heartbeat_atom::value,
                      std::move(hb))
            .then([done](coordinator_reply&) { done(); },
                  [done](caf::error&) { done(); });
      },
      [self](describe_atom) { return describe_agent(self); },
      [self](stats_atom) { return figures_of(self); },
      [self](connect_now_atom) { connect(self); },
      [self](beat_atom) { beat(self); },
  };
}

} // namespace

worker_agent_local spawn_worker_agent(caf::actor_system& sys,
                                      worker_agent_config cfg) {
  return sys.spawn(agent_impl, std::move(cfg));
}

} // namespace drover
