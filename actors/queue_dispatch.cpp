// The queue's dispatch: ready jobs into lanes, lanes to idle workers (the
// workers and their nodes' pools: actors/queue_dispatch_workers.cpp). See
// actors/detail/queue_state.hpp.

#include "actors/detail/queue_state.hpp"

namespace drover::queue_detail {

/// The fair-share weight of tenant `t` (--tenant-weight; default 1).
double weight_of(const queue_state& st, uint32_t t) {
  if (st.opts.tenant_weights.empty())
    return 1.0;
  auto i = st.opts.tenant_weights.find(st.admission.tenant_name(t));
  return i == st.opts.tenant_weights.end() ? 1.0 : i->second;
}

/// `ready_since_ms` defaults to now; recovery passes the original time so
/// recovered jobs keep their place.
/// Remembers a job that enters the queue while recovery runs, other than
/// from a recovered page (see queue_state::entered_early).
void note_entry(queue_state& st, const std::string& job_id) {
  if (!st.recovered && !st.queuing_page)
    st.entered_early.insert(job_id);
}

/// The estimated bytes of a waiting entry beyond admission_control::
/// entry_bytes: a key of its own.
uint64_t extra_bytes(const own_key_ref& own) {
  return own ? admission_control::keyed_entry_bytes(own->key.size()) : 0;
}

/// A waiting entry of `job_id` left the queue (admission counts).
void left_queue(queue_state& st, uint32_t tenant, const std::string& job_id,
                const own_key_ref& own) {
  st.admission.left(tenant, partition_of_id(job_id), extra_bytes(own));
}

void push_ready(self_ptr self, std::string job_id, priority prio,
                const std::string& cls, const std::string& type,
                uint32_t tenant, uint32_t flow, const shape_ref& shape,
                own_key_ref own, int64_t ready_since_ms) {
  auto& st = self->state;
  if (!owns(st, job_id))
    return; // handed over meanwhile: its new owner recovers it
  if (st.cancelling.count(job_id) > 0)
    return; // its cancel's write decides (a failed one reconciles it)
  note_entry(st, job_id);
  st.admission.entered(tenant, partition_of_id(job_id), extra_bytes(own));
  auto& q = st.classes[cls];
  auto i = prio_index(prio);
  auto now = now_ms(self);
  auto since = ready_since_ms > 0 ? ready_since_ms : now;
  if (ready_since_ms == 0) { // recovered jobs are not new arrivals
    // At most 10,000 kinds (the figures' bound): a client inventing classes
    // cannot grow the map without end.
    std::pair<std::string, std::string> k{cls, type};
    auto signals = st.type_counts.find(k);
    if (signals == st.type_counts.end() && st.type_counts.size() < 10000)
      signals
          = st.type_counts.emplace(std::move(k), queue_state::type_signals{})
                .first;
    if (signals != st.type_counts.end())
      signals->second.arrivals.add(flow_now(self));
  }
  // Keys are non-decreasing within a tenant's FIFO except for recovered
  // jobs, which go where their age puts them.
  auto& l = q.by_type[lane_key(type, shape)];
  l.shape = shape;
  l[i].insert(ready_entry{std::move(job_id),
                          since + static_cast<int64_t>(i) * aging_ms(self),
                          tenant, flow, std::move(own)},
              weight_of(st, tenant));
  dispatch(self, cls);
}

/// What a job draws from pools: its resources after its slot class
/// (checked at submit; null = nothing).
shape_ref shape_of(queue_state& st, const job_spec& spec) {
  if (spec.resources.size() < 2)
    return nullptr;
  auto needs = pool_needs(spec.resources);
  return needs ? st.resources.shape_of(*needs) : nullptr;
}

/// `rec`, queued, into the ready queue of its class and type.
void push_ready(self_ptr self, const job_record& rec, int64_t ready_since_ms) {
  auto& st = self->state;
  push_ready(self, rec.job_id, rec.spec.prio, resource_class_of(rec.spec),
             rec.spec.type, st.admission.tenant(rec.spec.tenant),
             flow_of(st, rec.spec), shape_of(st, rec.spec),
             own_key_for(rec.spec), ready_since_ms);
}

/// Calls `visit(key, lane)` for the lanes of the job types `types`
/// (sorted; empty = every type).
template <class F>
void for_lanes(class_queues& q, const std::vector<std::string>& types,
               F&& visit) {
  if (types.empty()) {
    for (auto& kv : q.by_type)
      visit(kv.first, kv.second);
    return;
  }
  for (auto& t : types)
    for (auto i = q.by_type.lower_bound(t);
         i != q.by_type.end()
         && (i->first == t
             || (i->first.size() > t.size() && i->first[t.size()] == '\0'
                 && i->first.compare(0, t.size(), t) == 0));
         ++i)
      visit(i->first, i->second);
}

/// Picks, for an idle worker of node `node` running the job types `types`,
/// the ready entry with the smallest key (see the aging rule) that fits
/// the node's free pools; `lane_out` names its lane. The oldest entry that
/// could ever fit the node but does not now reserves what it lacks: no
/// younger entry drawing from those pools is picked (runtime/resources.hpp).
bool pop_next(const resource_ledger& pools, class_queues& q,
              const std::vector<std::string>& types, const std::string& node,
              ready_entry& out, size_t& prio_out,
              const std::string*& lane_out) {
  ready_queue* best_dq = nullptr;
  const lane* best_lane = nullptr;
  size_t best = 0;
  for_lanes(q, types, [&](const std::string& key, lane& l) {
    for (size_t i = 0; i < 3; ++i) {
      auto& dq = l[i];
      if (!dq.empty()
          && (best_dq == nullptr || dq.front().key < best_dq->front().key)) {
        best_dq = &dq;
        best = i;
        lane_out = &key;
        best_lane = &l;
      }
    }
  });
  if (best_dq == nullptr)
    return false;
  if (best_lane->shape && !pools.fits_now(node, best_lane->shape)) {
    // The oldest draws from pools and does not fit now: the candidates (the
    // heads of every lane), oldest first.
    struct candidate {
      int64_t key;
      ready_queue* dq;
      size_t prio;
      const std::string* lane_key;
      const shape_ref* shape;
    };
    std::vector<candidate> heads;
    for_lanes(q, types, [&](const std::string& key, lane& l) {
      for (size_t i = 0; i < 3; ++i)
        if (!l[i].empty())
          heads.push_back({l[i].front().key, &l[i], i, &key, &l.shape});
    });
    std::stable_sort(
        heads.begin(), heads.end(),
        [](const candidate& x, const candidate& y) { return x.key < y.key; });
    std::vector<std::string> reserved;
    best_dq = nullptr;
    for (const auto& c : heads) {
      const auto& shape = *c.shape;
      bool blocked = false;
      if (shape)
        for (const auto& need : shape->needs)
          blocked = blocked
                    || std::find(reserved.begin(), reserved.end(), need.first)
                           != reserved.end();
      if (!blocked && pools.fits_now(node, shape)) {
        best_dq = c.dq;
        best = c.prio;
        lane_out = c.lane_key;
        break;
      }
      if (shape && pools.fits_ever(node, shape))
        for (auto& name : pools.short_of(node, shape))
          reserved.push_back(std::move(name));
    }
    if (best_dq == nullptr)
      return false;
  }
  out = best_dq->pop_front();
  prio_out = best;
  return true;
}

/// Puts a parked job back into its ready queue, where its age puts it;
/// adds its class to `classes` (to dispatch afterwards).
void back_to_ready(queue_state& st, parked_entry pe,
                   std::vector<std::string>& classes) {
  auto weight = weight_of(st, pe.entry.tenant);
  auto& l = st.classes[pe.resource_class].by_type[lane_key(pe.type, pe.shape)];
  l.shape = pe.shape;
  l[pe.prio].insert(std::move(pe.entry), weight);
  if (std::find(classes.begin(), classes.end(), pe.resource_class)
      == classes.end())
    classes.push_back(pe.resource_class);
}

/// Hands the free slots of `key` to the jobs parked behind it, oldest
/// first: each goes on to the next key it needs, or back to its ready
/// queue where its age puts it, holding its slots, so that no newer job of
/// the key takes them first.
void wake_parked(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto p = st.parked.find(key);
  if (p == st.parked.end())
    return;
  // Stays valid while take_slots parks jobs behind other keys (an
  // unordered_map keeps references to its elements on insertion).
  auto& dq = p->second;
  std::vector<std::string> classes;
  std::vector<std::pair<slot_keys, size_t>> to_free;
  bool flow_moved = false;
  // A type's key across coordinators: the jobs granted a permit go, in
  // order, past those refused one (who wait for the next grant).
  bool permits = needs_permit(st, key);
  bool refused = false;
  // Granted jobs not met yet: once none is left, the rest of the line is
  // refused ones, not walked (a line of thousands waiting for permits was
  // walked whole at every wake: most of a limited drain's CPU).
  const permit_line* grants = nullptr;
  if (permits)
    if (auto l = st.permits.find(key); l != st.permits.end())
      grants = &l->second;
  size_t to_meet = grants != nullptr ? grants->granted.size() : 0;
  size_t at = 0;
  while (at < dq.size()) {
    auto& head = dq[at];
    if (permits && !holds_permit(st, key, head.entry, head.entry.holds)) {
      refused = true;
      if (to_meet == 0)
        break;
      ++at;
      continue;
    }
    // (One that holds a permit kept in its entry is not one of them.)
    if (to_meet > 0 && grants->granted.count(head.entry.job_id) > 0)
      --to_meet;
    auto keys = slot_keys_of(st, head.type, head.entry);
    if (head.entry.flow != 0) {
      // Its rate limit or breaker would hold it: it waits there instead,
      // without its slots, and the next job of the key is considered.
      if (auto wait = flow_gate(self, head.entry)) {
        auto pe = std::move(head);
        dq.erase(dq.begin() + static_cast<std::ptrdiff_t>(at));
        keep_permit(st, key, pe.entry, pe.entry.holds);
        to_free.emplace_back(keys, pe.entry.holds);
        pe.entry.holds = 0;
        park_at_gate(st, wait->gate, std::move(pe));
        flow_moved = true;
        continue;
      }
    }
    auto i = head.entry.holds; // it waits behind keys.key[i] == key
    if (i >= keys.size || !take_slot(self, key, keys.limit[i], head.entry, i))
      break;
    auto pe = std::move(head);
    dq.erase(dq.begin() + static_cast<std::ptrdiff_t>(at));
    ++pe.entry.holds;
    if (take_slots(self, pe, keys))
      back_to_ready(st, std::move(pe), classes);
  }
  if (refused)
    want_permits(self, key);
  if (dq.empty())
    st.parked.erase(key);
  // Slots given back only now: their release wakes other keys' jobs.
  for (const auto& [keys, held] : to_free)
    release_slots(self, keys, held);
  if (flow_moved)
    rearm_flow(self);
  for (const auto& cls : classes)
    dispatch(self, cls);
}

/// Admission of one submission (runtime/admission.hpp). Refusals are
/// logged at most once per 10 s: an overload must not flood the log.
caf::expected<admission_control::ticket>
admit(self_ptr self, const job_spec& spec, int32_t partition) {
  auto& st = self->state;
  auto t = st.admission.admit(spec, partition);
  if (!t) {
    auto now = now_ms(self);
    if (now - st.refusal_logged_ms >= 10000) {
      st.refusal_logged_ms = now;
      log::warn("queue", "admission: refusing submissions",
                {{"reason", describe(t.error())},
                 {"refused_so_far", st.admission.refused()},
                 {"waiting", st.admission.waiting()},
                 {"in_flight", st.admission.in_flight()}});
    }
  }
  return t;
}

/// A job drawing from pools in amounts no held job does, while
/// max_live_shapes others are held: refused (runtime/resources.hpp).
/// Otherwise its shape, for the submission to hold until the job is queued
/// (so that submissions in flight count too); null = it draws nothing.
caf::expected<shape_ref> hold_shape(queue_state& st, const job_spec& spec) {
  if (spec.resources.size() < 2)
    return shape_ref{};
  auto needs = pool_needs(spec.resources);
  if (!needs)
    return shape_ref{};
  if (!st.resources.admits(*needs))
    return make_error(errc::rate_limited,
                      "the queue holds jobs of "
                          + std::to_string(max_live_shapes)
                          + " different resource amounts; jobs needing one "
                            "of those amounts are accepted, others once "
                            "some have run");
  return st.resources.shape_of(*needs);
}

/// Spawns the job supervisor of `job_id` on `worker`; `adopt_attempt` != 0
/// takes over that running attempt instead of starting one.
queued_job_actor start_supervisor(self_ptr self, const std::string& job_id,
                                  const worker_actor& worker,
                                  const std::string& worker_id,
                                  uint32_t adopt_attempt) {
  auto& st = self->state;
  job_supervisor_config cfg;
  cfg.job_id = job_id;
  cfg.worker = worker;
  cfg.worker_id = worker_id;
  // Its view of the queue is a subset of the queue's private extension.
  cfg.queue = self;
  cfg.store = st.deps.store;
  cfg.publisher = st.deps.publisher;
  cfg.handlers = st.deps.handlers;
  cfg.progress_persist_interval = st.opts.progress_persist_interval;
  cfg.clock_ms = st.opts.clock_ms;
  cfg.seed = st.rng();
  cfg.adopt_attempt = adopt_attempt;
  return spawn_job_supervisor(self->system(), std::move(cfg));
}

/// Whether the coordinator may hand out work now (self-fencing); if not,
/// a re-check of every class is armed.
bool may_dispatch(self_ptr self) {
  auto& st = self->state;
  if (!st.opts.may_dispatch)
    return true;
  if (st.opts.may_dispatch()) {
    if (st.fenced) {
      st.fenced = false;
      log::info("queue", "dispatching again: the partition leases were "
                         "renewed");
    }
    return true;
  }
  if (!st.fenced) {
    st.fenced = true;
    log::warn("queue", "dispatch held: the partition leases were not renewed "
                       "in time, another coordinator may take them over");
  }
  if (!st.fence_check_armed) {
    st.fence_check_armed = true;
    self->delayed_send(self, std::chrono::milliseconds{100}, fence_atom::value);
  }
  return false;
}

void dispatch_class(self_ptr self, const std::string& cls);

/// Hands ready jobs of class `cls` to its idle workers. Not re-entrant: a
/// call made while a dispatch runs (a slot freed, a gate woken during it)
/// is done by the outermost call when the current class is through, so a
/// cascade of wake-ups never deepens the stack.
void dispatch(self_ptr self, const std::string& cls) {
  auto& st = self->state;
  if (st.dispatching) {
    st.dispatch_pending.insert(cls);
    return;
  }
  st.dispatching = true;
  dispatch_class(self, cls);
  while (!st.dispatch_pending.empty()) {
    auto next = *st.dispatch_pending.begin();
    st.dispatch_pending.erase(st.dispatch_pending.begin());
    dispatch_class(self, next);
  }
  st.dispatching = false;
}

void dispatch_class(self_ptr self, const std::string& cls) {
  auto& st = self->state;
  if (!may_dispatch(self))
    return;
  auto qi = st.classes.find(cls);
  if (qi == st.classes.end())
    return;
  auto& q = qi->second;
  static const std::vector<std::string> any_type;
  std::vector<std::pair<slot_keys, size_t>> slots_to_free;
  bool flow_touched = false;
  // Passes over the idle workers: each takes the best job of the types it
  // runs, or stays idle. Workers of one node running the same types that
  // found nothing are not asked twice in a pass (with many lanes of
  // resource amounts, each ask sorts them). Another pass follows while one
  // took jobs and another was left idle with lanes of amounts about: a job
  // that left the lanes may have held a reservation.
  static const std::string local_node;
  std::vector<std::pair<const std::string*, const std::vector<std::string>*>>
      found_nothing;
  bool progressed = false;
  bool skipped = false;
  for (size_t w = 0;;) {
    if (w >= q.idle_workers.size()) {
      bool shaped
          = std::any_of(q.by_type.begin(), q.by_type.end(), [](const auto& kv) {
              return kv.second.shape != nullptr;
            });
      if (!(progressed && skipped && shaped))
        break;
      w = 0;
      progressed = skipped = false;
      found_nothing.clear();
      continue;
    }
    auto wi = st.workers.find(q.idle_workers[w].address());
    const auto& types = wi != st.workers.end() ? wi->second.types : any_type;
    const auto& node = wi != st.workers.end() ? wi->second.node : local_node;
    ready_entry entry;
    size_t prio = 0;
    const std::string* lane_name = nullptr;
    bool known = std::any_of(
        found_nothing.begin(), found_nothing.end(),
        [&](const auto& f) { return *f.first == node && *f.second == types; });
    if (known
        || !pop_next(st.resources, q, types, node, entry, prio, lane_name)) {
      if (!known)
        found_nothing.emplace_back(&node, &types);
      skipped = true;
      ++w;
      continue;
    }
    progressed = true;
    auto li = q.by_type.find(*lane_name);
    auto type = type_of_lane(li->first);
    auto shape = li->second.shape;
    if (shape && li->second[0].empty() && li->second[1].empty()
        && li->second[2].empty())
      q.by_type.erase(li); // lanes of shapes come and go with their jobs
    bool duplicate = st.running.count(entry.job_id) > 0;
    auto keys = slot_keys_of(st, type, entry);
    bool woken = entry.woken_gate != 0;
    if (entry.flow != 0) {
      flow_touched = true;
      left_gate(self, entry); // whatever happens next, it left the ready queue
    }
    if (entry.flow != 0 && !duplicate) {
      // A rate limit without a token or a breaker that is not closed, or
      // jobs already waiting at its gate (it goes behind them, unless it was
      // woken from there): it waits behind that gate, in order, without a
      // worker, and without slots of its concurrency keys (given to the
      // next jobs of the keys).
      auto wait = flow_gate(self, entry);
      if (!wait && !woken) {
        wait = st.flow.queued_gate(entry.flow, entry.rate_taken,
                                   [&st](const std::string& g) {
                                     return st.flow_parked.count(g) > 0;
                                   });
        if (wait)
          keep_tokens_before(self, entry, *wait);
      }
      if (wait) {
        slots_to_free.emplace_back(keys, entry.holds);
        entry.holds = 0;
        park_at_gate(st, wait->gate,
                     {std::move(entry), cls, type, prio, shape});
        continue;
      }
    }
    if (!duplicate && entry.holds < keys.size) {
      // A slot of a concurrency key not free, or recovery has not yet
      // counted every attempt that runs: it waits, in order, without a
      // worker.
      parked_entry pe{std::move(entry), cls, type, prio, shape};
      if (!take_slots(self, pe, keys))
        continue;
      entry = std::move(pe.entry);
    }
    left_queue(st, entry.tenant, entry.job_id, entry.own);
    if (duplicate) {
      // Its slots given back after this pass. A second entry for a job
      // that runs (recovery raced its submit, or a reconcile raced its
      // timer): its supervisor owns it. A second supervisor would be
      // refused by the store anyway, but would take the first one's place
      // in `running`.
      slots_to_free.emplace_back(keys, entry.holds);
      continue;
    }
    auto worker = std::move(q.idle_workers[w]);
    q.idle_workers.erase(q.idle_workers.begin()
                         + static_cast<std::ptrdiff_t>(w));
    auto worker_id = wi != st.workers.end() ? wi->second.worker_id : "worker";
    auto js = start_supervisor(self, entry.job_id, worker, worker_id, 0);
    self->monitor(js);
    st.supervisor_jobs.emplace(js.address(), entry.job_id);
    uint64_t probe = 0;
    if (entry.flow != 0)
      probe = st.flow.take(entry.flow, flow_now(self), entry.rate_taken);
    auto now = now_ms(self);
    st.stats.start_latency.observe(
        now - (entry.key - static_cast<int64_t>(prio) * aging_ms(self)));
    ++st.type_counts[{cls, type}].dispatched;
    hold_pools(self, worker, node, shape);
    st.running.emplace(entry.job_id,
                       running_entry{js, worker, cls, now, keys, entry.flow,
                                     probe, type, false, worker_id});
    ++st.stats.dispatched[prio];
  }
  for (const auto& [keys, held] : slots_to_free)
    release_slots(self, keys, held);
  if (flow_touched) {
    // Jobs parked behind a gate look again when it may open.
    rearm_flow(self);
    record_flow_changes(self);
  }
}

} // namespace drover::queue_detail
