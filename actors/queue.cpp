#include "actors/queue.hpp"

#include "actors/detail/ready_queue.hpp"
#include "actors/job_supervisor.hpp"
#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/resources.hpp"
#include "runtime/retry.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <unordered_map>
#include <unordered_set>

namespace drover {

namespace {

using due_atom = caf::atom_constant<caf::atom("q_due")>;
using reconcile_atom = caf::atom_constant<caf::atom("q_recon")>;
using fence_atom = caf::atom_constant<caf::atom("q_fence")>;
using flow_timer_atom = caf::atom_constant<caf::atom("q_flow")>;

// Store requests carry no timeout: the store answers every request (its
// I/O has its own deadline) and the queue monitors the store for the one
// case that leaves requests unanswered, the store's death (see
// actors/job_supervisor.cpp). One clock entry per request was the
// largest part of CAF's clock-thread cost in a drain.
constexpr auto store_timeout = caf::infinite;

/// Backoff of reconcile() and of recovery while the store can't answer.
const backoff_schedule reconcile_backoff{
    std::chrono::milliseconds{100}, std::chrono::milliseconds{5000}, 2.0, 0.5};

using detail::ready_entry;
using detail::ready_queue;

/// Ready jobs by priority, each shared fairly between tenants.
using priority_queues = std::array<ready_queue, 3>;

/// The ready jobs of one job type and one resource shape (what they draw
/// from the pools of the node that runs them, runtime/resources.hpp).
struct lane : priority_queues {
  shape_ref shape;
};

/// A lane's key: the job type, then for jobs that draw from pools a NUL and
/// the shape's text (a type holds no NUL: a type's lanes sort together).
std::string lane_key(const std::string& type, const shape_ref& shape) {
  return shape ? type + '\0' + shape->key : type;
}

std::string type_of_lane(const std::string& key) {
  return key.substr(0, key.find('\0'));
}

/// One resource class: ready jobs by lane (a worker node may run only some
/// types and have only some resources), and its idle workers.
struct class_queues {
  std::map<std::string, lane> by_type;
  std::deque<caf::actor> idle_workers;
};

/// The node of a worker: remote slots are "node/class-i", local workers
/// have no '/' (node "").
std::string node_of(const std::string& worker_id) {
  auto slash = worker_id.find('/');
  return slash == std::string::npos ? std::string{}
                                    : worker_id.substr(0, slash);
}

/// A scheduled job or a retry waiting for its time.
struct delayed_entry {
  int64_t due_ms;
  std::string job_id;
  std::string resource_class;
  priority prio;
  std::string type;
  /// Its tenant (admission_control::tenant).
  uint32_t tenant = 0;
  /// Its rate-limit and breaker keys (flow_control::intern).
  uint32_t flow = 0;
  /// What it draws from pools (null = nothing).
  shape_ref shape;

  bool operator<(const delayed_entry& other) const {
    return std::tie(due_ms, job_id) < std::tie(other.due_ms, other.job_id);
  }
};

struct running_entry {
  caf::actor job_supervisor;
  caf::actor worker;
  std::string resource_class;
  int64_t started_ms;
  /// The concurrency key whose slot it holds ("" = none).
  std::string concurrency_key;
  /// Its rate-limit and breaker keys, and whether it runs as a probe of a
  /// half-open breaker.
  uint32_t flow = 0;
  uint64_t probe = 0;
  /// Its job type (figures per type).
  std::string type;
  /// What it holds of the pools of its worker's node (null = nothing).
  shape_ref shape;
  std::string node;
};

/// A ready job held back by its concurrency key (runtime/concurrency.hpp):
/// it waits behind the key, in order, until an attempt of the key ends.
struct parked_entry {
  ready_entry entry;
  std::string resource_class;
  std::string type;
  size_t prio;
  shape_ref shape;
};

struct queue_state {
  queue_deps deps;
  queue_options opts;
  std::map<std::string, class_queues> classes;
  std::set<delayed_entry> delayed;
  /// Due time the timer is armed for (0 = none) and its guard.
  int64_t armed_due_ms = 0;
  uint64_t timer_generation = 0;
  std::unordered_map<std::string, running_entry> running;
  /// Job supervisor address -> job id, to resolve a crashed one.
  std::map<caf::actor_addr, std::string> supervisor_jobs;
  struct worker_info {
    std::string resource_class;
    std::string worker_id;
    /// Job types it runs, sorted; empty = every type.
    std::vector<std::string> types;
    /// Its node (node_of).
    std::string node;
  };
  /// Attempts remote workers ran when this coordinator started: adopted
  /// when their worker comes back (adopt_atom), settled as lost after
  /// opts.adopt_grace.
  std::map<std::string, job_record> awaiting_adoption;
  bool recovered = false;
  /// A dispatch runs; classes to dispatch once it is through.
  bool dispatching = false;
  std::set<std::string> dispatch_pending;
  /// Recovery reads the store's live jobs a page at a time: the last job id
  /// of the pages queued so far ("" = none yet), where a retry resumes.
  std::string recovered_up_to;
  /// While a page is queued (its jobs are not "entered early").
  bool queuing_page = false;
  /// Jobs that entered the queue by another way (a submit, a DLQ retry)
  /// while recovery still ran: a later page may hold them too (the store
  /// committed them before it read the page) and skips them.
  std::unordered_set<std::string> entered_early;
  /// Self-fencing (queue_options::may_dispatch): a re-check is armed, and
  /// whether dispatch is held (logged once per hold).
  bool fence_check_armed = false;
  bool fenced = false;
  /// Counts of the recovery so far, logged when it ends.
  size_t recovered_jobs = 0;
  size_t recovered_interrupted = 0;
  /// Adoption requests that came before recovery finished.
  std::vector<std::function<void()>> after_recovery;
  /// Workers we monitor.
  std::map<caf::actor_addr, worker_info> workers;
  queue_stats stats;
  /// Attempts dispatched and jobs completed per (resource class, job
  /// type) since the queue started.
  std::map<std::pair<std::string, std::string>, std::pair<uint64_t, uint64_t>>
      type_counts;
  /// Entries of `delayed` per (resource class, job type): kept as they
  /// come and go, so that the figures need not walk the timer's set.
  std::map<std::pair<std::string, std::string>, uint64_t> delayed_by_type;
  std::mt19937_64 rng;
  job_id_generator ids{1};
  partition_picker partitions;
  /// What may be submitted (runtime/admission.hpp): counts every waiting
  /// entry and every submission in flight to the store.
  admission_control admission;
  /// Concurrency limits: slots per key, and the ready jobs parked behind a
  /// key without a free slot (they still count as waiting).
  concurrency_slots concurrency;
  std::unordered_map<std::string, std::deque<parked_entry>> parked;
  /// The worker nodes' resource pools and what attempts hold of them, and
  /// the text each node last declared.
  resource_ledger resources;
  std::map<std::string, std::string> declared_pools;
  /// Rate limiters and circuit breakers, and the ready jobs parked behind
  /// one of them (by flow_wait::gate; they still count as waiting). The
  /// flow timer is armed for the earliest time a gate may open (0 = none).
  flow_control flow;
  std::map<std::string, std::deque<parked_entry>> flow_parked;
  int64_t flow_armed_ms = 0;
  uint64_t flow_generation = 0;
  /// When a refusal was last logged (Unix ms).
  int64_t refusal_logged_ms = 0;
  /// What a local worker runs (worker_info::types): every type, unless
  /// the handlers declare remote types; then the types with a function.
  std::vector<std::string> local_types;
  /// Backoff of the recovery retries.
  backoff_counter recover_backoff{reconcile_backoff};

  static inline const char* name = "drover.queue";
};

using self_ptr = caf::stateful_actor<queue_state>*;

int64_t now_ms(self_ptr self) {
  return self->state.opts.clock_ms();
}

int64_t aging_ms(self_ptr self) {
  return self->state.opts.aging_interval.count();
}

size_t prio_index(priority p) {
  auto i = static_cast<size_t>(p);
  return i < 3 ? i : 2;
}

void log_failure(const std::string& what, const caf::error& err,
                 std::string_view job_id = {},
                 log::level lv = log::level::error) {
  log::write(lv, "queue", job_id, what, {{"error", describe(err)}});
}

/// A jitter draw from the queue's seeded generator.
double draw(self_ptr self) {
  std::uniform_real_distribution<double> u{0.0, 1.0};
  return u(self->state.rng);
}

void dispatch(self_ptr self, const std::string& cls);
void arm_flow_timer(self_ptr self, int64_t at_ms);
void record_flow_changes(self_ptr self);
int64_t flow_now(self_ptr self);
void rearm_flow(self_ptr self);
void park_at_gate(queue_state& st, const std::string& gate, parked_entry pe);

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

/// A waiting entry of `job_id` left the queue (admission counts).
void left_queue(queue_state& st, uint32_t tenant, const std::string& job_id) {
  st.admission.left(tenant, partition_of_id(job_id));
}

void push_ready(self_ptr self, std::string job_id, priority prio,
                const std::string& cls, const std::string& type,
                uint32_t tenant, uint32_t flow, const shape_ref& shape,
                int64_t ready_since_ms = 0) {
  auto& st = self->state;
  note_entry(st, job_id);
  st.admission.entered(tenant, partition_of_id(job_id));
  auto& q = st.classes[cls];
  auto i = prio_index(prio);
  auto since = ready_since_ms > 0 ? ready_since_ms : now_ms(self);
  // Keys are non-decreasing within a tenant's FIFO except for recovered
  // jobs, which go where their age puts them.
  auto& l = q.by_type[lane_key(type, shape)];
  l.shape = shape;
  l[i].insert(ready_entry{std::move(job_id),
                          since + static_cast<int64_t>(i) * aging_ms(self),
                          tenant, flow},
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
void push_ready(self_ptr self, const job_record& rec,
                int64_t ready_since_ms = 0) {
  auto& st = self->state;
  push_ready(self, rec.job_id, rec.spec.prio, resource_class_of(rec.spec),
             rec.spec.type, st.admission.tenant(rec.spec.tenant),
             st.flow.intern(rec.spec.rate_limit_key, rec.spec.breaker_key),
             shape_of(st, rec.spec), ready_since_ms);
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
/// first: each goes back to its ready queue where its age puts it, holding
/// its slot, so that no newer job of the key takes it first.
void wake_parked(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto p = st.parked.find(key);
  std::vector<std::string> classes;
  bool flow_moved = false;
  while (p != st.parked.end() && !p->second.empty()) {
    auto& head = p->second.front();
    if (head.entry.flow != 0) {
      // Its rate limit or breaker would hold it: it waits there instead,
      // without the slot, and the next job of the key is considered.
      if (auto wait = st.flow.gate(head.entry.flow, flow_now(self))) {
        auto pe = std::move(head);
        p->second.pop_front();
        park_at_gate(st, wait->gate, std::move(pe));
        flow_moved = true;
        continue;
      }
    }
    if (!st.concurrency.take(key))
      break;
    auto pe = std::move(head);
    p->second.pop_front();
    pe.entry.holds_slot = true;
    back_to_ready(st, std::move(pe), classes);
  }
  if (p != st.parked.end() && p->second.empty())
    st.parked.erase(p);
  if (flow_moved)
    rearm_flow(self);
  for (const auto& cls : classes)
    dispatch(self, cls);
}

/// A slot of `key` is free: an attempt ended (its outcome committed, or it
/// was given up as lost), or a woken job left the queue without running.
void release_slot(self_ptr self, const std::string& key) {
  if (key.empty())
    return;
  self->state.concurrency.release(key);
  wake_parked(self, key);
}

/// An attempt that drew `shape` from the pools of `node` ended (its outcome
/// recorded, or given up): what waited for them may fit now, on any class
/// of that node.
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
    self->request(st.deps.store, store_timeout, control_atom::value, c.at_ms,
                  c.kind, c.key, c.state, c.detail)
        .then([](ok_atom) {},
              [](caf::error& err) {
                // The state itself is the queue's; the entry is lost (a
                // deposed coordinator's refused write, PostgreSQL down).
                log_failure("recording a flow-control change", err, {},
                            log::level::warn);
              });
  }
}

/// A job woken from a gate left the ready queue (taken, parked again,
/// removed): the gate may let another through.
void left_gate(self_ptr self, ready_entry& e) {
  if (e.woken_gate == 0)
    return;
  self->state.flow.unwoke(self->state.flow.gate_of(e.flow, e.woken_gate));
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
    pe.entry.woken_gate = gate[0];
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

/// Spawns the job supervisor of `job_id` on `worker`; `adopt_attempt` != 0
/// takes over that running attempt instead of starting one.
caf::actor start_supervisor(self_ptr self, const std::string& job_id,
                            const caf::actor& worker,
                            const std::string& worker_id,
                            uint32_t adopt_attempt) {
  auto& st = self->state;
  job_supervisor_config cfg;
  cfg.job_id = job_id;
  cfg.worker = worker;
  cfg.worker_id = worker_id;
  cfg.queue = caf::actor{self};
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
  std::vector<std::string> slots_to_free;
  bool flow_touched = false;
  // One pass over the idle workers: each takes the best job of the types
  // it runs, or stays idle.
  static const std::string local_node;
  for (size_t w = 0; w < q.idle_workers.size();) {
    auto wi = st.workers.find(q.idle_workers[w].address());
    const auto& types = wi != st.workers.end() ? wi->second.types : any_type;
    const auto& node = wi != st.workers.end() ? wi->second.node : local_node;
    ready_entry entry;
    size_t prio = 0;
    const std::string* lane_name = nullptr;
    if (!pop_next(st.resources, q, types, node, entry, prio, lane_name)) {
      ++w;
      continue;
    }
    auto li = q.by_type.find(*lane_name);
    auto type = type_of_lane(li->first);
    auto shape = li->second.shape;
    if (shape && li->second[0].empty() && li->second[1].empty()
        && li->second[2].empty())
      q.by_type.erase(li); // lanes of shapes come and go with their jobs
    bool duplicate = st.running.count(entry.job_id) > 0;
    auto key
        = st.concurrency.key_of(type, st.admission.tenant_name(entry.tenant));
    bool woken = entry.woken_gate != 0;
    if (entry.flow != 0) {
      flow_touched = true;
      left_gate(self, entry); // whatever happens next, it left the ready queue
    }
    if (entry.flow != 0 && !duplicate) {
      // A rate limit without a token or a breaker that is not closed, or
      // jobs already waiting at its gate (it goes behind them, unless it was
      // woken from there): it waits behind that gate, in order, without a
      // worker, and without a slot of its concurrency key (given to the
      // next job of the key).
      auto wait = st.flow.gate(entry.flow, flow_now(self));
      if (!wait && !woken)
        for (char kind : {'b', 'r'}) {
          auto g = st.flow.gate_of(entry.flow, kind);
          if (!g.empty() && st.flow_parked.count(g) > 0) {
            wait = flow_wait{g, 0};
            break;
          }
        }
      if (wait) {
        if (entry.holds_slot) {
          entry.holds_slot = false;
          slots_to_free.push_back(key);
        }
        park_at_gate(st, wait->gate,
                     {std::move(entry), cls, type, prio, shape});
        continue;
      }
    }
    if (!duplicate && !entry.holds_slot && !key.empty()
        && (!st.recovered || !st.concurrency.take(key))) {
      // No free slot for its key, or recovery has not yet counted every
      // attempt that runs: it waits, in order, without a worker.
      st.parked[key].push_back({std::move(entry), cls, type, prio, shape});
      continue;
    }
    left_queue(st, entry.tenant, entry.job_id);
    if (duplicate) {
      if (entry.holds_slot)
        slots_to_free.push_back(key); // given back after this pass
      // A second entry for a job that runs (recovery raced its submit, or
      // a reconcile raced its timer): its supervisor owns it. A second
      // supervisor would be refused by the store anyway, but would take
      // the first one's place in `running`.
      continue;
    }
    auto worker = std::move(q.idle_workers[w]);
    q.idle_workers.erase(q.idle_workers.begin()
                         + static_cast<std::ptrdiff_t>(w));
    auto js = start_supervisor(
        self, entry.job_id, worker,
        wi != st.workers.end() ? wi->second.worker_id : "worker", 0);
    self->monitor(js);
    st.supervisor_jobs.emplace(js.address(), entry.job_id);
    uint64_t probe = 0;
    if (entry.flow != 0)
      probe = st.flow.take(entry.flow, flow_now(self));
    auto now = now_ms(self);
    st.stats.start_latency.observe(
        now - (entry.key - static_cast<int64_t>(prio) * aging_ms(self)));
    ++st.type_counts[{cls, type}].first;
    st.resources.acquire(node, shape);
    st.running.emplace(entry.job_id,
                       running_entry{js, worker, cls, now, key, entry.flow,
                                     probe, type, shape, node});
    ++st.stats.dispatched[prio];
  }
  for (const auto& key : slots_to_free)
    release_slot(self, key);
  if (flow_touched) {
    // Jobs parked behind a gate look again when it may open.
    rearm_flow(self);
    record_flow_changes(self);
  }
}

void arm_timer(self_ptr self) {
  auto& st = self->state;
  if (st.delayed.empty()) {
    st.armed_due_ms = 0;
    return;
  }
  auto due = st.delayed.begin()->due_ms;
  if (st.armed_due_ms != 0 && st.armed_due_ms <= due)
    return; // an earlier (or the same) wake-up is already armed
  st.armed_due_ms = due;
  auto delay = std::max<int64_t>(0, due - now_ms(self));
  self->delayed_send(self, std::chrono::milliseconds{delay}, due_atom::value,
                     ++st.timer_generation);
}

void push_delayed(self_ptr self, delayed_entry entry) {
  auto& st = self->state;
  note_entry(st, entry.job_id);
  auto tenant = entry.tenant;
  auto partition = partition_of_id(entry.job_id);
  std::pair<std::string, std::string> type_key{entry.resource_class,
                                               entry.type};
  // The same job at the same time twice (recovery raced its submit) is
  // one entry, counted once.
  if (st.delayed.insert(std::move(entry)).second) {
    st.admission.entered(tenant, partition);
    ++st.delayed_by_type[type_key];
  }
  arm_timer(self);
}

/// Takes `i` out of the timer's set, and out of its type's count.
void erase_delayed(queue_state& st, std::set<delayed_entry>::iterator i) {
  auto k = st.delayed_by_type.find({i->resource_class, i->type});
  if (k != st.delayed_by_type.end() && --k->second == 0)
    st.delayed_by_type.erase(k);
  st.delayed.erase(i);
}

void reconcile_later(self_ptr self, const std::string& job_id,
                     uint32_t failures, error_info why);

/// Moves every due job to the ready queues (after the store recorded it).
void on_due(self_ptr self) {
  auto& st = self->state;
  st.armed_due_ms = 0;
  auto now = now_ms(self);
  while (!st.delayed.empty() && st.delayed.begin()->due_ms <= now) {
    auto entry = *st.delayed.begin();
    erase_delayed(st, st.delayed.begin());
    left_queue(st, entry.tenant, entry.job_id);
    job_event ev;
    ev.job_id = entry.job_id;
    ev.kind = event_kind::queued;
    ev.at_ms = now;
    self->request(st.deps.store, store_timeout, append_atom::value,
                  std::vector<job_event>{std::move(ev)})
        .then(
            [self, entry](ok_atom) {
              push_ready(self, entry.job_id, entry.prio, entry.resource_class,
                         entry.type, entry.tenant, entry.flow, entry.shape);
            },
            [self, entry](caf::error& err) {
              // Cancelled while it waited, or the store is unavailable: the
              // store has the truth, and the job must not be forgotten.
              log_failure("the job could not become ready", err, entry.job_id,
                          log::level::warn);
              reconcile_later(self, entry.job_id, 0,
                              {"attempt_lost",
                               "the job's timer fired while the "
                               "store was unavailable",
                               true});
            });
  }
  arm_timer(self);
}

/// The timer's entry of `rec`, due at `due_ms`.
delayed_entry delayed_of(self_ptr self, const job_record& rec, int64_t due_ms) {
  auto& st = self->state;
  return {due_ms,
          rec.job_id,
          resource_class_of(rec.spec),
          rec.spec.prio,
          rec.spec.type,
          st.admission.tenant(rec.spec.tenant),
          st.flow.intern(rec.spec.rate_limit_key, rec.spec.breaker_key),
          shape_of(st, rec.spec)};
}

/// Puts a job the store just accepted where its status says.
void enqueue(self_ptr self, const job_record& rec) {
  switch (rec.status) {
    case job_status::queued:
      push_ready(self, rec);
      break;
    case job_status::scheduled:
      push_delayed(self, delayed_of(self, rec, rec.spec.run_at_ms));
      break;
    case job_status::retrying:
      push_delayed(self, delayed_of(self, rec, rec.retry_at_ms));
      break;
    default:
      break;
  }
}

/// Removes a waiting job from the queue structures; false if not there.
bool remove_waiting(self_ptr self, const std::string& job_id) {
  auto& st = self->state;
  for (auto& kv : st.classes)
    for (auto& tq : kv.second.by_type)
      for (auto& dq : tq.second) {
        ready_entry e;
        if (dq.erase(job_id, e)) {
          left_queue(st, e.tenant, e.job_id);
          if (e.woken_gate != 0) { // the gate may let another through
            left_gate(self, e);
            rearm_flow(self);
          }
          auto type = type_of_lane(tq.first);
          if (tq.second.shape && tq.second[0].empty() && tq.second[1].empty()
              && tq.second[2].empty())
            kv.second.by_type.erase(tq.first);
          if (e.holds_slot) // woken, never ran: the next job of its key
            release_slot(self, st.concurrency.key_of(
                                   type, st.admission.tenant_name(e.tenant)));
          return true;
        }
      }
  // Held back by a concurrency key or by a rate limit or breaker (parked
  // entries hold no slot and no token).
  auto unpark = [&](auto& by_key) {
    for (auto p = by_key.begin(); p != by_key.end(); ++p) {
      auto& dq = p->second;
      auto i = std::find_if(dq.begin(), dq.end(), [&](const parked_entry& e) {
        return e.entry.job_id == job_id;
      });
      if (i != dq.end()) {
        left_queue(st, i->entry.tenant, job_id);
        dq.erase(i);
        if (dq.empty())
          by_key.erase(p);
        return true;
      }
    }
    return false;
  };
  if (unpark(st.parked) || unpark(st.flow_parked))
    return true;
  for (auto i = st.delayed.begin(); i != st.delayed.end(); ++i)
    if (i->job_id == job_id) {
      left_queue(st, i->tenant, i->job_id);
      erase_delayed(st, i);
      arm_timer(self);
      return true;
    }
  return false;
}

/// A cancel, redrive or purge that the job's state refuses: the store's
/// state machine answers invalid_value with its internal view, which is not
/// for clients. Such a refusal becomes errc::conflict (HTTP 409): "job <id>
/// is <status>: <needs>"; any other error is passed on unchanged. Costs a
/// read only on this failure path.
void explain_refusal(self_ptr self, const std::string& job_id,
                     std::string needs, caf::error err,
                     std::function<void(caf::error)> done) {
  if (!is(err, errc::invalid_value))
    return done(std::move(err));
  self->request(self->state.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [done, needs](job_record& rec) {
            std::string state = to_string(rec.status);
            if (rec.status == job_status::failed && !rec.dead_lettered)
              state += " and no longer in the dead-letter queue";
            done(make_error(errc::conflict, "job " + rec.job_id + " is " + state
                                                + ": " + needs));
          },
          [done, needs](caf::error& read_err) {
            if (is(read_err, errc::not_found))
              return done(std::move(read_err));
            done(make_error(errc::conflict, needs));
          });
}

/// Appends one event, then reads the record and publishes it as final.
caf::result<ok_atom> append_and_publish(self_ptr self, job_event ev) {
  auto& st = self->state;
  auto rp = self->make_response_promise<ok_atom>();
  auto job_id = ev.job_id;
  self->request(st.deps.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then(
          [self, rp, job_id](ok_atom) mutable {
            rp.deliver(ok_atom::value);
            ++self->state.stats.cancelled;
            self->request(self->state.deps.store, store_timeout,
                          get_atom::value, job_id)
                .then(
                    [self](job_record& rec) {
                      if (is_terminal(rec.status))
                        self->send(self->state.deps.publisher,
                                   final_atom::value, std::move(rec));
                    },
                    [](caf::error&) {});
          },
          [self, rp, job_id](caf::error& err) mutable {
            explain_refusal(self, job_id,
                            "only a job that has not finished can be cancelled",
                            std::move(err), [rp](caf::error e) mutable {
                              rp.deliver(std::move(e));
                            });
          });
  return rp;
}

/// Settles an attempt that was running when its owner vanished (its job
/// supervisor died, or the node restarted): the retry policy decides
/// between a retry (resuming from the last committed checkpoint) and the
/// dead-letter queue.
void settle_interrupted(self_ptr self, const job_record& rec, error_info err,
                        uint32_t failures = 0) {
  auto& st = self->state;
  const auto* h = st.deps.handlers->find(rec.spec.type);
  std::vector<std::string> none;
  std::uniform_real_distribution<double> u{0.0, 1.0};
  auto decision
      = decide_retry(rec, err, h ? h->options.retry.non_retryable : none,
                     now_ms(self), u(st.rng), true);
  std::vector<job_event> events;
  job_event ev;
  ev.job_id = rec.job_id;
  ev.attempt = rec.attempt;
  ev.at_ms = now_ms(self);
  ev.kind = event_kind::worker_lost;
  ev.worker_id = rec.worker_id;
  events.push_back(ev);
  ev.worker_id.clear();
  ev.error = err;
  if (decision.retry) {
    ev.kind = event_kind::retry_scheduled;
    ev.next_attempt_at_ms = decision.next_attempt_at_ms;
    events.push_back(ev);
  } else {
    ev.error.message += " (" + decision.reason + ")";
    ev.kind = event_kind::failed;
    events.push_back(ev);
    ev.kind = event_kind::dead_lettered;
    events.push_back(ev);
  }
  auto retry_at = decision.next_attempt_at_ms;
  auto why = err;
  self->request(st.deps.store, store_timeout, append_atom::value,
                std::move(events))
      .then(
          [self, rec, retry_at, retry = decision.retry](ok_atom) {
            if (retry) {
              ++self->state.stats.retried;
              push_delayed(self, delayed_of(self, rec, retry_at));
              return;
            }
            ++self->state.stats.failed;
            self->request(self->state.deps.store, store_timeout,
                          get_atom::value, rec.job_id)
                .then(
                    [self](job_record& final_rec) {
                      self->send(self->state.deps.publisher, final_atom::value,
                                 std::move(final_rec));
                    },
                    [](caf::error&) {});
          },
          [self, rec, why, failures](caf::error& err) {
            // Left as it is, the attempt would stay `processing` forever.
            log_failure("settling an interrupted attempt", err, rec.job_id,
                        log::level::warn);
            reconcile_later(self, rec.job_id, failures, why);
          });
}

/// The queue lost track of a job: a store call about it failed (PostgreSQL
/// down, a timeout, an outcome the store refused), so the store may hold it
/// as queued, scheduled, retrying or processing with nobody to move it on.
/// Nothing may stay that way (RELIABILITY.md, invariant 10). Re-reads the
/// job and puts it where its stored status says: a ready queue, the timer,
/// or — for an attempt nobody runs — the retry policy, blaming `why`.
/// Retries with backoff while the store can't answer. A job a supervisor
/// runs is left to it.
void reconcile(self_ptr self, const std::string& job_id, uint32_t failures,
               error_info why) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, failures, why](job_record& rec) {
            auto& st = self->state;
            if (st.running.count(rec.job_id) > 0)
              return;
            remove_waiting(self, rec.job_id); // placed once, below
            switch (rec.status) {
              case job_status::queued:
                push_ready(self, rec);
                break;
              case job_status::scheduled:
              case job_status::retrying:
                enqueue(self, rec);
                break;
              case job_status::processing:
                settle_interrupted(self, rec, why, failures + 1);
                break;
              default:
                break; // terminal: nothing left to do
            }
          },
          [self, job_id, failures, why](caf::error& err) {
            if (is(err, errc::not_found))
              return;
            reconcile_later(self, job_id, failures + 1, why);
          });
}

/// reconcile() after the backoff for `failures` failures so far.
void reconcile_later(self_ptr self, const std::string& job_id,
                     uint32_t failures, error_info why) {
  self->delayed_send(self, reconcile_backoff.delay(failures, draw(self)),
                     reconcile_atom::value, job_id,
                     static_cast<int64_t>(failures), why.code, why.message);
}

/// A job supervisor died without concluding its job: settle the attempt.
void resolve_orphan(self_ptr self, const std::string& job_id,
                    running_entry entry, const caf::error& reason) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, entry, reason](job_record& rec) {
            auto& st = self->state;
            if (rec.status == job_status::queued) {
              // It never started: the job waits again, the worker is free.
              st.classes[entry.resource_class].idle_workers.push_back(
                  entry.worker);
              push_ready(self, rec);
              return;
            }
            if (rec.status != job_status::processing)
              return;
            self->send(entry.worker, abandon_atom::value, rec.job_id,
                       rec.attempt);
            settle_interrupted(
                self, rec,
                {"supervisor_lost",
                 "the job's supervisor died: " + self->system().render(reason),
                 true});
          },
          [self, job_id, reason](caf::error& err) {
            log_failure("reading an orphaned job", err, job_id,
                        log::level::warn);
            reconcile_later(
                self, job_id, 0,
                {"supervisor_lost",
                 "the job's supervisor died: " + self->system().render(reason),
                 true});
          });
}

/// Queues one recovered job where its status says.
void recover_job(self_ptr self, job_record& rec) {
  auto& st = self->state;
  switch (rec.status) {
    case job_status::queued:
      push_ready(self, rec, std::max(rec.created_at_ms, rec.spec.run_at_ms));
      break;
    case job_status::scheduled:
    case job_status::retrying:
      enqueue(self, rec);
      break;
    case job_status::processing:
      ++st.recovered_interrupted;
      if (rec.worker_id.find('/') != std::string::npos
          && st.opts.adopt_grace.count() > 0) {
        // Ran on a worker node, which may still run it: it gets one grace
        // period to come back and report it.
        st.awaiting_adoption.emplace(rec.job_id, rec);
        // It may still run: it holds its slot and what it draws from its
        // node's pools until adopted or given up.
        st.concurrency.force(
            st.concurrency.key_of(rec.spec.type, rec.spec.tenant));
        st.resources.acquire(node_of(rec.worker_id), shape_of(st, rec.spec));
        break;
      }
      settle_interrupted(self, rec,
                         {"node_restarted",
                          "the node stopped while attempt "
                              + std::to_string(rec.attempt) + " was running",
                          true});
      break;
    default:
      return;
  }
  ++st.recovered_jobs;
}

/// Recovery is complete: what waited for it runs.
void end_recovery(self_ptr self) {
  auto& st = self->state;
  st.recovered = true;
  st.entered_early.clear();
  if (!st.awaiting_adoption.empty())
    self->delayed_send(self, st.opts.adopt_grace, adopt_atom::value);
  for (auto& f : st.after_recovery)
    f();
  st.after_recovery.clear();
  // Every attempt that may still run is counted now (forced): the jobs of
  // limited types held back during recovery get the free slots.
  std::vector<std::string> keys;
  for (const auto& kv : st.parked)
    keys.push_back(kv.first);
  for (const auto& key : keys)
    wake_parked(self, key);
  if (st.recovered_jobs > 0)
    log::info("queue", "recovered unfinished jobs",
              {{"jobs", st.recovered_jobs},
               {"interrupted_attempts", st.recovered_interrupted}});
}

/// Rebuilds the queue from the store's non-terminal jobs (ready queues,
/// timers, the attempts that were running when the node went down), one
/// page after another in job-id order, from where the last page ended: a
/// failed read is retried from there, never from the start.
void recover(self_ptr self) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, recover_atom::value,
                st.recovered_up_to, st.opts.recovery_page)
      .then(
          [self](std::vector<job_record>& jobs) {
            auto& st = self->state;
            st.queuing_page = true;
            for (auto& rec : jobs)
              if (st.entered_early.count(rec.job_id) == 0)
                recover_job(self, rec);
            st.queuing_page = false;
            if (jobs.size() < st.opts.recovery_page) {
              end_recovery(self);
              return;
            }
            st.recovered_up_to = jobs.back().job_id;
            recover(self);
          },
          [self](caf::error& err) {
            // Without recovery, acknowledged jobs would sit in the store
            // unseen: keep trying (the store may still be connecting).
            auto& st = self->state;
            log_failure("recovering unfinished jobs (will retry)", err, {},
                        log::level::warn);
            self->delayed_send(self, st.recover_backoff.next(draw(self)),
                               recover_atom::value);
          });
}

/// Whether a connected worker (idle or busy) runs `type` in class `cls`.
/// Why no connected worker could ever run a job of class `cls`, type
/// `type` drawing `shape` from pools ("" = one could).
std::string unserved_reason(const queue_state& st, const std::string& cls,
                            const std::string& type, const shape_ref& shape) {
  std::map<std::string, std::string> short_nodes;
  for (const auto& [addr, w] : st.workers)
    if (w.resource_class == cls
        && (w.types.empty()
            || std::binary_search(w.types.begin(), w.types.end(), type))) {
      auto why = st.resources.never_reason(w.node, shape);
      if (why.empty())
        return {};
      short_nodes.emplace(w.node.empty() ? "this node" : "node " + w.node, why);
    }
  std::string out = "no connected worker runs resource class '" + cls
                    + "' with job type '" + type + "'";
  if (short_nodes.empty())
    return out;
  out += " and has " + shape->key + " (";
  size_t n = 0;
  for (const auto& [node, why] : short_nodes) {
    if (n == 3) {
      out += ", ...";
      break;
    }
    out += (n++ ? ", " : "") + node + " lacks " + why;
  }
  return out + ")";
}

bool served(const queue_state& st, const std::string& cls,
            const std::string& type, const shape_ref& shape = nullptr) {
  return unserved_reason(st, cls, type, shape).empty();
}

/// A worker node's pools as it declares them with each offer ("" for the
/// coordinator's own workers, declared at start): re-read when they change.
void declare_pools(self_ptr self, const std::string& node,
                   const std::string& text) {
  auto& st = self->state;
  auto known = st.declared_pools.find(node);
  if (known != st.declared_pools.end() && known->second == text)
    return;
  auto pools = parse_amounts(text, "resources", errc::invalid_request);
  if (!pools) {
    log::warn("queue", "a worker node declared malformed resources",
              {{"node", node}, {"error", describe(pools.error())}});
    return;
  }
  st.declared_pools[node] = text;
  st.resources.declare(node, std::move(*pools));
}

/// A worker (local, or a remote node's slot) is idle; `types` sorted, empty
/// = it runs every type.
void worker_ready(self_ptr self, const std::string& cls,
                  const std::string& worker_id, caf::actor worker,
                  std::vector<std::string> types) {
  auto& st = self->state;
  auto w = st.workers.find(worker.address());
  if (w == st.workers.end()) {
    if (cls.empty())
      return; // a stranger without a class: nothing to do with it
    self->monitor(worker);
    w = st.workers
            .emplace(worker.address(),
                     queue_state::worker_info{cls, worker_id, std::move(types),
                                              node_of(worker_id)})
            .first;
  }
  auto cls_name = w->second.resource_class;
  auto& idle = st.classes[cls_name].idle_workers;
  for (const auto& x : idle)
    if (x == worker)
      return; // announced twice: one slot is one credit
  idle.push_back(std::move(worker));
  dispatch(self, cls_name);
  if (!st.flow_parked.empty())
    rearm_flow(self); // jobs at a gate may have a worker now
}

/// A worker node that came back after this coordinator restarted still
/// runs `attempt` of `job_id`: a job supervisor takes it over (same
/// attempt, no new `started`), and the caller learns which.
void adopt(self_ptr self, caf::typed_response_promise<caf::actor> rp,
           const std::string& job_id, uint32_t attempt,
           const std::string& worker_id, caf::actor slot) {
  auto& st = self->state;
  auto i = st.awaiting_adoption.find(job_id);
  if (i == st.awaiting_adoption.end() || i->second.attempt != attempt
      || st.running.count(job_id) > 0) {
    rp.deliver(make_error(errc::stale_attempt,
                          "attempt " + std::to_string(attempt) + " of job "
                              + job_id + " is not waiting to be adopted"));
    return;
  }
  auto rec = std::move(i->second);
  st.awaiting_adoption.erase(i);
  auto js = start_supervisor(self, job_id, slot, worker_id, attempt);
  self->monitor(js);
  st.supervisor_jobs.emplace(js.address(), job_id);
  st.running.emplace(
      job_id, running_entry{
                  js, slot, resource_class_of(rec.spec), now_ms(self),
                  st.concurrency.key_of(rec.spec.type, rec.spec.tenant),
                  st.flow.intern(rec.spec.rate_limit_key, rec.spec.breaker_key),
                  0, rec.spec.type, shape_of(st, rec.spec),
                  node_of(rec.worker_id)}); // held since recovery
  rp.deliver(js);
}

/// Redrives one DLQ job: `redriven`, then back into the ready queue.
/// Cancels a job: a running one through its job supervisor (cooperative,
/// then forced), a waiting one at once. `reason` (who asked and why) goes
/// into the audit log's event.
caf::result<ok_atom> cancel_job(self_ptr self, const std::string& job_id,
                                std::string reason) {
  auto& st = self->state;
  auto r = st.running.find(job_id);
  if (r != st.running.end()) {
    self->send(r->second.job_supervisor, cancel_atom::value, std::move(reason));
    return ok_atom::value;
  }
  remove_waiting(self, job_id);
  // Waiting or not (e.g. between the timer and the ready queue), the
  // store decides: a finished job refuses `cancelled`.
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::cancelled;
  ev.at_ms = now_ms(self);
  ev.reason = "cancelled before it ran";
  if (!reason.empty())
    ev.reason += ": " + reason;
  return append_and_publish(self, std::move(ev));
}

void redrive_one(self_ptr self, const std::string& job_id,
                 std::function<void(caf::error)> done) {
  auto& st = self->state;
  self->request(st.deps.store, store_timeout, get_atom::value, job_id)
      .then(
          [self, done](job_record& rec) {
            job_event ev;
            ev.job_id = rec.job_id;
            ev.kind = event_kind::redriven;
            ev.attempt = rec.attempt;
            ev.at_ms = now_ms(self);
            ev.reason = "redriven from the dead-letter queue";
            self->request(self->state.deps.store, store_timeout,
                          append_atom::value, std::vector<job_event>{ev})
                .then(
                    [self, done, rec](ok_atom) {
                      // The publisher forgets the failed run's final record and
                      // streams read the `redriven` event.
                      self->send(self->state.deps.publisher,
                                 changed_atom::value, rec.job_id);
                      push_ready(self, rec);
                      done(caf::none);
                    },
                    [self, done, job_id = rec.job_id](caf::error& err) {
                      explain_refusal(
                          self, job_id,
                          "only a job in the dead-letter queue can be "
                          "retried",
                          std::move(err), done);
                    });
          },
          [done](caf::error& err) { done(std::move(err)); });
}

/// Applies `one` to every DLQ job (one page of up to 10,000), counting
/// successes.
void for_all_dead_letters(
    self_ptr self, caf::typed_response_promise<uint32_t> rp,
    std::function<void(const std::string&, std::function<void(caf::error)>)>
        one) {
  job_query q;
  q.dead_lettered = true;
  q.limit = 10000;
  self->request(self->state.deps.store, store_timeout, list_atom::value, q)
      .then(
          [rp, one](std::vector<job_record>& jobs) mutable {
            if (jobs.empty()) {
              rp.deliver(uint32_t{0});
              return;
            }
            struct tally {
              size_t pending;
              uint32_t ok = 0;
              caf::typed_response_promise<uint32_t> rp;
            };
            auto t = std::make_shared<tally>(tally{jobs.size(), 0, rp});
            for (const auto& rec : jobs)
              one(rec.job_id, [t](caf::error err) {
                if (!err)
                  ++t->ok;
                if (--t->pending == 0)
                  t->rp.deliver(t->ok);
              });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

void purge_one(self_ptr self, const std::string& job_id,
               std::function<void(caf::error)> done) {
  job_event ev;
  ev.job_id = job_id;
  ev.kind = event_kind::purged;
  ev.at_ms = now_ms(self);
  ev.reason = "purged from the dead-letter queue";
  self->request(self->state.deps.store, store_timeout, append_atom::value,
                std::vector<job_event>{std::move(ev)})
      .then([done](ok_atom) { done(caf::none); },
            [self, done, job_id](caf::error& err) {
              explain_refusal(self, job_id,
                              "only a job in the dead-letter queue can be "
                              "purged",
                              std::move(err), done);
            });
}

using dlq_op
    = void (*)(self_ptr, const std::string&, std::function<void(caf::error)>);

/// Runs a dead-letter-queue operation on one job; ok or its error.
caf::typed_response_promise<ok_atom>
dlq_one(self_ptr self, const std::string& job_id, dlq_op op) {
  auto rp = self->make_response_promise<ok_atom>();
  op(self, job_id, [rp](caf::error err) mutable {
    if (err)
      rp.deliver(std::move(err));
    else
      rp.deliver(ok_atom::value);
  });
  return rp;
}

/// Runs a dead-letter-queue operation on every job in it; how many worked.
caf::typed_response_promise<uint32_t> dlq_all(self_ptr self, dlq_op op) {
  auto rp = self->make_response_promise<uint32_t>();
  for_all_dead_letters(
      self, rp,
      [self, op](const std::string& id, std::function<void(caf::error)> done) {
        op(self, id, std::move(done));
      });
  return rp;
}

/// The queue's figures per resource class and job type (queue_stats::
/// by_type): what waits, runs and ran. Walks the jobs held back by a limit
/// and the running attempts (the ready queues and the timer keep counts):
/// for an admin view or a scrape, not for each job.
std::vector<type_figures> figures_by_type(self_ptr self) {
  auto& st = self->state;
  auto now = now_ms(self);
  std::map<std::pair<std::string, std::string>, type_figures> figs;
  auto fig
      = [&](const std::string& cls, const std::string& type) -> type_figures& {
    auto& f = figs[{cls, type}];
    f.resource_class = cls;
    f.job_type = type;
    return f;
  };
  auto aged = [&](type_figures& f, int64_t key, size_t prio) {
    f.oldest_age_ms
        = std::max(f.oldest_age_ms,
                   now - (key - static_cast<int64_t>(prio) * aging_ms(self)));
  };
  for (const auto& [cls, q] : st.classes)
    for (const auto& [lane_name, pq] : q.by_type)
      for (size_t i = 0; i < 3; ++i)
        if (!pq[i].empty()) {
          auto& f = fig(cls, type_of_lane(lane_name));
          f.ready += pq[i].size();
          aged(f, pq[i].oldest_key(), i);
        }
  auto count_parked = [&](const auto& by_key) {
    for (const auto& kv : by_key)
      for (const auto& pe : kv.second) {
        auto& f = fig(pe.resource_class, pe.type);
        ++f.ready;
        aged(f, pe.entry.key, pe.prio);
      }
  };
  count_parked(st.parked);
  count_parked(st.flow_parked);
  for (const auto& [k, n] : st.delayed_by_type)
    fig(k.first, k.second).delayed = n;
  for (const auto& kv : st.running)
    ++fig(kv.second.resource_class, kv.second.type).running;
  for (const auto& [k, n] : st.type_counts) {
    auto& f = fig(k.first, k.second);
    f.dispatched = n.first;
    f.completed = n.second;
  }
  std::vector<type_figures> out;
  for (auto& kv : figs) {
    if (out.size() == 10000)
      break; // the wire's bound
    out.push_back(std::move(kv.second));
  }
  return out;
}

caf::behavior queue_impl(self_ptr self, queue_deps deps, queue_options opts) {
  auto& st = self->state;
  st.deps = std::move(deps);
  st.opts = std::move(opts);
  if (!st.opts.clock_ms)
    st.opts.clock_ms = system_clock_ms;
  auto seed = st.opts.seed != 0 ? st.opts.seed : std::random_device{}();
  st.rng.seed(seed);
  st.ids = job_id_generator{st.rng()};
  st.partitions = partition_picker{st.opts.partitions, st.opts.partition_count};
  st.admission = admission_control{st.opts.admission};
  st.concurrency = concurrency_slots{st.opts.concurrency};
  st.flow = flow_control{st.opts.flow, flow_now(self)};
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
  if (!st.opts.flow.breakers.empty()) {
    // Breakers start as the control log last saw them: a restart or a
    // takeover must not close a breaker that was open.
    st.flow.hold_breakers();
    auto restore = [self](const std::vector<std::string>& triples, bool ok) {
      auto& st = self->state;
      st.flow.restore_breakers(triples, ok, now_ms(self), flow_now(self));
      record_flow_changes(self);
      rearm_flow(self);
    };
    self->request(st.deps.store, store_timeout, control_atom::value,
                  std::string{"breaker"})
        .then(
            [restore](std::vector<std::string>& triples) {
              restore(triples, true);
            },
            [restore](caf::error& err) {
              log_failure("reading the breakers' last states", err, {},
                          log::level::warn);
              restore({}, false);
            });
  }
  recover(self);
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
    auto w = st.workers.find(dm.source);
    if (w != st.workers.end()) {
      auto& idle = st.classes[w->second.resource_class].idle_workers;
      idle.erase(std::remove_if(idle.begin(), idle.end(),
                                [&](const caf::actor& a) {
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
    release_slot(self, entry.concurrency_key);
    release_pools(self, entry.node, entry.shape);
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
        if (auto err = st.flow.check(spec->rate_limit_key, spec->breaker_key,
                                     spec->tenant))
          return err;
        auto shape = hold_shape(st, *spec);
        if (!shape)
          return std::move(shape.error());
        auto partition = st.partitions.of(spec->tenant, spec->idempotency_key,
                                          st.partitions.next_keyless());
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
            if (auto err = st.flow.check(spec->rate_limit_key,
                                         spec->breaker_key, spec->tenant))
              spec = caf::expected<job_spec>{std::move(err)};
          if (spec) {
            auto shape = hold_shape(st, *spec);
            if (!shape)
              spec = caf::expected<job_spec>{std::move(shape.error())};
            else if (*shape)
              held->push_back(std::move(*shape));
          }
          auto partition = spec ? st.partitions.of(
                               spec->tenant, spec->idempotency_key, keyless)
                                : 0;
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
            a.error.code = err.category() == errc_category
                               ? to_string(static_cast<errc>(err.code()))
                               : "invalid_request";
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
        return s;
      },
      [self](nodes_atom, const std::string& cls, const std::string& type,
             const std::string& pools) -> std::string {
        auto& st = self->state;
        auto needs = parse_amounts(pools, "resources", errc::invalid_request);
        if (!needs)
          return describe(needs.error());
        return unserved_reason(st, cls, type, st.resources.shape_of(*needs));
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
             caf::actor& worker) {
        worker_ready(self, cls, worker_id, worker, self->state.local_types);
      },
      [self](ready_atom, std::string& cls, std::string& worker_id,
             caf::actor& worker, std::vector<std::string>& types,
             std::string& pools) {
        std::sort(types.begin(), types.end());
        declare_pools(self, node_of(worker_id), pools);
        worker_ready(self, cls, worker_id, worker, std::move(types));
      },
      [self](withdraw_atom, caf::actor& worker) {
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
             std::string& worker_id,
             caf::actor& slot) -> caf::result<caf::actor> {
        auto rp = self->make_response_promise<caf::actor>();
        auto run = [self, rp, job_id, attempt, worker_id, slot]() mutable {
          adopt(self, rp, job_id, attempt, worker_id, slot);
        };
        if (self->state.recovered)
          run();
        else
          self->state.after_recovery.push_back(std::move(run));
        return rp;
      },
      [self](adopt_atom) {
        // The grace is over: attempts nobody came back for are lost.
        auto& st = self->state;
        auto waiting = std::move(st.awaiting_adoption);
        st.awaiting_adoption.clear();
        for (auto& [job_id, rec] : waiting) {
          release_slot(self,
                       st.concurrency.key_of(rec.spec.type, rec.spec.tenant));
          release_pools(self, node_of(rec.worker_id), shape_of(st, rec.spec));
          settle_interrupted(self, rec,
                             {"worker_lost",
                              "no worker reported attempt "
                                  + std::to_string(rec.attempt)
                                  + " within its lease after the coordinator "
                                    "restarted",
                              true});
        }
      },
      [self](retry_atom, job_record& rec) {
        ++self->state.stats.retried;
        enqueue(self, rec);
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
        st.stats.run_time.observe(now_ms(self) - entry.started_ms);
        if (status == job_status::completed)
          ++st.type_counts[{entry.resource_class, entry.type}].second;
        release_slot(self, entry.concurrency_key);
        release_pools(self, entry.node, entry.shape);
        // An outcome the supervisor could not record says nothing about
        // the downstream: not counted.
        bool recorded = status == job_status::completed
                        || status == job_status::failed
                        || status == job_status::cancelled
                        || status == job_status::retrying;
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
      [self](flow_atom) -> std::string {
        auto& st = self->state;
        std::map<std::string, size_t> waiting;
        for (const auto& [gate, dq] : st.flow_parked)
          waiting[gate] = dq.size();
        return st.flow.to_json(flow_now(self), waiting);
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

} // namespace

int64_t system_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count();
}

queue_actor spawn_queue(caf::actor_system& sys, queue_deps deps,
                        queue_options options) {
  return caf::actor_cast<queue_actor>(
      sys.spawn(queue_impl, std::move(deps), std::move(options)));
}

} // namespace drover
