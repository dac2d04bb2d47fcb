#include "actors/pg_store.hpp"

#include "actors/detail/pg_store_state.hpp"
#include "actors/queue.hpp"
#include "runtime/concurrency.hpp"
#include "runtime/log_caf.hpp"

#include <caf/actor_system.hpp>

namespace drover {

namespace pg_store_detail {

namespace {

/// Asks the reader and answers through the store, instead of delegating:
/// the I/O actors only ever talk to the store. A detached actor that
/// answered clients itself could be kept alive past its end by a reply
/// parked on its way to a remote client (the node's network layer holds
/// the sender), and CAF waits for every detached actor to be destroyed
/// before the actor system can go: drover-node then hung on SIGTERM.
template <class T, class... Ts>
caf::result<T> ask_reader(self_ptr self, Ts... xs) {
  auto rp = self->make_response_promise<T>();
  self->request(self->state.reader, self->state.cfg.io_timeout, xs...)
      .then([rp](T& x) mutable { rp.deliver(std::move(x)); },
            [rp](caf::error& err) mutable {
              rp.deliver(read_error_for_client(err));
            });
  return rp;
}

/// A write that goes to `io` (the writer, or the permits' connection)
/// without the group-commit pipeline (control log, retention, permits):
/// sent under the current fence, counted until answered so that a
/// partitions change waits for it.
template <class T, class Ok, class Fail, class... Ts>
void direct_write_on(self_ptr self, const pg_io_actor& io, Ok ok, Fail fail,
                     Ts&&... xs) {
  auto& st = self->state;
  auto seq = st.fence_seq;
  st.direct_writes.insert(seq);
  auto done = [self, seq] {
    auto& st = self->state;
    st.direct_writes.erase(st.direct_writes.find(seq));
    settle_changes(self);
  };
  self->request(io, st.cfg.io_timeout, std::forward<Ts>(xs)...)
      .then(
          [ok, done](T& x) mutable {
            ok(x);
            done();
          },
          [fail, done](caf::error& err) mutable {
            fail(err);
            done();
          });
}

template <class T, class Ok, class Fail, class... Ts>
void direct_write(self_ptr self, Ok ok, Fail fail, Ts&&... xs) {
  direct_write_on<T>(self, self->state.writer, std::move(ok), std::move(fail),
                     std::forward<Ts>(xs)...);
}

pg_store_impl_actor::behavior_type pg_store_impl(self_ptr self,
                                                 pg_store_config cfg) {
  {
    auto& st = self->state;
    st.cfg = cfg;
    st.fence = cfg.fence;
    open_pending(st);
    st.writer = spawn_pg_io(self->system(), cfg.conninfo, true);
    // Both connections migrate (idempotent, under an advisory lock), so a
    // read never races the schema's creation.
    st.reader = spawn_pg_io(self->system(), cfg.conninfo, true);
    // The I/O actors live and die with the store.
    self->link_to(st.writer);
    self->link_to(st.reader);
    self->set_default_handler(log_and_drop);
    // Every error the store expects comes as a request's answer; one sent
    // on its own is logged, and the store goes on (CAF's default would
    // kill it).
    self->set_error_handler([](caf::error& err) {
      log::warn("store", "unexpected error message",
                {{"error", describe(err)}});
    });
    if (st.cfg.retain_finished.count() > 0)
      self->delayed_send(self, st.cfg.retention_interval,
                         retention_atom::value);
    // Learn early whether PostgreSQL is there (and migrate it).
    self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
        .then([](ok_atom) {},
              [self](caf::error& err) {
                log("cannot reach PostgreSQL: " + describe(err));
                start_reconnect(self);
              });
    return {
        [self](ping_atom) -> caf::result<ok_atom> {
          auto& st = self->state;
          if (!st.available)
            return unavailable("reconnecting to PostgreSQL");
          auto rp = self->make_response_promise<ok_atom>();
          self->request(st.writer, st.cfg.io_timeout, ping_atom::value)
              .then([rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                    [rp](caf::error& err) mutable {
                      log("ping failed: " + describe(err));
                      rp.deliver(for_client(err));
                    });
          return rp;
        },
        [self](submit_atom, job_event& ev) -> caf::result<job_record> {
          auto rp = self->make_response_promise<job_record>();
          admit(self, [self, ev = std::move(ev), rp]() mutable {
            submit_one(self, std::move(ev),
                       [rp](caf::expected<job_record> r) mutable {
                         if (r)
                           rp.deliver(std::move(*r));
                         else
                           rp.deliver(std::move(r.error()));
                       });
          });
          return rp;
        },
        [self](submit_atom, std::vector<job_event>& evs)
            -> caf::result<std::vector<job_record>> {
          auto rp = self->make_response_promise<std::vector<job_record>>();
          admit(self, [self, evs = std::move(evs), rp]() mutable {
            submit_many(self, std::move(evs), rp);
          });
          return rp;
        },
        [self](append_atom,
               std::vector<job_event>& events) -> caf::result<ok_atom> {
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, events = std::move(events), rp]() mutable {
            append(self, std::move(events), rp);
          });
          return rp;
        },
        [self](get_atom, const std::string& id) -> caf::result<job_record> {
          auto& st = self->state;
          auto c = st.cache.find(id);
          if (c != st.cache.end() && st.dirty.count(id) == 0)
            return c->second;
          auto rp = self->make_response_promise<job_record>();
          if (st.dirty.count(id) > 0 || !owns_job(st, id)) {
            // Uncommitted events: answer the committed state, uncached.
            // Another coordinator's job: it changes it, so always read it.
            self->request(st.reader, st.cfg.io_timeout, get_atom::value, id)
                .then(
                    [rp](job_record& rec) mutable {
                      rp.deliver(std::move(rec));
                    },
                    [rp](caf::error& err) mutable {
                      rp.deliver(read_error_for_client(err));
                    });
            return rp;
          }
          // Not cached: read it with the other loads and keep it (the job
          // supervisor's get is followed by appends that need it).
          load(self, id,
               [rp, id](const job_record* rec, const caf::error& err) mutable {
                 if (err)
                   rp.deliver(read_error_for_client(err));
                 else if (rec == nullptr)
                   rp.deliver(
                       make_error(errc::not_found, "no job '" + id + "'"));
                 else
                   rp.deliver(*rec);
               });
          return rp;
        },
        [self](events_atom,
               const std::string& id) -> caf::result<std::vector<job_event>> {
          return ask_reader<std::vector<job_event>>(self, events_atom::value,
                                                    id);
        },
        [self](events_atom, const std::string& id, uint64_t after,
               uint32_t limit) -> caf::result<std::vector<job_event>> {
          if (auto err = check_events_limit(limit))
            return err;
          return ask_reader<std::vector<job_event>>(self, events_atom::value,
                                                    id, after, limit);
        },
        [self](list_atom,
               const job_query& q) -> caf::result<std::vector<job_record>> {
          if (q.limit == 0 || q.limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          return ask_reader<std::vector<job_record>>(self, list_atom::value, q);
        },
        [self](recover_atom, int32_t partition, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (auto err = check_recovery_partition(partition))
            return err;
          if (auto err = check_recovery_limit(limit))
            return err;
          return ask_reader<std::vector<job_record>>(self, recover_atom::value,
                                                     partition, after, limit);
        },
        [self](webhooks_atom, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (limit == 0 || limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          // With a fence, the webhooks of the jobs of its partitions: the
          // others' are their own coordinators' to deliver.
          if (const auto& fence = self->state.fence)
            return ask_reader<std::vector<job_record>>(
                self, webhooks_atom::value, after, limit, fence->partitions);
          return ask_reader<std::vector<job_record>>(self, webhooks_atom::value,
                                                     after, limit);
        },
        [self](partitions_atom, std::vector<int32_t>& partitions,
               std::vector<int64_t>& epochs) -> caf::result<ok_atom> {
          if (auto err = check_partition_set(partitions, epochs))
            return err;
          if (!self->state.fence)
            return make_error(errc::invalid_request,
                              "this store writes without partition leases "
                              "(no fence): it has no partitions to change");
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, partitions = std::move(partitions),
                       epochs = std::move(epochs), rp]() mutable {
            change_partitions(self, std::move(partitions), std::move(epochs),
                              rp);
          });
          return rp;
        },
        [self](nodes_atom) -> caf::result<std::string> {
          return ask_reader<std::string>(
              self, nodes_atom::value,
              static_cast<int64_t>(self->state.cfg.member_stale.count()));
        },
        [self](control_atom a, int64_t at_ms, std::string& kind,
               std::string& key, std::string& state,
               std::string& detail) -> caf::result<ok_atom> {
          auto rp = self->make_response_promise<ok_atom>();
          admit(self, [self, a, at_ms, kind = std::move(kind),
                       key = std::move(key), state = std::move(state),
                       detail = std::move(detail), rp]() mutable {
            direct_write<ok_atom>(
                self, [rp](ok_atom) mutable { rp.deliver(ok_atom::value); },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); },
                a, self->state.fence, at_ms, std::move(kind), std::move(key),
                std::move(state), std::move(detail));
          });
          return rp;
        },
        [self](control_atom a,
               std::string& kind) -> caf::result<std::vector<std::string>> {
          return ask_reader<std::vector<std::string>>(self, a, std::move(kind));
        },
        [self](control_atom a, uint32_t limit) -> caf::result<std::string> {
          if (limit == 0 || limit > 1000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 1000]");
          return ask_reader<std::string>(self, a, limit);
        },
        [self](control_atom a, get_atom g) -> caf::result<int64_t> {
          return ask_reader<int64_t>(self, a, g);
        },
        [self](control_atom a, follow_atom o,
               int64_t after) -> caf::result<std::vector<std::string>> {
          return ask_reader<std::vector<std::string>>(self, a, o, after);
        },
        [self](control_atom a,
               configured_atom c) -> caf::result<std::vector<std::string>> {
          return ask_reader<std::vector<std::string>>(self, a, c);
        },
        [self](permit_atom a, std::string& key, uint32_t limit,
               uint32_t most_new, std::vector<std::string>& job_ids)
            -> caf::result<std::vector<std::string>> {
          if (!self->state.fence)
            return make_error(errc::invalid_request,
                              "this store writes without partition leases "
                              "(no fence): it has no permits to grant");
          // An own key (leading NUL) lives in one partition: never here.
          std::string type;
          std::string tenant;
          if (!split_type_key(key, type, tenant))
            return make_error(errc::invalid_request,
                              "permits: not a job type's concurrency key");
          using ids = std::vector<std::string>;
          auto rp = self->make_response_promise<ids>();
          admit(self, [self, a, type = std::move(type),
                       tenant = std::move(tenant), limit, most_new,
                       job_ids = std::move(job_ids), rp]() mutable {
            auto& st = self->state;
            if (!st.permits) {
              // The writer migrated the schema before any ask could come.
              st.permits = spawn_pg_io(self->system(), st.cfg.conninfo, false);
              self->link_to(st.permits);
            }
            direct_write_on<ids>(
                self, st.permits,
                [rp](ids& granted) mutable { rp.deliver(granted); },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); },
                a, self->state.fence, std::move(type), std::move(tenant), limit,
                most_new, std::move(job_ids));
          });
          return rp;
        },
        [self](reconnect_atom) { try_reconnect(self); },
        [self](reopen_atom) { reopen(self); },
        [self](retention_atom) {
          auto& st = self->state;
          auto now = st.cfg.clock_ms ? st.cfg.clock_ms() : system_clock_ms();
          auto before = now - st.cfg.retain_finished.count();
          // Only the jobs of the partitions the store writes, fenced by
          // their leases (pg::session::purge_finished).
          direct_write<uint64_t>(
              self,
              [](uint64_t purged) {
                if (purged > 0)
                  log("retention: purged " + std::to_string(purged)
                          + " finished jobs",
                      log::level::info);
              },
              [](caf::error& err) {
                log("retention sweep failed: " + describe(err));
              },
              retention_atom::value, st.fence, before, st.cfg.retention_batch);
          self->delayed_send(self, st.cfg.retention_interval,
                             retention_atom::value);
        },
    };
  }
}

} // namespace

} // namespace pg_store_detail

store_actor spawn_pg_store(caf::actor_system& sys, pg_store_config cfg) {
  // The private extension converts to its subset: no actor_cast.
  return sys.spawn(pg_store_detail::pg_store_impl, std::move(cfg));
}

} // namespace drover
