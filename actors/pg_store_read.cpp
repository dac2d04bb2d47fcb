// The PostgreSQL store's accepting side: jobs loaded into the cache (reads
// batched like commits), submits and appends validated against it and put
// into the pending batch. See actors/detail/pg_store_state.hpp.

#include "actors/detail/pg_store_state.hpp"

#include "runtime/job_state.hpp"

#include <algorithm>

namespace drover::pg_store_detail {

void send_loads(self_ptr self);

/// Reads `id` from PostgreSQL (batched with the other loads) into the
/// cache, unless the cache learned of it meanwhile, then calls `w`.
void load(self_ptr self, const std::string& id, load_waiter w) {
  auto& st = self->state;
  auto [entry, fresh] = st.loading.try_emplace(id);
  entry->second.push_back(std::move(w));
  if (fresh) {
    st.load_queue.push_back(id);
    send_loads(self);
  }
}

/// Hands each waiting load its outcome.
void loaded(self_ptr self, const std::vector<std::string>& ids,
            std::vector<job_record>* recs, const caf::error& err) {
  auto& st = self->state;
  std::unordered_map<std::string_view, const job_record*> found;
  if (recs != nullptr)
    for (const auto& rec : *recs)
      found.emplace(rec.job_id, &rec);
  for (const auto& id : ids) {
    const job_record* rec = nullptr;
    if (auto f = found.find(id); f != found.end()) {
      rec = f->second;
      // Never overwrite newer accepted state; never keep a job of a
      // partition the store does not write (its owner changes it: the
      // next read must see PostgreSQL).
      if (owns_job(st, id) && st.cache.emplace(id, *rec).second
          && !rec->spec.idempotency_key.empty())
        st.keys.emplace(
            std::make_pair(rec->spec.tenant, rec->spec.idempotency_key), id);
    }
    auto l = st.loading.find(id);
    if (l == st.loading.end())
      continue;
    auto waiters = std::move(l->second);
    st.loading.erase(l);
    for (auto& w : waiters)
      w(rec, err);
  }
}

/// A read came back: the next one, or, when none is left (no waiter
/// still needs a job loaded earlier), the cache bound.
void after_loads(self_ptr self) {
  if (self->state.load_queue.empty())
    evict_if_needed(self);
  else
    send_loads(self);
}

void send_loads(self_ptr self) {
  auto& st = self->state;
  if (st.load_inflight || st.load_queue.empty())
    return;
  std::vector<std::string> ids;
  if (st.load_queue.size() <= max_load_batch) {
    ids.swap(st.load_queue);
  } else {
    auto end = st.load_queue.begin() + max_load_batch;
    ids.assign(std::make_move_iterator(st.load_queue.begin()),
               std::make_move_iterator(end));
    st.load_queue.erase(st.load_queue.begin(), end);
  }
  st.load_inflight = true;
  auto shared = std::make_shared<std::vector<std::string>>(std::move(ids));
  self->request(st.reader, st.cfg.io_timeout, get_atom::value, *shared)
      .then(
          [self, shared](std::vector<job_record>& recs) {
            self->state.load_inflight = false;
            loaded(self, *shared, &recs, caf::error{});
            after_loads(self);
          },
          [self, shared](caf::error& err) {
            self->state.load_inflight = false;
            loaded(self, *shared, nullptr, err);
            after_loads(self);
          });
}

/// Makes sure every job in `ids` is in the cache, then runs `then`; runs
/// `fail` with the first load error instead.
void with_loaded(self_ptr self, std::vector<std::string> ids,
                 std::function<void()> then,
                 std::function<void(caf::error)> fail) {
  auto& st = self->state;
  std::vector<std::string> missing;
  for (auto& id : ids)
    if (st.cache.count(id) == 0)
      missing.push_back(id);
  if (missing.empty()) {
    then();
    return;
  }
  struct gate {
    size_t left;
    caf::error err;
    std::function<void()> then;
    std::function<void(caf::error)> fail;
  };
  auto g = std::make_shared<gate>(
      gate{missing.size(), {}, std::move(then), std::move(fail)});
  for (auto& id : missing)
    load(self, id, [g, id](const job_record* rec, const caf::error& err) {
      if (err && !g->err)
        g->err = err;
      else if (rec == nullptr && !g->err)
        g->err = make_error(errc::not_found, "no job '" + id + "'");
      if (--g->left == 0) {
        if (g->err)
          g->fail(g->err);
        else
          g->then();
      }
    });
}

/// Validates and accepts `events` (all loaded); answers via `rp` after the
/// commit.
void accept_append(self_ptr self, std::vector<job_event> events,
                   caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  for (const auto& ev : events)
    if (!owns_job(st, ev.job_id)) {
      rp.deliver(not_owned(partition_of_id(ev.job_id)));
      return;
    }
  std::map<std::string, job_record> staged;
  for (auto& ev : events) {
    auto s = staged.find(ev.job_id);
    if (s == staged.end()) {
      auto c = st.cache.find(ev.job_id);
      if (c == st.cache.end()) {
        rp.deliver(make_error(errc::not_found, "no job '" + ev.job_id + "'"));
        return;
      }
      s = staged.emplace(ev.job_id, c->second).first;
    }
    if (ev.sequence == 0)
      ev.sequence = s->second.sequence + 1;
    if (auto err = apply(s->second, ev)) {
      rp.deliver(std::move(err));
      return;
    }
  }
  auto gen = st.pending.generation;
  for (auto& kv : staged) {
    st.cache[kv.first] = std::move(kv.second);
    st.dirty[kv.first] = gen;
    st.pending.touched.insert(kv.first);
  }
  std::vector<std::string> jobs;
  for (auto& kv : staged)
    jobs.push_back(kv.first);
  for (auto& ev : events)
    st.pending.events.push_back(std::move(ev));
  enqueue_op(self, std::move(jobs),
             [rp](const caf::error& err, const pg::write_result*) mutable {
               if (err)
                 rp.deliver(err);
               else
                 rp.deliver(ok_atom::value);
             });
}

/// An idempotency key was already taken: same spec -> that job, otherwise
/// a conflict.
void answer_duplicate(self_ptr self, const job_spec& spec, submit_done done) {
  auto& st = self->state;
  self->request(st.reader, st.cfg.io_timeout, key_atom::value, spec.tenant,
                spec.idempotency_key)
      .then(
          [spec, done](job_record& existing) {
            if (existing.spec == spec)
              done(std::move(existing));
            else
              done(make_error(errc::conflict,
                              "idempotency key '" + spec.idempotency_key
                                  + "' is taken by job " + existing.job_id
                                  + " with a different spec"));
          },
          [done](caf::error& err) { done(read_error_for_client(err)); });
}

/// Accepts one `submitted` event into the pending batch (or answers an
/// idempotent duplicate); `done` runs once its batch committed or failed.
void submit_one(self_ptr self, job_event ev, submit_done done) {
  auto& st = self->state;
  if (!st.available)
    return done(unavailable("reconnecting to PostgreSQL"));
  if (ev.kind != event_kind::submitted)
    return done(
        make_error(errc::invalid_value, "submit needs a 'submitted' event"));
  if (!owns_job(st, ev.job_id))
    return done(not_owned(partition_of_id(ev.job_id)));
  const auto& spec = ev.spec;
  if (!spec.idempotency_key.empty()) {
    auto k = st.keys.find({spec.tenant, spec.idempotency_key});
    if (k != st.keys.end()) {
      auto existing_id = k->second;
      auto reply = [self, existing_id, spec, done]() {
        auto& st = self->state;
        auto c = st.cache.find(existing_id);
        if (c == st.cache.end()) {
          answer_duplicate(self, spec, done);
          return;
        }
        if (c->second.spec == spec)
          done(c->second);
        else
          done(make_error(errc::conflict,
                          "idempotency key '" + spec.idempotency_key
                              + "' is taken by job " + existing_id
                              + " with a different spec"));
      };
      if (st.dirty.count(existing_id) > 0) {
        // Not committed yet: answer once it is (or is not).
        enqueue_op(
            self, {existing_id},
            [reply, done](const caf::error& err, const pg::write_result*) {
              if (err)
                done(err);
              else
                reply();
            });
      } else {
        reply();
      }
      return;
    }
  }
  ev.sequence = 1;
  job_record rec;
  if (auto err = apply(rec, ev))
    return done(err);
  if (st.cache.count(ev.job_id) > 0)
    return done(
        make_error(errc::conflict, "job id '" + ev.job_id + "' exists"));
  auto id = ev.job_id;
  st.cache.emplace(id, rec);
  st.dirty[id] = st.pending.generation;
  if (!spec.idempotency_key.empty())
    st.keys.emplace(std::make_pair(spec.tenant, spec.idempotency_key), id);
  st.pending.submitted.push_back(id);
  st.pending.events.push_back(std::move(ev));
  enqueue_op(self, {id},
             [self, id, rec, done](const caf::error& err,
                                   const pg::write_result* result) {
               if (err) {
                 done(err);
                 return;
               }
               const auto& dups = result->duplicate_submits;
               if (std::find(dups.begin(), dups.end(), id) == dups.end()) {
                 done(rec);
                 return;
               }
               // Another node (or an earlier run) holds the key.
               auto& st = self->state;
               st.cache.erase(id);
               st.dirty.erase(id);
               st.keys.erase({rec.spec.tenant, rec.spec.idempotency_key});
               answer_duplicate(self, rec.spec, done);
             });
}

/// Accepts (or refuses) an append once its jobs are loaded.
void append(self_ptr self, std::vector<job_event> events,
            caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  if (!st.available) {
    rp.deliver(unavailable("reconnecting to PostgreSQL"));
    return;
  }
  // Refused before anything is read: a job of a partition the store does
  // not write is never loaded into its cache.
  std::vector<std::string> ids;
  for (const auto& ev : events) {
    if (!owns_job(st, ev.job_id)) {
      rp.deliver(not_owned(partition_of_id(ev.job_id)));
      return;
    }
    ids.push_back(ev.job_id);
  }
  auto shared = std::make_shared<std::vector<job_event>>(std::move(events));
  ++st.unaccepted;
  with_loaded(
      self, std::move(ids),
      [self, shared, rp] {
        accept_append(self, std::move(*shared), rp);
        append_settled(self);
      },
      [self, rp](caf::error err) mutable {
        rp.deliver(read_error_for_client(err));
        append_settled(self);
      });
}

/// A batch submit: every item in the pending batch, one transaction.
void submit_many(self_ptr self, std::vector<job_event> evs,
                 caf::typed_response_promise<std::vector<job_record>> rp) {
  auto& st = self->state;
  if (!st.available) {
    rp.deliver(unavailable("reconnecting to PostgreSQL"));
    return;
  }
  if (evs.empty()) {
    rp.deliver(std::vector<job_record>{});
    return;
  }
  struct collect {
    std::vector<job_record> out;
    size_t pending = 0;
    caf::error failed;
  };
  auto c = std::make_shared<collect>();
  c->out.resize(evs.size());
  c->pending = evs.size();
  // All items join the pending batch without sealing or flushing in
  // between, so they commit in one transaction.
  st.hold = true;
  for (size_t i = 0; i < evs.size(); ++i) {
    submit_one(self, std::move(evs[i]),
               [c, i, rp](caf::expected<job_record> r) mutable {
                 if (r) {
                   c->out[i] = std::move(*r);
                 } else if (is(r.error(), errc::unavailable)) {
                   c->failed = r.error();
                 } else {
                   auto& err = r.error();
                   auto& x = c->out[i];
                   x.error.code = to_string(static_cast<errc>(err.code()));
                   x.error.message = describe(err);
                   if (err.context().match_elements<std::string>())
                     x.error.message = err.context().get_as<std::string>(0);
                 }
                 if (--c->pending == 0) {
                   if (c->failed)
                     rp.deliver(c->failed);
                   else
                     rp.deliver(std::move(c->out));
                 }
               });
  }
  st.hold = false;
  flush(self);
}

} // namespace drover::pg_store_detail
