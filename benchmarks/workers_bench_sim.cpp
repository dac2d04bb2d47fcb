// drover_bench_workers' simulated worker nodes: actors that each speak
// the worker protocol as a node of their own (hello, join with the HMAC
// proof, heartbeats, an immediate `succeeded` report for every lease); see
// workers_bench.cpp for the whole benchmark.

#include "benchmarks/workers_bench.hpp"

#include "benchmarks/node_child.hpp"

#include "runtime/cluster_protocol.hpp"
#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"

#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>

namespace drover::bench::workers {

// -- the simulated worker nodes
// -----------------------------------------------------

namespace {

register_worker registration(sim_ptr self) {
  auto& st = self->state;
  register_worker reg;
  reg.node_id = st.node_id;
  reg.worker_id = st.node_id;
  reg.role = "worker";
  reg.protocol_min = cluster_protocol_min;
  reg.protocol_max = cluster_protocol_max;
  reg.capacity.push_back(resource_capacity{"cpu", st.slots});
  reg.job_types = {"sleep"};
  reg.prefetch = 0;
  for (auto& [job_id, attempt] : st.running)
    reg.running.push_back(running_attempt{job_id, attempt, "cpu"});
  return reg;
}

/// After a failed hello or join: again after 100 ms to 1 s (jittered).
void retry_hello(sim_ptr self) {
  std::uniform_int_distribution<int> d{100, 1000};
  self->delayed_send(self, std::chrono::milliseconds{d(self->state.rng)},
                     sim_hello_atom::value);
}

void apply_reply(sim_ptr self, const coordinator_reply& r) {
  auto& st = self->state;
  for (auto& s : r.settled)
    if (st.unacked.erase({s.job_id, s.attempt}) > 0)
      ++st.stats->settled;
  for (auto& s : r.superseded) {
    ++st.stats->superseded;
    st.unacked.erase({s.job_id, s.attempt});
    auto i = st.running.find(s.job_id);
    if (i != st.running.end() && i->second == s.attempt)
      st.running.erase(i);
    st.outbox.erase(std::remove_if(st.outbox.begin(), st.outbox.end(),
                                   [&](const completion& c) {
                                     return c.job_id == s.job_id
                                            && c.attempt == s.attempt;
                                   }),
                    st.outbox.end());
  }
}

void maybe_report(sim_ptr self) {
  auto& st = self->state;
  if (!st.link || st.report_in_flight || st.outbox.empty())
    return;
  completion_batch cb;
  cb.completions.swap(st.outbox);
  for (auto& c : cb.completions) {
    st.running.erase(c.job_id);
    st.unacked.emplace(c.job_id, c.attempt);
  }
  st.report_in_flight = true;
  ++st.stats->reports;
  st.stats->reported += cb.completions.size();
  auto sent = cb.completions;
  self->request(st.link, std::chrono::seconds{10}, report_atom::value,
                progress_batch{}, std::move(cb))
      .then(
          [self](coordinator_reply& r) {
            self->state.report_in_flight = false;
            apply_reply(self, r);
            maybe_report(self);
          },
          [self, sent](caf::error& err) {
            auto& st = self->state;
            st.report_in_flight = false;
            ++st.stats->report_errors;
            st.stats->error("report: " + describe(err));
            // Not reported after all: they go again (with the next
            // heartbeat's answer, as the real agent does).
            for (auto& c : sent) {
              st.unacked.erase({c.job_id, c.attempt});
              st.running[c.job_id] = c.attempt;
              st.outbox.push_back(c);
            }
          });
}

void send_heartbeat(sim_ptr self) {
  auto& st = self->state;
  if (!st.link)
    return;
  if (st.beat_in_flight) {
    ++st.stats->heartbeats_skipped;
    return;
  }
  heartbeat hb;
  hb.node_id = st.node_id;
  hb.at_ms = wall_ms();
  for (auto& [job_id, attempt] : st.running)
    hb.running.push_back(running_attempt{job_id, attempt, {}});
  for (auto& [job_id, attempt] : st.unacked)
    hb.unacknowledged.push_back(running_attempt{job_id, attempt, {}});
  st.beat_in_flight = true;
  ++st.stats->heartbeats;
  auto t0 = steady::now();
  int window = st.stats->window.load();
  self->request(st.link, st.lease_ttl, heartbeat_atom::value, std::move(hb))
      .then(
          [self, t0, window](coordinator_reply& r) {
            auto& st = self->state;
            st.beat_in_flight = false;
            if (window != 0) {
              auto us = seconds_since(t0) * 1e6;
              std::lock_guard<std::mutex> g{st.stats->mx};
              st.stats->beat_us[window].push_back(us);
            }
            apply_reply(self, r);
            maybe_report(self);
          },
          [self](caf::error& err) {
            auto& st = self->state;
            st.beat_in_flight = false;
            ++st.stats->heartbeat_errors;
            st.stats->error("heartbeat: " + describe(err));
          });
}

void join(sim_ptr self, const std::string& challenge,
          const std::string& secret) {
  auto& st = self->state;
  auto reg = registration(self);
  reg.proof = join_proof(secret, reg.role, reg.node_id, challenge);
  self->request(st.endpoint, std::chrono::seconds{10}, join_atom::value, reg,
                worker_agent_actor{self})
      .then(
          [self](coordinator_reply& r, node_link_actor& link) {
            auto& st = self->state;
            bool first = !st.link;
            st.link = link;
            st.heartbeat_interval = std::chrono::milliseconds{
                std::max<int64_t>(10, r.heartbeat_interval_ms)};
            st.lease_ttl = std::chrono::milliseconds{
                std::max<int64_t>(100, r.lease_ttl_ms)};
            if (first) {
              ++st.stats->joined;
              std::lock_guard<std::mutex> g{st.stats->mx};
              st.stats->join_ms.push_back(seconds_since(st.hello_at) * 1e3);
            }
            apply_reply(self, r);
            if (!st.beating) {
              // Independent nodes: the first beat at a random point of
              // the interval.
              st.beating = true;
              std::uniform_int_distribution<int64_t> d{
                  1, st.heartbeat_interval.count()};
              self->delayed_send(self, std::chrono::milliseconds{d(st.rng)},
                                 sim_beat_atom::value);
            }
            maybe_report(self);
          },
          [self](caf::error& err) {
            auto& st = self->state;
            ++st.stats->join_errors;
            st.stats->error("join: " + describe(err));
            if (is(err, errc::forbidden)) {
              ++st.stats->refused;
              return;
            }
            retry_hello(self);
          });
}

void hello(sim_ptr self, const std::string& secret) {
  auto& st = self->state;
  if (st.first_hello) {
    st.first_hello = false;
    st.hello_at = steady::now();
  }
  auto reg = registration(self);
  reg.running.clear();
  self->request(st.endpoint, std::chrono::seconds{10}, hello_atom::value, reg)
      .then([self,
             secret](coordinator_reply& r) { join(self, r.challenge, secret); },
            [self](caf::error& err) {
              auto& st = self->state;
              ++st.stats->hello_errors;
              st.stats->error("hello: " + describe(err));
              if (is(err, errc::forbidden)) {
                ++st.stats->refused;
                return;
              }
              retry_hello(self);
            });
}

} // namespace

sim_agent_actor::behavior_type sim_agent(sim_ptr self, std::string node_id,
                                         uint32_t slots,
                                         cluster_endpoint_actor endpoint,
                                         std::shared_ptr<sim_stats> stats,
                                         std::string secret) {
  auto& st = self->state;
  st.node_id = std::move(node_id);
  st.slots = slots;
  st.endpoint = std::move(endpoint);
  st.stats = std::move(stats);
  self->send(self, sim_hello_atom::value);
  return {
      [self](lease_atom, lease_batch& b) {
        auto& st = self->state;
        ++st.stats->lease_batches;
        st.stats->leases += b.leases.size();
        for (auto& l : b.leases) {
          auto r = st.running.find(l.job_id);
          if ((r != st.running.end() && r->second >= l.attempt)
              || st.unacked.count({l.job_id, l.attempt}) > 0) {
            ++st.stats->duplicate_leases;
            continue;
          }
          st.running[l.job_id] = l.attempt;
          completion c;
          c.job_id = l.job_id;
          c.attempt = l.attempt;
          c.outcome = completion_outcome::succeeded;
          st.outbox.push_back(std::move(c));
        }
        maybe_report(self);
      },
      [](cancel_atom, std::string&, uint32_t) {
        // Every attempt has already ended when a cancel could arrive.
      },
      [self](abandon_atom, std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        auto i = st.running.find(job_id);
        if (i != st.running.end() && i->second == attempt)
          st.running.erase(i);
      },
      [self, secret](sim_hello_atom) { hello(self, secret); },
      [self](sim_beat_atom) {
        send_heartbeat(self);
        self->delayed_send(self, self->state.heartbeat_interval,
                           sim_beat_atom::value);
      },
  };
}

} // namespace drover::bench::workers
