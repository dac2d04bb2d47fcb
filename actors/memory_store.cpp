// The in-memory store: the store protocol (actors/store.hpp) with every
// guarantee but durability. Jobs live in an ordered map keyed by job id
// (ids sort by submission time), each with its record and its history.

#include "actors/store.hpp"

#include "runtime/errors.hpp"
#include "runtime/flow_control.hpp"
#include "runtime/job_state.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"

#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <deque>
#include <map>
#include <set>

namespace drover {

namespace {

struct job_entry {
  job_record record;
  std::vector<job_event> history;
};

struct memory_store_state {
  std::map<std::string, job_entry> jobs;
  /// (tenant, idempotency key) -> job id.
  std::map<std::pair<std::string, std::string>, std::string> idempotency;
  /// Jobs currently in the dead-letter queue.
  std::set<std::string> dlq;
  /// The control log (runtime/flow_control.hpp), oldest first; the newest
  /// 10,000 entries are kept.
  std::deque<std::pair<uint64_t, flow_change>> control;
  uint64_t control_sequence = 0;

  static inline const char* name = "drover.memory_store";
};

using store_self = store_actor::stateful_pointer<memory_store_state>;

caf::error not_found(const std::string& job_id) {
  return make_error(errc::not_found, "no job '" + job_id + "'");
}

bool matches(const job_record& rec, const job_query& q) {
  if (q.status >= 0 && static_cast<int32_t>(rec.status) != q.status)
    return false;
  if (q.dead_lettered && !rec.dead_lettered)
    return false;
  if (!q.tenant.empty() && rec.spec.tenant != q.tenant)
    return false;
  if (!q.type.empty() && rec.spec.type != q.type)
    return false;
  return true;
}

} // namespace

store_actor spawn_memory_store(caf::actor_system& sys) {
  return sys.spawn([](store_self self) -> store_actor::behavior_type {
    // A stray message or error must not take the store down (CAF's
    // defaults for typed actors quit).
    self->set_default_handler(log_and_drop);
    self->set_error_handler([](caf::error& err) {
      log::warn("store", "unexpected error message",
                {{"error", describe(err)}});
    });
    // Creates one job; shared by single and batch submits.
    auto submit_one = [self](job_event& ev) -> caf::expected<job_record> {
      auto& st = self->state;
      if (ev.kind != event_kind::submitted)
        return make_error(errc::invalid_value,
                          "submit needs a 'submitted' event");
      const auto& key = ev.spec.idempotency_key;
      if (!key.empty()) {
        auto i = st.idempotency.find({ev.spec.tenant, key});
        if (i != st.idempotency.end()) {
          const auto& existing = st.jobs.at(i->second).record;
          if (existing.spec == ev.spec)
            return existing;
          return make_error(errc::conflict,
                            "idempotency key '" + key + "' is taken by job "
                                + existing.job_id + " with a different spec");
        }
      }
      if (st.jobs.count(ev.job_id) > 0)
        return make_error(errc::conflict, "job id '" + ev.job_id + "' exists");
      ev.sequence = 1;
      job_entry entry;
      if (auto err = apply(entry.record, ev))
        return err;
      entry.history.push_back(ev);
      auto rec = entry.record;
      if (!key.empty())
        st.idempotency.emplace(std::make_pair(ev.spec.tenant, key), ev.job_id);
      st.jobs.emplace(ev.job_id, std::move(entry));
      return rec;
    };
    return {
        [](ping_atom) { return ok_atom::value; },
        [submit_one](submit_atom, job_event& ev) -> caf::result<job_record> {
          auto rec = submit_one(ev);
          if (!rec)
            return std::move(rec.error());
          return std::move(*rec);
        },
        [submit_one](submit_atom, std::vector<job_event>& evs)
            -> caf::result<std::vector<job_record>> {
          // Refused items get a record with an empty job_id and the error
          // (see store.hpp); the others exist once the answer arrives.
          std::vector<job_record> out;
          out.reserve(evs.size());
          for (auto& ev : evs) {
            auto rec = submit_one(ev);
            if (rec) {
              out.push_back(std::move(*rec));
              continue;
            }
            job_record refused;
            auto& err = rec.error();
            refused.error.code = to_string(static_cast<errc>(err.code()));
            refused.error.message = describe(err);
            if (err.context().match_elements<std::string>())
              refused.error.message = err.context().get_as<std::string>(0);
            out.push_back(std::move(refused));
          }
          return out;
        },
        [self](append_atom,
               std::vector<job_event>& events) -> caf::result<ok_atom> {
          auto& st = self->state;
          // Validate the whole batch against copies first: all or nothing.
          std::map<std::string, job_record> staged;
          for (auto& ev : events) {
            auto s = staged.find(ev.job_id);
            if (s == staged.end()) {
              auto j = st.jobs.find(ev.job_id);
              if (j == st.jobs.end())
                return not_found(ev.job_id);
              s = staged.emplace(ev.job_id, j->second.record).first;
            }
            if (ev.sequence == 0)
              ev.sequence = s->second.sequence + 1;
            if (auto err = apply(s->second, ev))
              return err;
          }
          for (auto& ev : events) {
            auto& entry = st.jobs.at(ev.job_id);
            entry.history.push_back(std::move(ev));
          }
          for (auto& kv : staged) {
            auto& entry = st.jobs.at(kv.first);
            if (kv.second.dead_lettered)
              st.dlq.insert(kv.first);
            else
              st.dlq.erase(kv.first);
            entry.record = std::move(kv.second);
          }
          return ok_atom::value;
        },
        [self](get_atom, const std::string& job_id) -> caf::result<job_record> {
          auto& st = self->state;
          auto i = st.jobs.find(job_id);
          if (i == st.jobs.end())
            return not_found(job_id);
          return i->second.record;
        },
        [self](events_atom, const std::string& job_id)
            -> caf::result<std::vector<job_event>> {
          auto& st = self->state;
          auto i = st.jobs.find(job_id);
          if (i == st.jobs.end())
            return not_found(job_id);
          return i->second.history;
        },
        [self](events_atom, const std::string& job_id, uint64_t after,
               uint32_t limit) -> caf::result<std::vector<job_event>> {
          if (auto err = check_events_limit(limit))
            return err;
          std::vector<job_event> out;
          auto i = self->state.jobs.find(job_id);
          if (i == self->state.jobs.end())
            return out;
          const auto& h = i->second.history;
          auto j = std::partition_point(
              h.begin(), h.end(),
              [after](const job_event& e) { return e.sequence <= after; });
          for (; j != h.end() && out.size() < limit; ++j)
            out.push_back(*j);
          return out;
        },
        [self](recover_atom, int32_t partition, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (auto err = check_recovery_partition(partition))
            return err;
          if (auto err = check_recovery_limit(limit))
            return err;
          std::vector<job_record> result;
          // A scan: the memory store is for experiments and tests.
          const auto& jobs = self->state.jobs;
          for (auto i = jobs.upper_bound(after);
               i != jobs.end() && result.size() < limit; ++i)
            if (!is_terminal(i->second.record.status)
                && partition_of_id(i->first) == partition)
              result.push_back(i->second.record);
          return result;
        },
        [](permit_atom, const std::string&, uint32_t, uint32_t,
           const std::vector<std::string>&)
            -> caf::result<std::vector<std::string>> {
          return make_error(errc::invalid_request,
                            "the memory store has no partition leases: "
                            "permits are counted by one queue");
        },
        [self](control_atom, int64_t at_ms, std::string& kind, std::string& key,
               std::string& state,
               std::string& detail) -> caf::result<ok_atom> {
          auto& log = self->state.control;
          log.emplace_back(++self->state.control_sequence,
                           flow_change{at_ms, std::move(kind), std::move(key),
                                       std::move(state), std::move(detail)});
          if (log.size() > 10000)
            log.pop_front();
          return ok_atom::value;
        },
        [self](control_atom, const std::string& kind)
            -> caf::result<std::vector<std::string>> {
          // The newest state per key, and apart from it the newest
          // run-time setting ("configured").
          std::map<std::pair<std::string, bool>, const flow_change*> last;
          for (const auto& [seq, c] : self->state.control)
            if (c.kind == kind)
              last[{c.key, c.state == "configured"}] = &c;
          std::vector<std::string> out;
          for (const auto& [key, c] : last)
            out.insert(out.end(), {key.first, c->state,
                                   std::to_string(c->at_ms), c->detail});
          return out;
        },
        [self](control_atom, follow_atom,
               int64_t after) -> std::vector<std::string> {
          std::vector<std::string> out;
          for (const auto& [seq, c] : self->state.control)
            if (static_cast<int64_t>(seq) > after
                && (c.state == "configured"
                    || (c.kind == "breaker" && c.state == "open"))
                && out.size() < 6 * size_t{max_follow_read})
              out.insert(out.end(),
                         {std::to_string(seq), c.kind, c.key, c.state,
                          std::to_string(c.at_ms), c.detail});
          return out;
        },
        [self](control_atom, configured_atom) -> std::vector<std::string> {
          std::map<std::pair<std::string, std::string>,
                   std::pair<uint64_t, const flow_change*>>
              last;
          for (const auto& [seq, c] : self->state.control)
            if (c.state == "configured")
              last[{c.kind, c.key}] = {seq, &c};
          std::vector<std::string> out;
          for (const auto& [name, at] : last)
            out.insert(out.end(),
                       {std::to_string(at.first), at.second->kind,
                        at.second->key, at.second->state,
                        std::to_string(at.second->at_ms), at.second->detail});
          return out;
        },
        [self](control_atom, get_atom) -> int64_t {
          return static_cast<int64_t>(self->state.control_sequence);
        },
        [self](control_atom, uint32_t limit) -> caf::result<std::string> {
          if (limit == 0 || limit > 1000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 1000]");
          const auto& log = self->state.control;
          std::string out = "[";
          for (auto i = log.rbegin(); i != log.rend() && limit > 0;
               ++i, --limit)
            out += (out.size() > 1 ? "," : "")
                   + control_entry_json(i->first, i->second, 0, 0, "");
          return out + "]";
        },
        [](partitions_atom, const std::vector<int32_t>&,
           const std::vector<int64_t>&) -> caf::result<ok_atom> {
          return make_error(errc::invalid_request,
                            "the memory store has no partitions: several "
                            "coordinators need --store postgres");
        },
        [](nodes_atom) -> caf::result<std::string> {
          return make_error(errc::not_found,
                            "the memory store keeps no coordinators");
        },
        [self](webhooks_atom, const std::string& after,
               uint32_t limit) -> caf::result<std::vector<job_record>> {
          if (limit == 0 || limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          std::vector<job_record> result;
          // A scan: the memory store is for experiments and tests.
          const auto& jobs = self->state.jobs;
          for (auto i = jobs.upper_bound(after);
               i != jobs.end() && result.size() < limit; ++i)
            if (i->second.record.webhook_pending_sequence != 0)
              result.push_back(i->second.record);
          return result;
        },
        [self](list_atom,
               const job_query& q) -> caf::result<std::vector<job_record>> {
          auto& st = self->state;
          if (q.limit == 0 || q.limit > 10000)
            return make_error(errc::invalid_request,
                              "limit must be within [1, 10000]");
          std::vector<job_record> result;
          if (q.dead_lettered) {
            for (auto i = st.dlq.upper_bound(q.after);
                 i != st.dlq.end() && result.size() < q.limit; ++i) {
              const auto& rec = st.jobs.at(*i).record;
              if (matches(rec, q))
                result.push_back(rec);
            }
            return result;
          }
          for (auto i = st.jobs.upper_bound(q.after);
               i != st.jobs.end() && result.size() < q.limit; ++i)
            if (matches(i->second.record, q))
              result.push_back(i->second.record);
          return result;
        },
    };
  });
}

} // namespace drover
