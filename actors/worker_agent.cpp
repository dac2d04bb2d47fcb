#include "actors/worker_agent.hpp"

#include "actors/detail/agent_state.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>

namespace drover {

namespace {

using namespace agent_detail;

/// Whether `l` may run here: not if a lease of its partition at a newer
/// epoch came lately (its sender was deposed; its successor leases that
/// partition's jobs). A refused lease is not answered: it lapses at its
/// sender, whose writes the store refuses.
bool admit_epoch(agent_actor self, const lease& l) {
  auto& st = self->state;
  int64_t newest = 0;
  if (st.cfg.epochs->admit(partition_of_id(l.job_id), l.partition_epoch,
                           std::chrono::steady_clock::now(), newest))
    return true;
  refuse_stale(self, l, newest);
  return false;
}

worker_agent_local::behavior_type agent_impl(agent_actor self,
                                             worker_agent_config cfg) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.counters = st.cfg.counters
                    ? st.cfg.counters
                    : std::make_shared<worker_counters>(st.cfg.slots);
  if (!st.cfg.epochs)
    st.cfg.epochs = std::make_shared<partition_epochs>();
  if (!st.cfg.handovers)
    st.cfg.handovers = std::make_shared<handover_board>();
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if ((st.link && dm.source == st.link.address())
        || (st.endpoint && dm.source == st.endpoint.address())) {
      on_link_lost(self, self->system().render(dm.reason));
      return;
    }
    // A local worker died: its attempt ended with it.
    auto w = st.worker_ids.find(dm.source);
    if (w == st.worker_ids.end()) {
      handover_down(self, dm.source);
      return;
    }
    st.worker_ids.erase(w);
    st.worker_class.erase(dm.source);
    st.stuck.erase(dm.source);
    for (auto& [cls, idle] : st.idle)
      idle.erase(std::remove_if(idle.begin(), idle.end(),
                                [&](const local_worker_actor& a) {
                                  return a.address() == dm.source;
                                }),
                 idle.end());
    for (auto i = st.running.begin(); i != st.running.end(); ++i) {
      if (i->second.worker.address() != dm.source)
        continue;
      auto c = worker_lost(i->first, i->second.attempt);
      if (!pass_on_done(self, c))
        end_attempt(self, i, std::move(c));
      break;
    }
  });
  self->send(self, connect_now_atom::value);
  self->send(self, beat_atom::value);
  return {
      [self](lease_atom, lease_batch& batch) {
        auto& st = self->state;
        auto from = self->current_sender();
        if (!from) {
          // Leases come from a coordinator's node link, never anonymous
          // (such a message could also raise the partition epochs).
          log::warn("worker_agent", "anonymous leases: not taken",
                    {{"leases", batch.leases.size()}});
          return;
        }
        if (st.left_links.count(from->address()) > 0) {
          log::warn("worker_agent",
                    "leases from a coordinator this node left came after it "
                    "left: not taken (they lapse there and run elsewhere)",
                    {{"leases", batch.leases.size()}});
          return;
        }
        st.counters->leases_received.fetch_add(batch.leases.size(),
                                               std::memory_order_relaxed);
        for (auto& l : batch.leases) {
          if (!admit_epoch(self, l))
            continue;
          auto r = st.running.find(l.job_id);
          if (r != st.running.end()) {
            if (r->second.attempt >= l.attempt)
              continue; // a duplicate
            // The job came back with a newer attempt: the one still running
            // here is superseded (its lease lapsed while this node was
            // away). It is stopped; its worker stays taken until it is.
            caf::anon_send(r->second.worker, cancel_atom::value, l.job_id,
                           r->second.attempt);
            // A borrowed attempt's worker is another agent's: it stays
            // taken there.
            if (!r->second.borrowed)
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
             local_worker_actor& worker) {
        auto& st = self->state;
        if (st.worker_ids.emplace(worker.address(), worker_id).second)
          self->monitor(worker);
        st.worker_class[worker.address()] = cls;
        st.stuck.erase(worker.address()); // free again
        lent_worker_free(self, worker.address());
        st.idle[cls].push_back(std::move(worker));
        start_waiting(self);
      },
      [self](progress_atom, progress_update& u) {
        auto& st = self->state;
        if (pass_on_progress(self, u, false))
          return;
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
        if (i->second.lent) {
          pass_on_progress(self, u, true);
          return;
        }
        st.checkpoints[u.job_id] = std::move(u);
        maybe_report(self);
      },
      [self](take_atom, const std::string& job_id, const worker_actor& worker,
             uint32_t wanted) { return on_take(self, job_id, worker, wanted); },
      [self](done_atom, completion& c) {
        auto& st = self->state;
        if (pass_on_done(self, c))
          return;
        auto i = st.running.find(c.job_id);
        if (i != st.running.end() && i->second.attempt == c.attempt)
          end_attempt(self, i, std::move(c));
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
                  [done](caf::error& err) {
                    // Stopping anyway: the coordinator learns of the
                    // unacknowledged attempts when their leases lapse.
                    log::debug("worker_agent",
                               "the last heartbeat of a drain got no answer",
                               {{"error", describe(err)}});
                    done();
                  });
      },
      [self](describe_atom) { return describe_agent(self); },
      [self](stats_atom) { return figures_of(self); },
      [self](connect_now_atom) { connect(self); },
      [self](beat_atom) { beat(self); },
      [self](home_atom, uint64_t timer) {
        if (timer == self->state.probe_timer)
          probe_home(self);
      },
      [self](lent_atom, std::string& job_id, uint32_t attempt,
             attempt_owner_actor& owner, worker_home_actor& home) {
        on_lent(self, job_id, attempt, std::move(owner), std::move(home));
      },
      [self](lent_atom, std::string& job_id, uint32_t attempt) {
        lent_deadline(self, job_id, attempt);
      },
  };
}

} // namespace

worker_agent_local spawn_worker_agent(caf::actor_system& sys,
                                      worker_agent_config cfg) {
  return sys.spawn(agent_impl, std::move(cfg));
}

} // namespace drover