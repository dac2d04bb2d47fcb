// The PostgreSQL store's group commit: operations accepted into batches,
// one transaction in flight at a time, its commit, its partial failure
// (isolated data errors) or whole failure, and reconnecting after a lost
// connection. See actors/detail/pg_store_state.hpp.

#include "actors/detail/pg_store_state.hpp"

#include "runtime/backoff.hpp"
#include "runtime/job_state.hpp"

#include <algorithm>

namespace drover::pg_store_detail {

caf::error unavailable(const std::string& why) {
  return make_error(errc::unavailable, "the job store is unavailable: " + why);
}

void log(const std::string& what, log::level lv) {
  log::write(lv, "store", {}, what);
}

/// The wait before the next reconnect attempt (runtime/backoff.hpp: from
/// reconnect_min, doubling up to reconnect_max, equal jitter, never below
/// reconnect_min).
std::chrono::milliseconds reconnect_wait(self_ptr self) {
  auto& st = self->state;
  backoff_schedule schedule{st.cfg.reconnect_min, st.cfg.reconnect_max, 2.0,
                            0.5, st.cfg.reconnect_min};
  return schedule.delay(st.reconnect_failures++, jitter_draw());
}

/// What a client is told when PostgreSQL refused an operation's data: which
/// kind of value, never PostgreSQL's words (they quote the bytes, and a
/// batch's error may quote another request's).
caf::error refused_data(const caf::error& detail) {
  auto state = pg::sqlstate_of(detail);
  if (state == "23505"
      || (state.empty()
          && (is(detail, errc::conflict) || is(detail, errc::not_found))))
    return make_error(errc::conflict,
                      "the job was changed by another writer meanwhile; "
                      "read it again before retrying");
  std::string why;
  if (state == "22021")
    why = "a text field (job id, tenant, type or idempotency key) is not "
          "valid UTF-8";
  else if (state.empty()
           && describe(detail).find("NUL byte") != std::string::npos)
    why = "a text field (job id, tenant, type or idempotency key) holds a "
          "NUL byte";
  else if (state.substr(0, 2) == "54")
    why = "a value is too large for the job store (e.g. a very long "
          "idempotency key)";
  else
    why = "the job store refused a value of this request";
  return make_error(errc::invalid_value, why);
}

/// The error a client gets for a failed store operation: Drover's own
/// refusals with their own text; anything PostgreSQL said is replaced by a
/// message without SQL, SQLSTATE or data (the caller logs the detail).
caf::error for_client(const caf::error& err) {
  switch (pg::failure_class_of(err)) {
    case pg::failure_class::connection:
      return unavailable("PostgreSQL is unreachable; retry later");
    case pg::failure_class::data:
      return refused_data(err);
    case pg::failure_class::other:
      break;
  }
  if (is(err, errc::not_owner))
    return unavailable("this node no longer coordinates the database's jobs");
  if (describe(err).find("partition lease expired") != std::string::npos)
    return unavailable("this node's coordinator lease awaits renewal; retry "
                       "later");
  return unavailable("PostgreSQL could not complete the write; retry later");
}

/// A read's error for its client: not_found and limits as they are,
/// everything else as for_client (logged).
caf::error read_error_for_client(const caf::error& err) {
  if (pg::sqlstate_of(err).empty()
      && (is(err, errc::not_found) || is(err, errc::invalid_request)))
    return err;
  log("a read failed: " + describe(err));
  return for_client(err);
}

/// The node's coordinator lease is gone: says so once, then leaves what to
/// do to the node (on_deposed: it exits). Writes stay refused by the fence.
void deposed(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  if (st.deposed)
    return;
  st.deposed = true;
  log("deposed: " + describe(err));
  if (st.cfg.on_deposed)
    st.cfg.on_deposed(describe(err));
}

/// Whether the store writes `partition` (under its current fence).
bool owns(const pg_store_state& st, int32_t partition) {
  return !st.fence || st.fence->epoch_of(partition) >= 0;
}

bool owns_job(const pg_store_state& st, const std::string& job_id) {
  return owns(st, partition_of_id(job_id));
}

/// What a write of a partition the store does not hold is told.
caf::error not_owned(int32_t partition) {
  return make_error(errc::not_owner,
                    "partition " + std::to_string(partition)
                        + " is not coordinated by this node (any more)");
}

/// A fresh pending batch, under the current fence.
void open_pending(pg_store_state& st) {
  st.pending = batch{};
  st.pending.generation = st.next_generation++;
  st.pending.fence = st.fence;
  st.pending.fence_seq = st.fence_seq;
}

/// Whether `err` (not_owner, from a write of `job_id` checked under
/// `written_under`) means that this node was deposed: the job's partition
/// is still ours at the epoch the write was checked with, so another
/// coordinator took it over. A partition the store has given up since
/// (partitions_atom) is no deposition.
bool deposes(const pg_store_state& st, const fence_ptr& written_under,
             const std::string& job_id) {
  if (!written_under || !st.fence)
    return true;
  auto p = partition_of_id(job_id);
  auto epoch = written_under->epoch_of(p);
  return epoch >= 0 && st.fence->epoch_of(p) == epoch;
}

/// Answers the partitions changes that nothing written under an earlier
/// fence holds back any more: no batch of it waits or is in flight (its
/// commit, its failure and an outcome check after a lost connection are
/// all part of its flight), and no direct write of it is in flight.
void settle_changes(self_ptr self) {
  auto& st = self->state;
  while (!st.changes.empty()) {
    auto seq = st.changes.front().fence_seq;
    bool earlier
        = (st.inflight && st.inflight->fence_seq < seq)
          || (!st.sealed.empty() && st.sealed.front().fence_seq < seq)
          || (!st.pending.empty() && st.pending.fence_seq < seq)
          || (!st.direct_writes.empty() && *st.direct_writes.begin() < seq);
    if (earlier)
      return;
    auto rp = std::move(st.changes.front().rp);
    st.changes.pop_front();
    rp.deliver(ok_atom::value);
  }
}

/// Keeps the cache within max_cached_jobs: once it is 10 % above, evicts
/// down to 90 % (so the scans are amortized over many commits), finished
/// jobs first, then any job without uncommitted events. An evicted job is
/// read from PostgreSQL again when it is next needed (with_loaded, get):
/// the cache is an accelerator, never the truth, so a deep queue costs
/// memory only up to the bound.
void evict_if_needed(self_ptr self) {
  auto& st = self->state;
  auto max = st.cfg.max_cached_jobs;
  if (st.cache.size() <= max + max / 10)
    return;
  auto low = max - max / 10;
  for (int pass = 0; pass < 2 && st.cache.size() > low; ++pass) {
    for (auto i = st.cache.begin();
         i != st.cache.end() && st.cache.size() > low;) {
      bool evictable = st.dirty.count(i->first) == 0
                       && st.loading.count(i->first) == 0
                       && (pass == 1 || is_terminal(i->second.status));
      if (evictable) {
        const auto& spec = i->second.spec;
        if (!spec.idempotency_key.empty())
          st.keys.erase({spec.tenant, spec.idempotency_key});
        i = st.cache.erase(i);
      } else {
        ++i;
      }
    }
  }
}

/// Forgets what the store accepted for job `id` but could not commit; the
/// job is read from PostgreSQL again when next needed.
void forget(self_ptr self, const std::string& id) {
  auto& st = self->state;
  auto i = st.cache.find(id);
  if (i != st.cache.end()) {
    const auto& spec = i->second.spec;
    if (!spec.idempotency_key.empty())
      st.keys.erase({spec.tenant, spec.idempotency_key});
    st.cache.erase(i);
  }
  st.dirty.erase(id);
}

/// Forgets everything the store accepted but could not commit.
void discard(self_ptr self, const batch& b) {
  for (const auto& id : b.submitted)
    forget(self, id);
  for (const auto& id : b.touched)
    forget(self, id);
}

/// After `b` committed: its jobs are clean unless a later batch wrote them
/// again (their dirty generation is then that batch's).
void clear_dirty(pg_store_state& st, const batch& b) {
  auto clean = [&](const std::string& id) {
    auto d = st.dirty.find(id);
    if (d != st.dirty.end() && d->second == b.generation)
      st.dirty.erase(d);
  };
  for (const auto& id : b.submitted)
    clean(id);
  for (const auto& id : b.touched)
    clean(id);
}

/// Fails the batches that wait behind a failed one (they were validated on
/// top of it) with `err`.
void fail_later(self_ptr self, const caf::error& err) {
  auto& st = self->state;
  std::deque<batch> later = std::move(st.sealed);
  st.sealed.clear();
  later.push_back(std::move(st.pending));
  open_pending(st);
  for (const auto& l : later)
    discard(self, l);
  for (auto& l : later)
    for (auto& f : l.completions)
      f(err, nullptr);
}

/// `err`: what the clients of the batch are told. `reconnect`: the
/// connection is gone (failure_class::connection).
void finish_batch(self_ptr self, std::unique_ptr<batch> b,
                  const caf::error& err, const pg::write_result* result,
                  bool reconnect = true) {
  auto& st = self->state;
  if (err) {
    // The waiting batches were validated on top of the failed one: they go
    // too. Records are reloaded from PostgreSQL on their next use.
    discard(self, *b);
    for (auto& f : b->completions)
      f(err, nullptr);
    fail_later(self, err);
    if (reconnect)
      start_reconnect(self);
    return;
  }
  clear_dirty(st, *b);
  for (auto& f : b->completions)
    f(caf::none, result);
  evict_if_needed(self);
}

/// The batch committed except for the jobs in `result.failed`: their
/// operations fail (a data error: that operation's own fault, with a
/// client error; otherwise the error that stopped the isolation), the
/// others succeed.
void finish_partial(self_ptr self, std::unique_ptr<batch> b,
                    const pg::isolated_write_result& result) {
  auto& st = self->state;
  std::unordered_map<std::string, caf::error> refused;
  bool lost = false;
  for (const auto& [job, err] : result.failed) {
    lost = lost || pg::failure_class_of(err) == pg::failure_class::connection;
    // The detail (PostgreSQL's words, the bytes) stays in the log.
    log("job " + job + " not written: " + describe(err));
    if (is(err, errc::not_owner) && !deposes(st, b->fence, job)) {
      // A partition this store has given up (partitions_atom): no news.
      refused.emplace(job, not_owned(partition_of_id(job)));
      continue;
    }
    if (is(err, errc::not_owner))
      deposed(self, err);
    refused.emplace(job, for_client(err));
  }
  log("a batch of " + std::to_string(b->completions.size()) + " operations: "
      + std::to_string(refused.size()) + " jobs refused, the rest committed ("
      + std::to_string(result.transactions) + " transactions)");
  // Batches waiting behind this one that build on a refused job were
  // validated on state that never committed: they fail whole (rare: nobody
  // knows a refused job's id but its own submitter).
  auto builds_on_refused = [&refused](const batch& l) {
    for (const auto& id : l.submitted)
      if (refused.count(id) > 0)
        return true;
    for (const auto& id : l.touched)
      if (refused.count(id) > 0)
        return true;
    return false;
  };
  bool later = builds_on_refused(st.pending);
  for (const auto& l : st.sealed)
    later = later || builds_on_refused(l);
  for (const auto& kv : refused)
    forget(self, kv.first);
  clear_dirty(st, *b);
  for (size_t i = 0; i < b->completions.size(); ++i) {
    const caf::error* err = nullptr;
    for (const auto& job : b->op_jobs[i])
      if (auto r = refused.find(job); r != refused.end()) {
        err = &r->second;
        break;
      }
    if (err != nullptr)
      b->completions[i](*err, nullptr);
    else
      b->completions[i](caf::none, &result.committed);
  }
  if (later)
    fail_later(self, unavailable("an operation it depended on was refused; "
                                 "retry"));
  if (lost)
    start_reconnect(self);
  evict_if_needed(self);
}

/// The batch failed whole with `err` (a connection- or other-class error:
/// data errors are isolated by the writer).
void fail_batch(self_ptr self, std::unique_ptr<batch> b,
                const caf::error& err) {
  log("a batch of " + std::to_string(b->completions.size())
      + " operations failed: " + describe(err));
  if (is(err, errc::not_owner)) {
    auto& st = self->state;
    auto ours
        = [&](const std::string& job) { return deposes(st, b->fence, job); };
    if (std::none_of(b->submitted.begin(), b->submitted.end(), ours)
        && std::none_of(b->touched.begin(), b->touched.end(), ours)) {
      // Only partitions this store has given up since.
      auto first = !b->submitted.empty() ? b->submitted.front()
                   : !b->touched.empty() ? *b->touched.begin()
                                         : std::string{};
      finish_batch(self, std::move(b), not_owned(partition_of_id(first)),
                   nullptr, false);
      return;
    }
    deposed(self, err);
  }
  auto lost = pg::failure_class_of(err) == pg::failure_class::connection;
  finish_batch(self, std::move(b), for_client(err), nullptr, lost);
}

/// What `b` writes: its events, and the records of its jobs as the cache
/// holds them. Exact only while `b` is the newest batch (no later batch
/// has touched the cache yet): when it leaves directly, or when sealed.
std::shared_ptr<pg::write_batch> snapshot(self_ptr self, const batch& b) {
  auto& st = self->state;
  auto wb = std::make_shared<pg::write_batch>();
  std::set<std::string> new_jobs(b.submitted.begin(), b.submitted.end());
  for (const auto& id : b.submitted)
    wb->submits.push_back(st.cache.at(id));
  for (const auto& id : b.touched)
    if (new_jobs.count(id) == 0)
      wb->updates.push_back(st.cache.at(id));
  wb->events = b.events;
  for (const auto& jobs : b.op_jobs)
    if (jobs.size() > 1)
      wb->linked.push_back(jobs);
  return wb;
}

void send_next(self_ptr self);

/// Sends the next batch if none is in flight, then answers the partitions
/// changes that no longer wait for anything.
void flush(self_ptr self) {
  send_next(self);
  settle_changes(self);
}

void send_next(self_ptr self) {
  auto& st = self->state;
  if (st.inflight)
    return;
  std::unique_ptr<batch> b;
  if (!st.sealed.empty()) {
    b = std::make_unique<batch>(std::move(st.sealed.front()));
    st.sealed.pop_front();
  } else if (!st.pending.empty()) {
    b = std::make_unique<batch>(std::move(st.pending));
    open_pending(st);
  } else {
    return;
  }
  auto shared_wb = b->frozen ? std::move(b->frozen) : snapshot(self, *b);
  auto fence = b->fence;
  st.inflight = std::move(b);
  self->request(st.writer, st.cfg.io_timeout, write_atom::value, *shared_wb,
                fence)
      .then(
          [self](pg::isolated_write_result& result) {
            auto b = std::move(self->state.inflight);
            if (result.failed.empty())
              finish_batch(self, std::move(b), caf::none, &result.committed);
            else
              finish_partial(self, std::move(b), result);
            flush(self);
          },
          [self, shared_wb](caf::error& err) {
            auto& st = self->state;
            if (describe(err).find("outcome unknown") == std::string::npos) {
              auto b = std::move(st.inflight);
              fail_batch(self, std::move(b), err);
              flush(self);
              return;
            }
            log("commit outcome unknown, asking PostgreSQL: " + describe(err));
            // The connection broke during COMMIT: ask PostgreSQL what happened.
            self->request(st.writer, st.cfg.io_timeout, committed_atom::value,
                          *shared_wb)
                .then(
                    [self](bool committed) {
                      auto b = std::move(self->state.inflight);
                      if (committed) {
                        pg::write_result none;
                        finish_batch(self, std::move(b), caf::none, &none);
                      } else {
                        finish_batch(
                            self, std::move(b),
                            unavailable("the transaction did not commit"),
                            nullptr);
                      }
                      flush(self);
                    },
                    [self](caf::error& err2) {
                      log("commit outcome still unknown: " + describe(err2));
                      auto b = std::move(self->state.inflight);
                      finish_batch(
                          self, std::move(b),
                          unavailable("commit outcome unknown; retry with "
                                      "the same idempotency key"),
                          nullptr);
                      flush(self);
                    });
          });
}

/// Adds an operation to the pending batch: `jobs` are the jobs whose
/// commit it needs (its own writes, or the job it waits for).
void enqueue_op(self_ptr self, std::vector<std::string> jobs,
                completion_fn done) {
  auto& st = self->state;
  st.pending.completions.push_back(std::move(done));
  st.pending.op_jobs.push_back(std::move(jobs));
  if (st.hold)
    return; // a batch submit in progress: it flushes when complete
  if (st.pending.completions.size() >= st.cfg.max_batch) {
    // Full: later ops open the next batch, so a transaction never holds
    // more than max_batch ops (max_batch = 1: one transaction per op).
    // Without this, a busy store folded everything that arrived during a
    // commit into the next transaction, whatever max_batch said.
    st.pending.frozen = snapshot(self, st.pending);
    st.sealed.push_back(std::move(st.pending));
    open_pending(st);
  }
  // Idle: commit at once. Busy: the op rides with a later batch, which
  // leaves as soon as the ones ahead of it have committed.
  flush(self);
}

void start_reconnect(self_ptr self) {
  auto& st = self->state;
  st.available = false;
  if (st.reconnecting)
    return;
  st.reconnecting = true;
  st.reconnect_failures = 0;
  log("PostgreSQL unreachable; writes are refused until it is back",
      log::level::error);
  self->delayed_send(self, reconnect_wait(self), reconnect_atom::value);
}

void try_reconnect(self_ptr self) {
  auto& st = self->state;
  self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
      .then(
          [self](ok_atom) {
            auto& st = self->state;
            st.available = true;
            st.reconnecting = false;
            log("PostgreSQL is back; accepting writes again", log::level::info);
          },
          [self](caf::error& err) {
            // start_reconnect logged the outage at error level; each failed
            // attempt only at debug, or a long outage floods the log.
            log("reconnect attempt failed: " + describe(err),
                log::level::debug);
            self->delayed_send(self, reconnect_wait(self),
                               reconnect_atom::value);
          });
}

} // namespace drover::pg_store_detail
