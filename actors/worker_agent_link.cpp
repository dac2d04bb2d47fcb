// The worker agent's connection (actors/worker_agent.hpp): connecting,
// the hello and join handshake, reconnecting with backoff and failing
// over to the next coordinator. See actors/detail/agent_state.hpp.

#include "actors/detail/agent_state.hpp"

#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/log.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/send.hpp>

#include <algorithm>

namespace drover::agent_detail {

namespace {

/// Reconnecting to the coordinator: 100 ms doubling, jittered, up to a
/// quarter of the lease TTL (so a worker is back well within its leases'
/// lifetime once the coordinator is) and at most 5 s.
backoff_schedule reconnect_schedule(std::chrono::milliseconds lease_ttl) {
  auto cap = std::clamp<std::chrono::milliseconds>(
      lease_ttl / 4, std::chrono::milliseconds{100},
      std::chrono::milliseconds{5000});
  return {std::chrono::milliseconds{100}, cap, 2.0, 0.5};
}

} // namespace

void hello(agent_actor self, uint64_t gen);

namespace {

/// A connection attempt failed: the next goes to the next coordinator —
/// unless this one is its first coordinator (--share-partitions), lost less
/// than half an attempt lease TTL ago. Its partitions cannot be taken by
/// another coordinator before their lease TTL anyway, and a coordinator a
/// supervisor restarts at once is back by then: its agents rejoin it and
/// it adopts their attempts. Before, an agent failed over at the first
/// refused connect (about 100 ms) and stayed there until its attempts
/// ended, so the restarted coordinator found none of its agents home and
/// the attempts in its partitions ran again.
void next_turn(agent_state& st) {
  if (st.cfg.home_probe.count() > 0 && st.home_lost_at
      && st.coordinator_turn % st.cfg.coordinators.size() == 0
      && std::chrono::steady_clock::now() - *st.home_lost_at
             < st.lease_ttl / 2) {
    if (!st.home_wait_told) {
      st.home_wait_told = true;
      log::info("worker_agent",
                "its first coordinator does not answer: trying it alone a "
                "while before failing over",
                {{"home", st.cfg.coordinators.front().text()},
                 {"for_ms", (st.lease_ttl / 2).count()}});
    }
    return;
  }
  ++st.coordinator_turn;
}

} // namespace

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

namespace {

/// The connection is given up (lost, or left to go home): no handshake,
/// report or heartbeat of it counts any more, and no leave is under way.
void forget_connection(agent_actor self) {
  auto& st = self->state;
  st.link = nullptr;
  st.endpoint = nullptr;
  st.leaving = false;
  st.leave_acknowledged = false;
  st.connecting = false;
  ++st.handshake;
  st.report_in_flight = false;
  st.beat_in_flight = false;
  st.sent.clear();
}

} // namespace

void on_link_lost(agent_actor self, const std::string& why) {
  auto& st = self->state;
  if (!st.link && !st.endpoint)
    return;
  log::warn("worker_agent",
            "lost the coordinator; attempts keep running, reconnecting",
            {{"reason", why}, {"running", st.running.size()}});
  // On its way home, it still holds this coordinator's attempts or
  // outcomes: it reconnects here (home could adopt none of them); it goes
  // home once nothing of this one's is held. A handshake in flight died
  // with its endpoint: the next begins at once rather than wait for its
  // request to time out (10 s, longer than the grace a new coordinator
  // gives running attempts to be re-reported).
  if (st.link && st.joined_index == 0) {
    st.home_lost_at = std::chrono::steady_clock::now();
    st.home_wait_told = false;
  }
  forget_connection(self);
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
    if (!r.superseded && (!r.lent || r.moving))
      reg.running.push_back(
          running_attempt{job_id, r.attempt, r.resource_class});
    else if (r.lent && !r.superseded && !r.borrowed)
      // Handed over by this coordinator and running on a worker of its
      // share: a coordinator that restarted meanwhile must not book that
      // slot. (A borrowed one lent on runs on another share's worker.)
      reg.lent.push_back(running_attempt{job_id, r.attempt, r.resource_class});
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
  next_turn(st);
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
            st.joined_index = st.coordinator_turn % st.cfg.coordinators.size();
            st.leaving = false;
            st.leave_acknowledged = false;
            if (st.joined_index != 0 && st.cfg.home_probe.count() > 0
                && !st.probing) {
              st.probing = true;
              arm_probe(self, st.cfg.home_probe);
            }
            log::announce("worker_agent", "joined the coordinator",
                          {{"coordinator", r.coordinator_id},
                           {"home", st.joined_index == 0},
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

void hello(agent_actor self, uint64_t gen) {
  auto& st = self->state;
  auto reg = registration(self);
  reg.running.clear();
  reg.lent.clear();
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
            next_turn(st);
            schedule_reconnect(self);
          });
}

namespace {

/// Joined to another coordinator than its first, and told to go home.
bool away(const agent_state& st) {
  return st.link && st.joined_index != 0 && st.cfg.home_probe.count() > 0
         && !st.draining;
}

/// Leaves the coordinator it failed over to (nothing runs or waits to
/// settle there) and joins its first one.
void go_home(agent_actor self) {
  auto& st = self->state;
  log::info("worker_agent",
            "left the coordinator it had failed over to; joining its "
            "first coordinator again",
            {{"home", st.cfg.coordinators.front().text()}});
  // A lease this link sends after all (its queue's dispatch crossed the
  // draining heartbeat) is not taken: it lapses there and runs elsewhere.
  if (st.left_links.size() >= 16)
    st.left_links.erase(st.left_links.begin());
  st.left_links.insert(st.link.address());
  self->demonitor(st.link.address());
  if (st.endpoint)
    self->demonitor(st.endpoint.address());
  forget_connection(self);
  st.coordinator_turn = 0;
  st.reconnect_failures = 0;
  connect(self);
}

} // namespace

void arm_probe(agent_actor self, std::chrono::milliseconds delay) {
  self->delayed_send(self, delay, home_atom::value, ++self->state.probe_timer);
}

void look_home_now(agent_actor self) {
  auto& st = self->state;
  auto now = std::chrono::steady_clock::now();
  // At most once a probe interval: a hand-over does not undo the backoff
  // for a home host that drops packets (connects queue in the middleman).
  if (!away(st) || st.leaving || now - st.looked_home < st.cfg.home_probe)
    return;
  st.looked_home = now;
  st.probe_failures = 0;
  st.probing = true;
  arm_probe(self, std::chrono::milliseconds{0});
}

void probe_home(agent_actor self) {
  auto& st = self->state;
  st.probing = false;
  if (!away(st))
    return;
  st.probing = true;
  auto mm = st.cfg.tls ? self->system().openssl_manager().actor_handle()
                       : self->system().middleman().actor_handle();
  const auto& home = st.cfg.coordinators.front();
  auto gen = st.handshake;
  // Every probe after a failed one waits about twice as long, up to 32
  // probe intervals or a minute (runtime/backoff.hpp, a little jitter so
  // that a fleet's agents do not probe in step): a home host that drops
  // packets makes each connect wait for the system's TCP timeout in the
  // middleman, which other connects queue behind.
  auto again = [self] {
    auto& st = self->state;
    backoff_schedule probes{
        st.cfg.home_probe,
        std::min<std::chrono::milliseconds>(st.cfg.home_probe * 32,
                                            std::chrono::minutes{1}),
        2.0, 0.2};
    arm_probe(self, probes.delay(st.probe_failures, jitter_draw()));
  };
  // An answer of a probe begun on another connection: probe again while
  // away (the join did not arm another: this one was in flight).
  auto stale = [self, gen, again] {
    auto& st = self->state;
    if (st.handshake == gen && away(st))
      return false;
    if (away(st))
      again();
    else
      st.probing = false;
    return true;
  };
  self->request(mm,
                std::max(st.cfg.home_probe, std::chrono::milliseconds{1000}),
                caf::connect_atom::value, home.host, home.port)
      .then(
          [self, stale, again](caf::node_id&, caf::strong_actor_ptr& ptr,
                               std::set<std::string>& ifs) {
            if (stale())
              return;
            auto& st = self->state;
            if (!ptr
                || !self->system().assignable(
                    ifs,
                    self->system().message_types<cluster_endpoint_actor>())) {
              ++st.probe_failures;
              again();
              return;
            }
            st.probe_failures = 0;
            again(); // keeps probing while it leaves: home may go again
            if (st.leaving)
              return;
            st.leaving = true;
            st.leave_acknowledged = false;
            log::info("worker_agent",
                      "its first coordinator is back: no new leases here; "
                      "going back once the attempts running here are "
                      "settled",
                      {{"home", st.cfg.coordinators.front().text()},
                       {"running", st.running.size()},
                       {"buffered", st.waiting.size()}});
            send_heartbeat(self);
          },
          [self, stale, again](caf::error& err) {
            if (stale())
              return;
            auto& st = self->state;
            ++st.probe_failures;
            // Counted and tried again with backoff (figures: probe
            // failures); the first of a run is worth a line.
            if (st.probe_failures == 1)
              log::debug("worker_agent",
                         "its first coordinator did not "
                         "answer a probe",
                         {{"error", describe(err)}});
            again();
            if (!st.leaving)
              return;
            // Home went again before this agent could go: take leases here
            // again (the link offers its free slots once more).
            st.leaving = false;
            st.leave_acknowledged = false;
            log::info("worker_agent",
                      "its first coordinator is gone again: taking leases "
                      "here again",
                      {{"home", st.cfg.coordinators.front().text()}});
            send_heartbeat(self);
          });
}

void check_left(agent_actor self) {
  auto& st = self->state;
  if (!st.leaving || !st.leave_acknowledged || !away(st))
    return;
  // What still reports to the coordinator it failed over to is offered to
  // the node's agent joined there, which takes its reports over (a move);
  // nothing waits for those attempts to end (hours, for a long job).
  move_held(self);
  // A lent attempt is not this coordinator's: claimed by another agent, its
  // reports pass through here to the claimant wherever this agent is
  // joined; unclaimed (handed over, its partition perhaps going home with
  // the agent), the agent offers it from home too (handover_board::offers).
  // The home join lists either as lent, so its slot stays taken there.
  // Before, each kept the agent away as long as it ran, and one handed over
  // to the coordinator the agent was going home to was stopped unclaimed.
  bool held_here
      = std::any_of(st.running.begin(), st.running.end(), [](const auto& r) {
          return !r.second.lent || r.second.moving;
        });
  if (!held_here && st.waiting.empty() && st.completions.empty())
    go_home(self);
}

} // namespace drover::agent_detail
