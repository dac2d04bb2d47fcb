// The PostgreSQL store's I/O actors: one connection each, blocking libpq
// calls on a thread of their own (detached), never on CAF's scheduler
// threads. See actors/detail/pg_store_state.hpp.

#include "actors/detail/pg_store_state.hpp"

#include <caf/actor_system.hpp>

namespace drover::pg_store_detail {

namespace {

struct io_state {
  std::string conninfo;
  bool migrate = false;
  /// Checked by the write transactions of this connection (writer only):
  /// the fence the last write came with. Every write names the fence it
  /// was accepted under, so that a partitions change takes effect exactly
  /// between two writes of the store's pipeline.
  fence_ptr fence;
  std::unique_ptr<pg::session> db;

  static inline const char* name = "drover.pg_io";
};

using io_ptr = pg_io_actor::stateful_pointer<io_state>;

/// The session, connected (and migrated, for the writer) — or the error.
caf::expected<pg::session*> connected(io_ptr self) {
  auto& st = self->state;
  if (st.db && st.db->ok())
    return st.db.get();
  if (st.db) {
    if (auto err = st.db->reconnect())
      return err;
  } else {
    auto s = pg::session::open(st.conninfo);
    if (!s)
      return std::move(s.error());
    st.db = std::make_unique<pg::session>(std::move(*s));
    st.db->set_fence(st.fence);
  }
  if (st.migrate)
    if (auto err = st.db->migrate())
      return err;
  return st.db.get();
}

/// The fence the next write transaction checks.
void use_fence(io_ptr self, const fence_ptr& fence) {
  auto& st = self->state;
  st.fence = fence;
  if (st.db)
    st.db->set_fence(fence);
}

template <class F>
auto with_db(io_ptr self, F f) -> decltype(f(std::declval<pg::session&>())) {
  auto db = connected(self);
  if (!db)
    return std::move(db.error());
  return f(**db);
}

/// For reads, which are safe to repeat: a connection found broken (e.g.
/// the server restarted since the last call) is reopened and the read
/// tried once more.
template <class F>
auto read_db(io_ptr self, F f) -> decltype(f(std::declval<pg::session&>())) {
  auto r = with_db(self, f);
  if (!r && is(r.error(), errc::unavailable) && self->state.db
      && !self->state.db->ok())
    return with_db(self, f);
  return r;
}

pg_io_actor::behavior_type io_impl(io_ptr self, std::string conninfo,
                                   bool migrate) {
  self->state.conninfo = std::move(conninfo);
  self->state.migrate = migrate;
  // Only the store talks to an I/O actor, and only by request: an error
  // message outside a request is unexpected, worth a line, never fatal.
  self->set_error_handler([](caf::error& err) {
    log::warn("store", "I/O actor got an unexpected error message",
              {{"error", describe(err)}});
  });
  return {
      [self](write_atom, const pg::write_batch& b,
             const fence_ptr& fence) -> caf::result<pg::isolated_write_result> {
        use_fence(self, fence);
        auto r = with_db(self,
                         [&](pg::session& db) { return db.write_isolated(b); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](committed_atom, const pg::write_batch& b) -> caf::result<bool> {
        auto r
            = with_db(self, [&](pg::session& db) { return db.committed(b); });
        if (!r)
          return std::move(r.error());
        return *r;
      },
      [self](get_atom, const std::string& id) -> caf::result<job_record> {
        auto r
            = read_db(self, [&](pg::session& db) { return db.load_job(id); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](get_atom, const std::vector<std::string>& ids)
          -> caf::result<std::vector<job_record>> {
        auto r
            = read_db(self, [&](pg::session& db) { return db.load_jobs(ids); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](events_atom,
             const std::string& id) -> caf::result<std::vector<job_event>> {
        auto r = read_db(self,
                         [&](pg::session& db) { return db.load_events(id); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](events_atom, const std::string& id, uint64_t after,
             uint32_t limit) -> caf::result<std::vector<job_event>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.load_events(id, after, limit);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](list_atom,
             const job_query& q) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) { return db.list(q); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](recover_atom, int32_t partition, const std::string& after,
             uint32_t limit) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.live_jobs_of(partition, after, limit);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](webhooks_atom, const std::string& after,
             uint32_t limit) -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.pending_webhooks(after, limit);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](webhooks_atom, const std::string& after, uint32_t limit,
             const std::vector<int32_t>& partitions)
          -> caf::result<std::vector<job_record>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.pending_webhooks(after, limit, partitions);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](nodes_atom, int64_t stale_ms) -> caf::result<std::string> {
        auto r = read_db(self, [&](pg::session& db) {
          return pg::members_json(db, std::chrono::milliseconds{stale_ms});
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, const fence_ptr& fence, int64_t at_ms,
             const std::string& kind, const std::string& key,
             const std::string& state,
             const std::string& detail) -> caf::result<ok_atom> {
        use_fence(self, fence);
        auto r = with_db(self, [&](pg::session& db) -> caf::expected<ok_atom> {
          if (auto err = db.append_control(at_ms, kind, key, state, detail))
            return err;
          return ok_atom::value;
        });
        if (!r)
          return std::move(r.error());
        return ok_atom::value;
      },
      [self](control_atom,
             const std::string& kind) -> caf::result<std::vector<std::string>> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_last(kind); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, follow_atom,
             int64_t after) -> caf::result<std::vector<std::string>> {
        auto r = read_db(self, [&](pg::session& db) {
          return db.control_followed(after, max_follow_read);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom,
             configured_atom) -> caf::result<std::vector<std::string>> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_settings(); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, uint32_t limit) -> caf::result<std::string> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_json(limit); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](control_atom, get_atom) -> caf::result<int64_t> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.control_sequence(); });
        if (!r)
          return std::move(r.error());
        return *r;
      },
      [self](permit_atom, const fence_ptr& fence, const std::string& type,
             const std::string& tenant, uint32_t limit, uint32_t most_new,
             const std::vector<std::string>& job_ids)
          -> caf::result<std::vector<std::string>> {
        use_fence(self, fence);
        auto r = with_db(self, [&](pg::session& db) {
          return db.grant_permits(type, tenant, limit, most_new, job_ids);
        });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](key_atom, const std::string& tenant,
             const std::string& key) -> caf::result<job_record> {
        auto r = read_db(
            self, [&](pg::session& db) { return db.find_by_key(tenant, key); });
        if (!r)
          return std::move(r.error());
        return std::move(*r);
      },
      [self](retention_atom, const fence_ptr& fence, int64_t before_ms,
             int32_t max_jobs) -> caf::result<uint64_t> {
        use_fence(self, fence);
        auto r = with_db(self, [&](pg::session& db) {
          return db.purge_finished(before_ms, max_jobs);
        });
        if (!r)
          return std::move(r.error());
        return *r;
      },
      [self](ping_atom) -> caf::result<ok_atom> {
        auto db = connected(self);
        if (!db)
          return std::move(db.error());
        // A connection can look healthy and be dead (the server restarted
        // while it sat idle); the store trusts a successful ping to accept
        // writes again, so only a round trip counts.
        auto r = (*db)->conn().exec("SELECT 1", {}, false, "pinging");
        if (!r)
          return std::move(r.error());
        return ok_atom::value;
      },
  };
}

} // namespace

pg_io_actor spawn_pg_io(caf::actor_system& sys, std::string conninfo,
                        bool migrate) {
  return sys.spawn<caf::detached>(io_impl, std::move(conninfo), migrate);
}

} // namespace drover::pg_store_detail
