// Permits of the job types' concurrency limits across coordinators that
// share the partitions (queue_options::cluster_type_limits; the store's
// permit_atom, runtime/pg_permits.cpp). See actors/detail/queue_state.hpp.
//
// A type's key (--concurrency-limit TYPE=N) counts the attempts this queue
// runs, as with one coordinator; with several, a job of the type also needs
// a permit from PostgreSQL before it takes its slot. Jobs wait behind the
// key as before (parked, in order); the queue asks for permits for them
// (new ones for as many as its own slots leave room for, and no more than
// it has workers for them, busy or idle, less those taken, in order) and
// wakes those granted, in order, past the ones refused. An ask names only
// the jobs it could start (its walk of the line ends there); a job that
// left with its permit for a rate limit or a breaker keeps it in its entry
// (ready_entry::permits, of the partitions' generation) and takes its slot
// again when it comes back, without asking or waiting behind the line; a
// grant whose answer was lost, or one from before a change of partitions,
// is answered held when its job is named again. Nothing is given
// back: a permit stops counting once its job's attempt ended (or its job
// changed, or the lease it was granted under went) — see
// runtime/pg_permits.cpp. The queue asks again when one of its own attempts of
// the key ends, and every quarter second while refused (a permit freed by
// another coordinator is seen within that).

#include "actors/detail/queue_state.hpp"

#include <algorithm>
#include <map>
#include <set>
#include <string_view>

namespace drover::queue_detail {

namespace {

/// Asking again while refused (a failed request backs off up to 5 s:
/// permit_line::failures).
constexpr int64_t refused_delay_ms = 250;
/// The most job ids one ask names (the store's limit; a coordinator with
/// more workers than that asks for that many at a time).
constexpr size_t most_ids = 10000;

/// Arms an ask of `key` in `delay_ms` (or at once), replacing one armed
/// (later or sooner) unless `keep` says an armed one stands.
void arm_ask(self_ptr self, const std::string& key, int64_t delay_ms,
             bool keep = true) {
  auto& st = self->state;
  auto& line = st.permits[key];
  if (line.asking || (keep && line.armed != 0))
    return;
  line.armed = ++st.permit_generation;
  if (delay_ms <= 0)
    self->send(self, permit_atom::value, key, line.armed);
  else
    self->delayed_send(self, std::chrono::milliseconds{delay_ms},
                       permit_atom::value, key, line.armed);
}

/// Notes `pe`'s (class, type) in `line` (unless there).
void add_pair(permit_line& line, const parked_entry& pe) {
  for (const auto& [cls, type] : line.pairs)
    if (cls == pe.resource_class && type == pe.type)
      return;
  line.pairs.emplace_back(pe.resource_class, pe.type);
}

/// Per resource class of the jobs waiting behind `key`, how many more of
/// them this coordinator could run now or as soon as its workers free: its
/// workers (slots, busy or idle) of the class that take the jobs' type, less
/// its attempts of the key running on those workers and its grants of the
/// class not started yet (`granted`: the waiting jobs it holds a permit
/// for). The (class, type) pairs are those parked behind the key since its
/// line was made (permit_line::pairs: a few, kept as jobs park, instead of
/// a walk of the line at every ask; one that waits no more only counts
/// workers no job of the line is named for). Attempts on slots the queue
/// was never offered (adopted after a restart) are not subtracted: their
/// slots are not counted either.
std::map<std::string, size_t>
worker_budget(const queue_state& st, const std::string& key,
              const permit_line& line,
              const std::vector<const parked_entry*>& granted) {
  std::map<std::string, size_t> budget; // class -> workers, then budget
  std::set<caf::actor_addr> capable;
  for (const auto& [addr, w] : st.workers)
    for (const auto& [cls, type] : line.pairs)
      if (w.runs(cls, type)) {
        ++budget[cls];
        capable.insert(addr);
        break;
      }
  auto spend = [&budget](const std::string& cls) {
    auto b = budget.find(cls);
    if (b != budget.end() && b->second > 0)
      --b->second;
  };
  for (const auto& [job_id, r] : st.running) {
    bool of_key = false;
    for (size_t i = 0; i < r.slots.size; ++i)
      of_key = of_key || r.slots.key[i] == key;
    if (of_key && capable.count(r.worker.address()) > 0)
      spend(r.resource_class);
  }
  for (const auto* pe : granted)
    spend(pe->resource_class);
  return budget;
}

} // namespace

bool needs_permit(const queue_state& st, const std::string& key) {
  // Own keys (a leading NUL) live in one partition: its owner counts them.
  return st.opts.cluster_type_limits && !key.empty() && key[0] != '\0';
}

namespace {

/// Whether `e` keeps a permit of its keys_of()[i] of this generation.
bool kept(const queue_state& st, const ready_entry& e, size_t i) {
  return i < 8 && (e.permits >> i & 1U) != 0
         && e.permit_gen == st.grants_generation;
}

void keep(queue_state& st, ready_entry& e, size_t i) {
  if (i >= 8)
    return;
  if (e.permit_gen != st.grants_generation) {
    e.permits = 0;
    e.permit_gen = st.grants_generation;
  }
  e.permits = static_cast<uint8_t>(e.permits | (1U << i));
}

} // namespace

bool holds_permit(const queue_state& st, const std::string& key,
                  const ready_entry& e, size_t i) {
  if (!needs_permit(st, key))
    return false;
  if (kept(st, e, i))
    return true;
  auto l = st.permits.find(key);
  return l != st.permits.end() && l->second.granted.count(e.job_id) > 0;
}

void keep_permit(queue_state& st, const std::string& key, ready_entry& e,
                 size_t i) {
  if (!needs_permit(st, key))
    return;
  auto l = st.permits.find(key);
  if (l == st.permits.end() || l->second.granted.erase(e.job_id) == 0)
    return;
  keep(st, e, i);
}

bool take_slot(self_ptr self, const std::string& key, uint32_t limit,
               ready_entry& e, size_t i) {
  auto& st = self->state;
  if (!needs_permit(st, key))
    return st.concurrency.take(key, limit);
  auto line = st.permits.find(key);
  bool granted
      = line != st.permits.end() && line->second.granted.count(e.job_id) > 0;
  if (!granted && !kept(st, e, i)) {
    want_permits(self, key);
    return false;
  }
  if (!st.concurrency.take(key, limit))
    return false;
  if (granted)
    line->second.granted.erase(e.job_id);
  // Kept with the entry: if it gives the slot back before it starts (a
  // rate limit without a token, a breaker), the permit still counts, and
  // it takes the slot again without asking or waiting behind the line.
  keep(st, e, i);
  return true;
}

void note_parked(queue_state& st, const std::string& key,
                 const parked_entry& pe) {
  if (needs_permit(st, key))
    add_pair(st.permits[key], pe);
}

void want_permits(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto& line = st.permits[key];
  auto now = flow_now(self);
  arm_ask(self, key, line.quiet_until > now ? line.quiet_until - now : 0);
}

void slot_freed(self_ptr self, const std::string& key) {
  if (!needs_permit(self->state, key))
    return;
  // An attempt of ours ended: its permit counts no more (its outcome is
  // written). Asked at once, whatever the refused delay.
  auto l = self->state.permits.find(key);
  if (l == self->state.permits.end())
    return;
  l->second.quiet_until = 0;
  if (l->second.armed != 0)
    arm_ask(self, key, 0, false); // sooner than the armed one, instead of it
}

void forget_idle(self_ptr self, const std::string& key) {
  auto& st = self->state;
  auto l = st.permits.find(key);
  if (l == st.permits.end() || l->second.asking || l->second.armed != 0
      || !l->second.granted.empty())
    return;
  auto p = st.parked.find(key);
  if (p == st.parked.end() || p->second.empty())
    st.permits.erase(l);
}

void forget_grants(self_ptr self) {
  // A grant is good under the lease it was granted under: after a change
  // of partitions each is asked again (the store answers held ones held),
  // and the permits entries keep are of an older generation.
  auto& st = self->state;
  for (auto& [key, line] : st.permits)
    line.granted.clear();
  ++st.grants_generation;
}

void ask_permits(self_ptr self, const std::string& key, uint64_t generation) {
  auto& st = self->state;
  auto l = st.permits.find(key);
  if (l == st.permits.end() || l->second.armed != generation)
    return; // replaced by another ask, or the line was dropped
  auto& line = l->second;
  line.armed = 0;
  auto p = st.parked.find(key);
  if (p == st.parked.end() || p->second.empty()) {
    line.granted.clear(); // nobody waits: nothing to keep
    forget_idle(self, key);
    return;
  }
  // Grants of jobs that no longer wait here are dropped (their permits
  // lapse by themselves when the job changes). The granted jobs wait at
  // the head of the line (they go as soon as a worker is free): the walk
  // ends once all are met, not at the end of a line of thousands.
  std::vector<const parked_entry*> granted_waiting;
  if (!line.granted.empty()) {
    std::unordered_set<std::string_view> met;
    for (const auto& pe : p->second) {
      if (met.size() == line.granted.size())
        break;
      if (line.granted.count(pe.entry.job_id) > 0
          && met.insert(pe.entry.job_id).second)
        granted_waiting.push_back(&pe);
    }
    if (met.size() < line.granted.size())
      for (auto g = line.granted.begin(); g != line.granted.end();)
        g = met.count(*g) == 0 ? line.granted.erase(g) : std::next(g);
  }
  auto limit = st.concurrency.limit_of(key);
  auto taken = st.concurrency.running(key) + line.granted.size();
  if (taken >= limit)
    return; // our own slots are full or granted: the next end asks again
  // New permits only for jobs this coordinator has workers for (busy or
  // idle, less those its running and granted jobs of the key use), first
  // come first: one that has none asks for none and is no waiter, so that
  // it never holds permits the others' idle workers could use. Asked again
  // while they wait (an attempt of the key ending here asks at once).
  auto budget = worker_budget(st, key, line, granted_waiting);
  size_t budgeted = 0;
  for (const auto& [cls, n] : budget)
    budgeted += n;
  auto room = std::min({limit - taken, budgeted, most_ids});
  // The jobs given new permits, in order: the walk ends once `room` are
  // named, so an ask costs the jobs it can start, not the line. A job
  // granted one whose answer was lost, or one from before a change of
  // partitions, waits near the head, where asks name: the store answers it
  // held. One that left for a rate limit or a breaker keeps its permit in
  // its entry (keep_permit).
  std::vector<std::string> ids;
  std::unordered_set<std::string_view> named; // a job may wait twice
  bool walked_all = true;
  for (const auto& pe : p->second) {
    if (ids.size() >= room) {
      walked_all = false;
      break;
    }
    if (line.granted.count(pe.entry.job_id) > 0
        || !named.insert(pe.entry.job_id).second)
      continue;
    auto b = budget.find(pe.resource_class);
    if (b != budget.end() && b->second > 0) {
      --b->second;
      ids.push_back(pe.entry.job_id);
    }
  }
  if (walked_all) {
    // Fewer named than the budget: perhaps for a (class, type) that waits
    // no more. The pairs are made again from the line (so the next asks
    // stop where they should, not at its end).
    line.pairs.clear();
    for (const auto& pe : p->second)
      add_pair(line, pe);
  }
  auto most_new = static_cast<uint32_t>(ids.size());
  if (most_new == 0) {
    arm_ask(self, key, refused_delay_ms);
    return;
  }
  line.asking = true;
  self->request(st.deps.store, store_timeout, permit_atom::value, key, limit,
                most_new, std::move(ids))
      .then(
          [self, key](std::vector<std::string>& granted) {
            auto& st = self->state;
            auto& line = st.permits[key];
            line.asking = false;
            line.failures.reset();
            line.quiet_until = flow_now(self) + refused_delay_ms;
            for (auto& id : granted)
              line.granted.insert(std::move(id));
            // Wakes the granted (in order); one not granted asks again,
            // after the refused delay.
            wake_parked(self, key);
            forget_idle(self, key);
          },
          [self, key](caf::error& err) {
            auto& st = self->state;
            auto& line = st.permits[key];
            line.asking = false;
            auto delay = line.failures.next(draw(self)).count();
            line.quiet_until = flow_now(self) + delay;
            auto now = now_ms(self);
            if (now - st.permit_failure_logged_ms >= 10000) {
              st.permit_failure_logged_ms = now;
              log_failure("asking for concurrency permits", err, {},
                          log::level::warn);
            }
            arm_ask(self, key, delay);
          });
}

} // namespace drover::queue_detail
