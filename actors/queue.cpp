#include "actors/queue.hpp"

#include "actors/detail/queue_state.hpp"

namespace drover {

namespace queue_detail {

namespace {

/// The admission tickets of one batch, given back together.
struct tickets_held {
  explicit tickets_held(self_ptr s) : self(s) {}
  void add(admission_control::ticket t) {
    held.push_back(t);
  }
  void settle() {
    for (auto& t : held)
      self->state.admission.settled(t);
    held.clear();
  }
  self_ptr self;
  std::vector<admission_control::ticket> held;
};

} // namespace

queue_impl_actor::behavior_type queue_impl(self_ptr self, queue_deps deps,
                                           queue_options opts) {
  auto& st = self->state;
  st.deps = std::move(deps);
  st.opts = std::move(opts);
  if (!st.opts.clock_ms)
    st.opts.clock_ms = system_clock_ms;
  auto seed = st.opts.seed != 0 ? st.opts.seed : std::random_device{}();
  st.rng.seed(seed);
  st.ids = job_id_generator{st.rng()};
  if (st.opts.owned_now)
    st.opts.partitions = st.opts.owned_now();
  st.partitions = partition_picker{st.opts.partitions, st.opts.partition_count};
  st.to_recover.assign(st.opts.partitions.begin(), st.opts.partitions.end());
  st.admission = admission_control{st.opts.admission};
  st.concurrency = concurrency_slots{st.opts.concurrency};
  st.flow = flow_control{st.opts.flow, flow_now(self)};
  share_rate_limits(self);
  {
    resource_amounts local;
    for (const auto& kv : st.opts.local_resources)
      local.push_back(kv);
    declare_pools(self, "", to_text(local));
  }
  st.stats.since_ms = st.opts.clock_ms();
  self->set_error_handler(
      [](caf::error& err) { log_failure("unexpected error message", err); });
  if (!st.deps.handlers->remote_types().empty()) {
    st.local_types = st.deps.handlers->types(); // sorted
    if (st.local_types.empty())
      st.local_types.emplace_back(); // "" is no job's type
  }
  self->monitor(st.deps.store);
  record_flow_changes(self); // each limiter's authority starts
  // Run-time settings first: recovered jobs must find the keys they name.
  load_flow(self);
  self->set_down_handler([self](caf::down_msg& dm) {
    auto& st = self->state;
    if (dm.source == st.deps.store.address()) {
      // Requests in flight may never be answered. The `jobs` supervisor
      // restarts the store, this queue and the workers together
      // (one_for_all); the new queue recovers from the store.
      log_failure(
          "the store stopped",
          make_error(errc::unavailable, self->system().render(dm.reason)));
      self->quit(dm.reason);
      return;
    }
    let_go_pools(self, dm.source); // a worker that died holds nothing
    auto w = st.workers.find(dm.source);
    if (w != st.workers.end()) {
      auto& idle = st.classes[w->second.resource_class].idle_workers;
      idle.erase(std::remove_if(idle.begin(), idle.end(),
                                [&](const worker_actor& a) {
                                  return a.address() == dm.source;
                                }),
                 idle.end());
      st.workers.erase(w);
      return;
    }
    auto j = st.supervisor_jobs.find(dm.source);
    if (j == st.supervisor_jobs.end())
      return;
    auto job_id = j->second;
    st.supervisor_jobs.erase(j);
    auto r = st.running.find(job_id);
    if (r == st.running.end())
      return; // concluded normally (finished_atom came first)
    if (r->second.job_supervisor.address() != dm.source)
      return; // an earlier supervisor of a job that runs again
    auto entry = r->second;
    st.running.erase(r);
    // Its supervisor is gone: the attempt is settled (resolve_orphan) or
    // left to the next start; the slot is free, a probe it was is not.
    release_slots(self, entry.slots);
    flow_outcome(self, entry, false, "supervisor_lost");
    if (dm.reason == caf::exit_reason::user_shutdown)
      return; // the node stops in order: the next start settles or adopts it
    resolve_orphan(self, job_id, std::move(entry), dm.reason);
  });
  return {
      [self](submit_atom, submit_request& req) -> caf::result<job_record> {
        auto& st = self->state;
        auto now = now_ms(self);
        auto spec = prepare_spec(req, *st.deps.handlers, st.opts.limits, now);
        if (!spec)
          return std::move(spec.error());
        if (auto err = check_flow_keys(self, *spec))
          return err;
        auto shape = hold_shape(st, *spec);
        if (!shape)
          return std::move(shape.error());
        auto partition = st.partitions.of(spec->tenant, spec->idempotency_key,
                                          spec->concurrency_key,
                                          st.partitions.next_keyless());
        if (auto err = check_owned(st, partition))
          return err;
        auto ticket = admit(self, *spec, partition);
        if (!ticket)
          return std::move(ticket.error());
        job_event ev;
        ev.job_id = st.ids.next(now, partition);
        ev.kind = event_kind::submitted;
        ev.at_ms = now;
        ev.spec = std::move(*spec);
        auto rp = self->make_response_promise<job_record>();
        auto id = ev.job_id;
        self->request(st.deps.store, store_timeout, submit_atom::value,
                      std::move(ev))
            .then(
                [self, rp, id, t = *ticket,
                 held = *shape](job_record& rec) mutable {
                  self->state.admission.settled(t);
                  // Another id means an idempotent duplicate: nothing to queue.
                  if (rec.job_id == id)
                    enqueue(self, rec);
                  held = nullptr; // its queue entry holds it now
                  rp.deliver(std::move(rec));
                },
                [self, rp, t = *ticket](caf::error& err) mutable {
                  self->state.admission.settled(t);
                  rp.deliver(std::move(err));
                });
        return rp;
      },
      [self](submit_atom, std::vector<submit_request>& reqs)
          -> caf::result<std::vector<job_record>> {
        auto& st = self->state;
        auto now = now_ms(self);
        // Answers in request order; refused items are filled in at once.
        auto answers = std::make_shared<std::vector<job_record>>(reqs.size());
        std::vector<size_t> slots; // answer index of each event sent
        std::vector<job_event> events;
        auto tickets = std::make_shared<tickets_held>(self);
        // The shapes of the items, held until they are queued.
        auto held = std::make_shared<std::vector<shape_ref>>();
        auto keyless = st.partitions.next_keyless();
        for (size_t i = 0; i < reqs.size(); ++i) {
          auto spec
              = prepare_spec(reqs[i], *st.deps.handlers, st.opts.limits, now);
          if (spec)
            if (auto err = check_flow_keys(self, *spec))
              spec = caf::expected<job_spec>{std::move(err)};
          if (spec) {
            auto shape = hold_shape(st, *spec);
            if (!shape)
              spec = caf::expected<job_spec>{std::move(shape.error())};
            else if (*shape)
              held->push_back(std::move(*shape));
          }
          auto partition
              = spec ? st.partitions.of(spec->tenant, spec->idempotency_key,
                                        spec->concurrency_key, keyless)
                     : 0;
          if (spec)
            if (auto err = check_owned(st, partition))
              spec = caf::expected<job_spec>{std::move(err)};
          auto ticket = spec ? admit(self, *spec, partition)
                             : caf::expected<admission_control::ticket>{
                                 std::move(spec.error())};
          if (!ticket) {
            auto& err = ticket.error();
            // The node's bounds refuse the whole batch: nothing is created
            // (a client retries it as one). A tenant's or a partition's cap,
            // or an invalid item, refuses that item.
            if (is(err, errc::overloaded)
                && st.admission.last_refusal()
                       == admission_control::scope::node) {
              tickets->settle();
              return std::move(err);
            }
            auto& a = (*answers)[i];
            a.error.code = code_text(err, "invalid_request");
            a.error.message = describe(err);
            if (err.context().match_elements<std::string>())
              a.error.message = err.context().get_as<std::string>(0);
            continue;
          }
          tickets->add(*ticket);
          job_event ev;
          ev.job_id = st.ids.next(now, partition);
          ev.kind = event_kind::submitted;
          ev.at_ms = now;
          ev.spec = std::move(*spec);
          slots.push_back(i);
          events.push_back(std::move(ev));
        }
        if (events.empty())
          return std::move(*answers);
        auto ids = std::make_shared<std::vector<std::string>>();
        for (auto& ev : events)
          ids->push_back(ev.job_id);
        auto rp = self->make_response_promise<std::vector<job_record>>();
        self->request(st.deps.store, store_timeout, submit_atom::value,
                      std::move(events))
            .then(
                [self, rp, answers, ids, slots, tickets,
                 held](std::vector<job_record>& recs) mutable {
                  tickets->settle();
                  for (size_t k = 0; k < recs.size() && k < slots.size(); ++k) {
                    // Another id means an idempotent duplicate: nothing to
                    // queue.
                    if (recs[k].job_id == (*ids)[k])
                      enqueue(self, recs[k]);
                    (*answers)[slots[k]] = std::move(recs[k]);
                  }
                  held->clear(); // their queue entries hold them now
                  rp.deliver(std::move(*answers));
                },
                [rp, tickets](caf::error& err) mutable {
                  tickets->settle();
                  rp.deliver(std::move(err));
                });
        return rp;
      },
      [self](cancel_atom, const std::string& job_id) -> caf::result<ok_atom> {
        return cancel_job(self, job_id, {});
      },
      [self](cancel_atom, const std::string& job_id,
             std::string& reason) -> caf::result<ok_atom> {
        return cancel_job(self, job_id, std::move(reason));
      },
      [self](redrive_atom, const std::string& job_id) -> caf::result<ok_atom> {
        return dlq_one(self, job_id, redrive_one);
      },
      [self](redrive_atom, all_atom) -> caf::result<uint32_t> {
        return dlq_all(self, redrive_one);
      },
      [self](purge_atom, const std::string& job_id) -> caf::result<ok_atom> {
        return dlq_one(self, job_id, purge_one);
      },
      [self](purge_atom, all_atom) -> caf::result<uint32_t> {
        return dlq_all(self, purge_one);
      },
      [self](stats_atom) -> queue_stats {
        auto& st = self->state;
        auto s = st.stats;
        auto now = now_ms(self);
        s.depth = {};
        s.oldest_age_ms = {};
        s.idle_workers = 0;
        for (auto& kv : st.classes) {
          s.idle_workers += kv.second.idle_workers.size();
          for (const auto& tq : kv.second.by_type)
            for (size_t i = 0; i < 3; ++i) {
              const auto& dq = tq.second[i];
              s.depth[i] += dq.size();
              if (!dq.empty()) {
                auto since = dq.oldest_key()
                             - static_cast<int64_t>(i) * aging_ms(self);
                s.oldest_age_ms[i] = std::max(s.oldest_age_ms[i], now - since);
              }
            }
        }
        for (const auto& [key, dq] : st.parked)
          for (const auto& pe : dq)
            ++s.depth[pe.prio]; // ready, held back by a concurrency limit
        for (const auto& [gate, dq] : st.flow_parked)
          for (const auto& pe : dq)
            ++s.depth[pe.prio]; // ready, held back by a limiter or breaker
        s.delayed = st.delayed.size();
        s.running = st.running.size();
        s.by_type = figures_by_type(self);
        s.admission_in_flight = st.admission.in_flight();
        s.admission_memory_bytes = st.admission.memory_bytes();
        s.admission_memory_limit_bytes = st.admission.limits().memory_bytes;
        s.admission_refused = st.admission.refused();
        s.by_partition = figures_by_partition(st);
        return s;
      },
      [self](nodes_atom, const job_spec& spec) -> std::string {
        auto& st = self->state;
        auto needs = pool_needs(spec.resources);
        if (!needs)
          return describe(needs.error());
        auto why = unserved_reason(st, resource_class_of(spec), spec.type,
                                   st.resources.shape_of(*needs));
        return why.empty() ? hold_reason(self, spec) : why;
      },
      [self](nodes_atom) -> std::string {
        // Ready jobs whose class and type no connected worker serves:
        // visible, not silently parked.
        auto& st = self->state;
        std::string out = "[";
        for (const auto& [cls, q] : st.classes)
          for (const auto& [lane_name, pq] : q.by_type) {
            size_t n = pq[0].size() + pq[1].size() + pq[2].size();
            auto type = type_of_lane(lane_name);
            if (n == 0 || served(st, cls, type, pq.shape))
              continue;
            out += (out.size() > 1 ? "," : "");
            out += "{\"resource_class\":" + json_quote(cls) + ",\"job_type\":"
                   + json_quote(type) + ",\"jobs\":" + std::to_string(n);
            if (pq.shape)
              out += ",\"resources\":" + json_quote(pq.shape->key);
            out += "}";
          }
        return out + "]";
      },
      [self](describe_atom) -> tree_node {
        auto& st = self->state;
        tree_node n;
        n.name = "queue";
        n.kind = child_kind::worker;
        auto now = now_ms(self);
        for (const auto& kv : st.running) {
          tree_node job;
          job.name = "job " + kv.first;
          job.kind = child_kind::worker;
          job.restart = restart_type::temporary;
          job.uptime_ms = now - kv.second.started_ms;
          n.children.push_back(std::move(job));
        }
        return n;
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             local_worker_actor& worker) {
        worker_ready(self, cls, worker_id, std::move(worker),
                     self->state.local_types);
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             worker_actor& worker) {
        // Given back by a job supervisor: a worker the queue knows.
        worker_ready(self, cls, worker_id, std::move(worker),
                     self->state.local_types);
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             worker_actor& worker, std::vector<std::string>& types,
             std::string& pools) {
        remote_slot_ready(self, cls, worker_id, worker, std::move(types),
                          pools);
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             worker_actor& worker, std::vector<std::string>& types,
             std::string& pools, bool) -> bool {
        return remote_slot_ready(self, cls, worker_id, worker, std::move(types),
                                 pools);
      },
      [self](let_go_atom, worker_actor& worker) {
        let_go_pools(self, worker.address());
      },
      [self](let_go_atom, std::string& job_id, uint32_t attempt,
             worker_actor& worker) {
        auto r = self->state.running.find(job_id);
        if (r != self->state.running.end() && r->second.worker == worker)
          r->second.movable = attempt;
      },
      [self](take_atom, const std::string& job_id, const worker_actor& worker,
             uint32_t wanted) -> caf::result<uint32_t, int64_t> {
        auto& st = self->state;
        auto r = st.running.find(job_id);
        bool runs_there = r != st.running.end() && r->second.worker == worker;
        if (!runs_there && (!st.recovered || !st.awaiting_adoption.empty()))
          // Perhaps an attempt this coordinator has yet to adopt.
          return make_error(errc::unavailable,
                            "the coordinator is recovering its jobs; ask "
                            "again");
        if (!runs_there)
          return make_error(errc::stale_attempt,
                            "job " + job_id
                                + " does not run on this worker (finished, "
                                  "superseded or unknown)");
        auto g = st.flow.take_tokens(r->second.flow, wanted, flow_now(self));
        if (!g)
          return std::move(g.error());
        return caf::result<uint32_t, int64_t>(g->granted, g->retry_ms);
      },
      [self](withdraw_atom, worker_actor& worker) {
        auto& st = self->state;
        auto w = st.workers.find(worker.address());
        if (w == st.workers.end())
          return false;
        auto& idle = st.classes[w->second.resource_class].idle_workers;
        auto i = std::find(idle.begin(), idle.end(), worker);
        if (i == idle.end())
          return false;
        idle.erase(i);
        return true;
      },
      [self](adopt_atom, std::string& job_id, uint32_t attempt,
             std::string& worker_id, worker_actor& slot, int64_t deadline_ms,
             bool wait_for_owner) -> caf::result<job_supervisor_actor> {
        auto rp = self->make_response_promise<job_supervisor_actor>();
        auto run = [self, rp, job_id, attempt, worker_id, slot, deadline_ms,
                    wait_for_owner]() mutable {
          adopt(self, rp, job_id, attempt, worker_id, slot, deadline_ms,
                wait_for_owner);
        };
        if (self->state.recovered)
          run();
        else
          self->state.after_recovery.push_back(std::move(run));
        return rp;
      },
      [self](adopt_atom, uint64_t generation) {
        // The grace is over: attempts nobody came back for are lost.
        auto& st = self->state;
        if (generation == st.adopt_timer_generation)
          st.adopt_timer_at = 0; // the armed timer: the next may be armed
        // Those whose grace is over (partitions taken later have theirs).
        auto now = flow_now(self);
        std::vector<job_record> waiting;
        for (auto d = st.adopt_due.begin(); d != st.adopt_due.end();) {
          if (d->second <= 0 || d->second > now) { // not yet, or not due
            ++d;
            continue;
          }
          auto a = st.awaiting_adoption.find(d->first);
          if (a != st.awaiting_adoption.end()) {
            waiting.push_back(std::move(a->second));
            st.awaiting_adoption.erase(a);
          }
          d = st.adopt_due.erase(d);
        }
        for (auto& rec : waiting) {
          release_slots(self, slot_keys_of(st, rec.spec));
          release_pools(self, node_of(rec.worker_id), shape_of(st, rec.spec));
          settle_interrupted(self, rec,
                             {"worker_lost",
                              "no worker reported attempt "
                                  + std::to_string(rec.attempt)
                                  + " within its lease after its coordinator "
                                    "restarted or changed",
                              true});
        }
        auto next = expire_waiting_adoptions(self, now);
        for (const auto& [job_id, due] : st.adopt_due)
          if (due > 0 && (next == 0 || due < next))
            next = due;
        if (next != 0)
          arm_adopt_timer(self, next);
      },
      [self](retry_atom, job_record& rec) {
        auto& st = self->state;
        ++st.stats.retried;
        enqueue(self, rec);
        // Its cancel was recorded while the attempt was ending (told to a
        // supervisor already concluding): the retry does not run.
        auto r = st.running.find(rec.job_id);
        if (r != st.running.end() && r->second.cancel_recorded)
          cancel_retry(self, rec.job_id);
      },
      [self](finished_atom, const std::string& job_id, job_status status,
             const std::string& code) {
        auto& st = self->state;
        auto r = st.running.find(job_id);
        auto sender = caf::actor_cast<caf::actor_addr>(self->current_sender());
        if (r == st.running.end()
            || r->second.job_supervisor.address() != sender)
          return; // not the supervisor that runs the job
        auto entry = std::move(r->second);
        st.running.erase(r);
        auto now = now_ms(self);
        st.stats.run_time.observe(now - entry.started_ms);
        auto& signals = st.type_counts[{entry.resource_class, entry.type}];
        if (status == job_status::completed) {
          ++signals.completed;
          signals.completions.add(flow_now(self));
        }
        release_slots(self, entry.slots);
        // An outcome the supervisor could not record says nothing about
        // the downstream (nor about how long attempts take): not counted.
        bool recorded = status == job_status::completed
                        || status == job_status::failed
                        || status == job_status::cancelled
                        || status == job_status::retrying;
        if (recorded)
          signals.run_time.observe(now - entry.started_ms);
        flow_outcome(self, entry, status == job_status::completed,
                     recorded ? code : std::string{"attempt_lost"});
        switch (status) {
          case job_status::completed:
            ++st.stats.completed;
            break;
          case job_status::failed:
            ++st.stats.failed;
            break;
          case job_status::cancelled:
            ++st.stats.cancelled;
            break;
          case job_status::retrying:
            break; // retry_atom came first
          default:
            // queued or processing: the supervisor could not record what
            // happened (the store failed it); find out from the store.
            reconcile_later(self, job_id, 0,
                            {"attempt_lost",
                             "the attempt's outcome could not be recorded",
                             true});
            break;
        }
      },
      [self](recover_atom) { recover(self); },
      [self](partitions_atom, std::vector<int32_t>& owned) {
        own_partitions(self, std::move(owned));
        return ok_atom::value;
      },
      [self](partitions_atom, get_atom) -> caf::result<std::string, int32_t> {
        // Text: it crosses nodes, and CAF carries strings as they are.
        const auto& parts = self->state.partitions;
        std::string list;
        for (auto p : parts.owned())
          list += (list.empty() ? "" : ",") + std::to_string(p);
        return {std::move(list), parts.count()};
      },
      [self](flow_load_atom) { load_flow(self); },
      [self](settings_atom) { follow_settings(self); },
      [self](reconcile_atom, const std::string& job_id, int64_t failures,
             std::string& code, std::string& message) {
        reconcile(self, job_id,
                  static_cast<uint32_t>(std::clamp<int64_t>(failures, 0, 64)),
                  {std::move(code), std::move(message), true});
      },
      [self](due_atom, uint64_t generation) {
        if (generation == self->state.timer_generation)
          on_due(self);
      },
      [self](flow_timer_atom, uint64_t generation) {
        if (generation == self->state.flow_generation)
          on_flow_timer(self);
      },
      [self](permit_atom, const std::string& key, uint64_t generation) {
        ask_permits(self, key, generation);
      },
      [self](flow_atom) -> std::string { return flow_json(self); },
      [self](flow_atom, const std::string& kind, const std::string& key,
             const std::string& spec) -> caf::result<std::string> {
        return set_flow(self, kind, key, spec);
      },
      [self](fence_atom) {
        auto& st = self->state;
        st.fence_check_armed = false;
        std::vector<std::string> classes;
        for (const auto& kv : st.classes)
          classes.push_back(kv.first);
        for (const auto& cls : classes)
          dispatch(self, cls);
      },
  };
}

} // namespace queue_detail

int64_t system_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count();
}

queue_actor spawn_queue(caf::actor_system& sys, queue_deps deps,
                        queue_options options) {
  // The private extension converts to its subset: no actor_cast.
  return sys.spawn(queue_detail::queue_impl, std::move(deps),
                   std::move(options));
}

} // namespace drover
