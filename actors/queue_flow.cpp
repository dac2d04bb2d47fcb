// The queue's gates: concurrency keys, rate limits and circuit breakers, and
// the pools attempts give back. See actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

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
                  && !holds_permit(st, keys.key[i], pe.entry, i);
    if (!st.recovered || queued
        || !take_slot(self, keys.key[i], keys.limit[i], pe.entry, i)) {
      note_parked(st, keys.key[i], pe);
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

} // namespace drover::queue_detail
