// The PostgreSQL session's group-commit write of job batches, with its
// checks (runtime/pg.hpp: session::write, session::committed). Opening and
// migrating are in runtime/pg_session.cpp, connections and results in
// runtime/pg_connection.cpp.

#include "runtime/pg.hpp"

#include "runtime/detail/pg_common.hpp"
#include "runtime/detail/pg_fence.hpp"
#include "runtime/errors.hpp"
#include "runtime/partition.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

namespace drover::pg {

using detail::code_of;
using detail::context_of;
using detail::parse_number;

namespace {

constexpr auto int64_max
    = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
constexpr auto int32_max
    = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());

/// "($1,$2),($3,$4)" for `rows` rows of `cols` parameters.
std::string values_list(size_t rows, size_t cols) {
  std::string str;
  str.reserve(rows * cols * 7);
  size_t n = 1;
  for (size_t r = 0; r < rows; ++r) {
    str += r == 0 ? "(" : ",(";
    for (size_t c = 0; c < cols; ++c) {
      if (c != 0)
        str += ',';
      str += '$';
      str += std::to_string(n++);
    }
    str += ')';
  }
  return str;
}

/// Calls `fn(first, last)` for consecutive slices of [0, n) small enough
/// that `cols` parameters per row stay within libpq's limit. Stops at the
/// first error.
template <class F>
caf::error for_chunks(size_t n, size_t cols, F fn) {
  const size_t rows_per_chunk = max_params / cols;
  for (size_t first = 0; first < n; first += rows_per_chunk)
    if (auto err = fn(first, std::min(n, first + rows_per_chunk)))
      return err;
  return caf::none;
}

caf::error invalid(std::string msg) {
  return make_error(errc::invalid_value, std::move(msg));
}

caf::error check_record(const job_record& rec, const char* role) {
  if (rec.job_id.empty())
    return invalid(std::string{role} + " without a job id");
  if (rec.sequence == 0 || rec.sequence > int64_max)
    return invalid(std::string{role} + " of job '" + rec.job_id
                   + "' has sequence " + std::to_string(rec.sequence)
                   + " (must be within [1, 2^63-1])");
  return caf::none;
}

using element = array_param::element;

/// The columns of drover.jobs a write sets, one array each, in the order
/// of the unnest(..) in the statements below.
struct job_arrays {
  explicit job_arrays(size_t n)
      : job_id(element::text, n),
        tenant(element::text, n),
        type(element::text, n),
        idempotency_key(element::text, n),
        status(element::int2, n),
        priority(element::int2, n),
        dead_lettered(element::boolean, n),
        created_at_ms(element::int8, n),
        updated_at_ms(element::int8, n),
        completed_at_ms(element::int8, n),
        seq(element::int8, n),
        record(element::bytea, n),
        webhook_pending(element::boolean, n),
        final_status(element::int2, n) {}

  /// The columns an update sets, plus job_id.
  void add_update(const job_record& rec, int64_t updated_at) {
    job_id.text(rec.job_id);
    status.int16(static_cast<int16_t>(rec.status));
    priority.int16(static_cast<int16_t>(rec.spec.prio));
    dead_lettered.boolean(rec.dead_lettered);
    updated_at_ms.int64(updated_at);
    if (rec.completed_at_ms != 0)
      completed_at_ms.int64(rec.completed_at_ms);
    else
      completed_at_ms.null();
    seq.int64(static_cast<int64_t>(rec.sequence));
    record.bytes(to_bytes(rec));
    webhook_pending.boolean(rec.webhook_pending_sequence != 0);
    // final_status: `status` once terminal, NULL while live. The live and
    // finished indexes use it instead of `status`, so transitions between
    // live statuses change no indexed column and stay HOT (migration 3).
    if (is_terminal(rec.status))
      final_status.int16(static_cast<int16_t>(rec.status));
    else
      final_status.null();
  }
  /// Every column, for an insert.
  void add_insert(const job_record& rec, int64_t updated_at) {
    add_update(rec, updated_at);
    tenant.text(rec.spec.tenant);
    type.text(rec.spec.type);
    idempotency_key.text_or_null(rec.spec.idempotency_key);
    created_at_ms.int64(rec.created_at_ms);
  }
  params insert_params() const {
    params ps;
    ps.array(job_id)
        .array(tenant)
        .array(type)
        .array(idempotency_key)
        .array(status)
        .array(priority)
        .array(dead_lettered)
        .array(created_at_ms)
        .array(updated_at_ms)
        .array(completed_at_ms)
        .array(seq)
        .array(record)
        .array(webhook_pending)
        .array(final_status);
    return ps;
  }
  params update_params() const {
    params ps;
    ps.array(job_id)
        .array(status)
        .array(priority)
        .array(dead_lettered)
        .array(updated_at_ms)
        .array(completed_at_ms)
        .array(seq)
        .array(record)
        .array(webhook_pending)
        .array(final_status);
    return ps;
  }

  array_param job_id, tenant, type, idempotency_key, status, priority,
      dead_lettered, created_at_ms, updated_at_ms, completed_at_ms, seq, record,
      webhook_pending, final_status;
};

// The write path's statements: prepared once per connection, one
// execution per batch whatever its size.
const std::string insert_jobs_sql
    = "INSERT INTO drover.jobs (job_id, tenant, type, idempotency_key, status, "
      "priority, dead_lettered, created_at_ms, updated_at_ms, completed_at_ms, "
      "seq, record, webhook_pending, final_status) "
      "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
      "$5::int2[], $6::int2[], $7::bool[], $8::int8[], $9::int8[], "
      "$10::int8[], "
      "$11::int8[], $12::bytea[], $13::bool[], $14::int2[]) "
      "ON CONFLICT DO NOTHING RETURNING job_id";
const std::string insert_events_sql
    = "INSERT INTO drover.events (job_id, seq, attempt, kind, at_ms, payload) "
      "SELECT * FROM unnest($1::text[], $2::int8[], $3::int4[], $4::int2[], "
      "$5::int8[], $6::bytea[])";
const std::string update_jobs_sql
    = "UPDATE drover.jobs AS j SET status = v.status, priority = v.priority, "
      "dead_lettered = v.dead_lettered, updated_at_ms = v.updated_at_ms, "
      "completed_at_ms = v.completed_at_ms, seq = v.seq, record = v.record, "
      "webhook_pending = v.webhook_pending, final_status = v.final_status "
      "FROM unnest($1::text[], $2::int2[], $3::int2[], $4::bool[], $5::int8[], "
      "$6::int8[], $7::int8[], $8::bytea[], $9::bool[], $10::int2[]) "
      "AS v(job_id, status, priority, dead_lettered, updated_at_ms, "
      "completed_at_ms, seq, record, webhook_pending, final_status) "
      "WHERE j.job_id = v.job_id AND j.seq < v.seq RETURNING j.job_id";

} // namespace

// -- writing ------------------------------------------------------------------

namespace {

/// (tenant, idempotency key) -> id of the job holding it, for `keys`.
caf::expected<std::map<std::pair<std::string, std::string>, std::string>>
key_holders(connection& conn,
            const std::vector<std::pair<std::string, std::string>>& keys) {
  std::map<std::pair<std::string, std::string>, std::string> out;
  auto err = for_chunks(keys.size(), 2, [&](size_t first, size_t last) {
    params ps;
    ps.reserve((last - first) * 2);
    for (size_t i = first; i < last; ++i)
      ps.text(keys[i].first).text(keys[i].second);
    auto res = conn.exec(
        "SELECT j.tenant, j.idempotency_key, j.job_id FROM drover.jobs j JOIN "
        "(VALUES "
            + values_list(last - first, 2)
            + ") AS v(tenant, key) "
              "ON j.tenant = v.tenant AND j.idempotency_key = v.key",
        ps, false, "looking up idempotency keys");
    if (!res)
      return std::move(res.error());
    for (int row = 0; row < res->rows(); ++row)
      out.emplace(std::make_pair(std::string{res->value(row, 0)},
                                 std::string{res->value(row, 1)}),
                  std::string{res->value(row, 2)});
    return caf::error{};
  });
  if (err)
    return err;
  return out;
}

/// job id -> stored seq, for those of `ids` that exist.
caf::expected<std::unordered_map<std::string, int64_t>>
job_seqs(connection& conn, const std::vector<std::string>& ids) {
  std::unordered_map<std::string, int64_t> out;
  auto err = for_chunks(ids.size(), 1, [&](size_t first, size_t last) {
    params ps;
    ps.reserve(last - first);
    for (size_t i = first; i < last; ++i)
      ps.text(ids[i]);
    auto res = conn.exec("SELECT j.job_id, j.seq FROM drover.jobs j JOIN "
                         "(VALUES "
                             + values_list(last - first, 1)
                             + ") AS v(job_id) ON j.job_id = v.job_id",
                         ps, false, "looking up jobs");
    if (!res)
      return std::move(res.error());
    for (int row = 0; row < res->rows(); ++row) {
      int64_t seq = 0;
      if (!parse_number(res->value(row, 1), seq))
        return make_error(errc::malformed, "unreadable seq");
      out.emplace(std::string{res->value(row, 0)}, seq);
    }
    return caf::error{};
  });
  if (err)
    return err;
  return out;
}

} // namespace

caf::expected<write_result> session::write(const write_batch& batch) {
  write_result out;
  if (batch.submits.empty() && batch.events.empty() && batch.updates.empty())
    return out;
  // Refuse batches that contradict themselves before touching the database.
  std::unordered_set<std::string_view> submit_ids;
  std::unordered_set<std::string_view> update_ids;
  for (const auto& rec : batch.submits) {
    if (auto err = check_record(rec, "submit"))
      return err;
    if (!submit_ids.insert(rec.job_id).second)
      return invalid("job '" + rec.job_id + "' is submitted twice in a batch");
  }
  for (const auto& rec : batch.updates) {
    if (auto err = check_record(rec, "update"))
      return err;
    if (!update_ids.insert(rec.job_id).second)
      return invalid("job '" + rec.job_id + "' is updated twice in a batch");
  }
  // at_ms of each job's newest event in the batch: the projection's
  // updated_at_ms.
  std::unordered_map<std::string_view, std::pair<uint64_t, int64_t>> newest;
  for (const auto& ev : batch.events) {
    if (submit_ids.count(ev.job_id) == 0 && update_ids.count(ev.job_id) == 0)
      return invalid("event " + std::to_string(ev.sequence) + " of job '"
                     + ev.job_id
                     + "' comes without a submit or an update of its job");
    if (ev.sequence == 0 || ev.sequence > int64_max)
      return invalid("event of job '" + ev.job_id + "' has sequence "
                     + std::to_string(ev.sequence));
    if (ev.attempt > int32_max)
      return invalid("event of job '" + ev.job_id + "' has attempt "
                     + std::to_string(ev.attempt));
    auto& n = newest[ev.job_id];
    if (ev.sequence >= n.first)
      n = {ev.sequence, ev.at_ms};
  }
  auto updated_at = [&newest](const job_record& rec) {
    if (auto i = newest.find(rec.job_id); i != newest.end())
      return i->second.second;
    return std::max(
        {rec.created_at_ms, rec.started_at_ms, rec.completed_at_ms});
  };

  if (auto err = begin_write(partitions_of(batch), "writing a batch"))
    return err;
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };

  // 1. Submits. ON CONFLICT DO NOTHING covers the job id and the
  // idempotency key, also between rows of the same statement (the first
  // row wins) and against concurrent transactions (we wait for theirs).
  std::unordered_set<std::string_view> skipped;
  if (!batch.submits.empty()) {
    std::unordered_set<std::string> inserted;
    job_arrays cols{batch.submits.size()};
    for (const auto& rec : batch.submits)
      cols.add_insert(rec, updated_at(rec));
    auto res = conn_.exec_prepared("drover_insert_jobs", insert_jobs_sql,
                                   cols.insert_params(), false,
                                   "inserting submitted jobs");
    if (!res)
      return fail(std::move(res.error()));
    for (int row = 0; row < res->rows(); ++row)
      inserted.emplace(res->value(row, 0));
    if (inserted.size() < batch.submits.size()) {
      std::vector<std::pair<std::string, std::string>> keys;
      for (const auto& rec : batch.submits)
        if (inserted.count(rec.job_id) == 0
            && !rec.spec.idempotency_key.empty())
          keys.emplace_back(rec.spec.tenant, rec.spec.idempotency_key);
      auto holders = key_holders(conn_, keys);
      if (!holders)
        return fail(std::move(holders.error()));
      for (const auto& rec : batch.submits) {
        if (inserted.count(rec.job_id) > 0)
          continue;
        auto holder = holders->end();
        if (!rec.spec.idempotency_key.empty())
          holder = holders->find(
              std::make_pair(rec.spec.tenant, rec.spec.idempotency_key));
        if (holder == holders->end() || holder->second == rec.job_id)
          // The id itself is taken: a job written earlier, e.g. this very
          // batch after an unknown outcome (see committed()).
          return fail(
              make_error(errc::conflict, "job '" + rec.job_id + "' exists"));
        out.duplicate_submits.push_back(rec.job_id);
        skipped.insert(rec.job_id);
      }
    }
  }

  // 2. Events, payloads as binary bytea. A (job, seq) that exists is a
  // unique violation: conflict.
  {
    const size_t n = batch.events.size();
    array_param job_id{element::text, n}, seq{element::int8, n},
        attempt{element::int4, n}, kind{element::int2, n},
        at_ms{element::int8, n}, payload{element::bytea, n};
    for (const auto& ev : batch.events) {
      if (skipped.count(ev.job_id) > 0)
        continue;
      job_id.text(ev.job_id);
      seq.int64(static_cast<int64_t>(ev.sequence));
      attempt.int32(static_cast<int32_t>(ev.attempt));
      kind.int16(static_cast<int16_t>(ev.kind));
      at_ms.int64(ev.at_ms);
      payload.bytes(to_bytes(ev));
    }
    if (job_id.size() > 0) {
      params ps;
      ps.array(job_id).array(seq).array(attempt).array(kind).array(at_ms).array(
          payload);
      auto res = conn_.exec_prepared("drover_insert_events", insert_events_sql,
                                     ps, false, "appending events");
      if (!res)
        return fail(std::move(res.error()));
    }
  }

  // 3. Projections of existing jobs, in job-id order (a stable lock order
  // between concurrent writers). Each must move the stored one forward.
  std::vector<const job_record*> updates;
  updates.reserve(batch.updates.size());
  for (const auto& rec : batch.updates)
    if (skipped.count(rec.job_id) == 0)
      updates.push_back(&rec);
  std::sort(updates.begin(), updates.end(),
            [](const job_record* x, const job_record* y) {
              return x->job_id < y->job_id;
            });
  if (!updates.empty()) {
    job_arrays cols{updates.size()};
    for (const auto* rec : updates)
      cols.add_update(*rec, updated_at(*rec));
    auto res
        = conn_.exec_prepared("drover_update_jobs", update_jobs_sql,
                              cols.update_params(), false, "updating jobs");
    if (!res)
      return fail(std::move(res.error()));
    if (static_cast<size_t>(res->rows()) != updates.size()) {
      std::unordered_set<std::string_view> done;
      for (int row = 0; row < res->rows(); ++row)
        done.insert(res->value(row, 0));
      for (const auto* rec : updates) {
        if (done.count(rec->job_id) > 0)
          continue;
        auto stored = job_seqs(conn_, {rec->job_id});
        if (!stored)
          return fail(std::move(stored.error()));
        if (stored->empty())
          return fail(make_error(errc::not_found,
                                 "no job '" + rec->job_id + "' to update"));
        return fail(make_error(errc::conflict,
                               "job '" + rec->job_id + "' is at seq "
                                   + std::to_string(stored->begin()->second)
                                   + ", the update carries seq "
                                   + std::to_string(rec->sequence)));
      }
    }
  }

  // 4. COMMIT. If the connection breaks now, the server may or may not have
  // committed: only a re-read can tell.
  auto res = conn_.exec("COMMIT", {}, false, "committing");
  if (!res) {
    if (!conn_.connection_ok())
      return make_error(errc::unavailable,
                        "outcome unknown: " + context_of(res.error()));
    return fail(std::move(res.error()));
  }
  return out;
}

caf::expected<bool> session::committed(const write_batch& batch) {
  if (auto err = rollback_quietly())
    return err;
  // One snapshot for every read below.
  if (auto res = conn_.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                            {}, false, "checking a batch");
      !res)
    return std::move(res.error());
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };
  std::unordered_set<std::string_view> with_events;
  for (const auto& ev : batch.events)
    with_events.insert(ev.job_id);
  // Which submitted and updated jobs exist, at which seq.
  std::vector<std::string> ids;
  for (const auto& rec : batch.submits)
    ids.push_back(rec.job_id);
  for (const auto& rec : batch.updates)
    ids.push_back(rec.job_id);
  auto seqs = job_seqs(conn_, ids);
  if (!seqs)
    return fail(std::move(seqs.error()));
  // Absent submits whose key another job holds: a retry reports them as
  // duplicates whatever happened, so they are no evidence either way.
  std::vector<std::pair<std::string, std::string>> keys;
  for (const auto& rec : batch.submits)
    if (seqs->count(rec.job_id) == 0 && !rec.spec.idempotency_key.empty())
      keys.emplace_back(rec.spec.tenant, rec.spec.idempotency_key);
  auto holders = key_holders(conn_, keys);
  if (!holders)
    return fail(std::move(holders.error()));
  std::unordered_set<std::string_view> neutral;
  for (const auto& rec : batch.submits) {
    if (seqs->count(rec.job_id) > 0 || rec.spec.idempotency_key.empty())
      continue;
    auto i = holders->find({rec.spec.tenant, rec.spec.idempotency_key});
    if (i != holders->end() && i->second != rec.job_id)
      neutral.insert(rec.job_id);
  }
  size_t present = 0;
  size_t absent = 0;
  // Jobs without events in the batch: judged by their projection.
  for (const auto& rec : batch.submits) {
    if (neutral.count(rec.job_id) > 0 || with_events.count(rec.job_id) > 0)
      continue;
    ++(seqs->count(rec.job_id) > 0 ? present : absent);
  }
  for (const auto& rec : batch.updates) {
    if (neutral.count(rec.job_id) > 0 || with_events.count(rec.job_id) > 0)
      continue;
    auto i = seqs->find(rec.job_id);
    auto stored = i != seqs->end() && i->second >= 0
                  && static_cast<uint64_t>(i->second) >= rec.sequence;
    ++(stored ? present : absent);
  }
  // Events: stored, and stored as written.
  std::vector<const job_event*> events;
  for (const auto& ev : batch.events)
    if (neutral.count(ev.job_id) == 0)
      events.push_back(&ev);
  std::map<std::pair<std::string_view, uint64_t>, const job_event*> wanted;
  for (const auto* ev : events)
    wanted.emplace(std::make_pair(std::string_view{ev->job_id}, ev->sequence),
                   ev);
  size_t found = 0;
  auto err = for_chunks(events.size(), 2, [&](size_t first, size_t last) {
    params ps;
    ps.reserve((last - first) * 2);
    for (size_t i = first; i < last; ++i)
      ps.text(events[i]->job_id)
          .int64(static_cast<int64_t>(events[i]->sequence));
    auto res = conn_.exec(
        "SELECT e.job_id, e.seq, e.payload FROM drover.events e JOIN (VALUES "
            + values_list(last - first, 2)
            + ") AS v(job_id, seq) ON e.job_id = v.job_id AND e.seq = v.seq",
        ps, true, "checking a batch's events");
    if (!res)
      return std::move(res.error());
    for (int row = 0; row < res->rows(); ++row) {
      auto job_id = res->value(row, 0);
      auto seq = static_cast<uint64_t>(binary_int(res->value(row, 1)));
      auto payload = res->value(row, 2);
      auto i = wanted.find({job_id, seq});
      if (i == wanted.end())
        continue;
      auto stored
          = from_bytes<job_event>(payload.data(), payload.size(), limits_);
      if (!stored || *stored != *i->second)
        return make_error(errc::conflict,
                          "event " + std::to_string(seq) + " of job '"
                              + std::string{job_id}
                              + "' is stored with a different content");
      ++found;
    }
    return caf::error{};
  });
  if (err)
    return fail(std::move(err));
  present += found;
  absent += events.size() - found;
  rollback_quietly();
  if (present > 0 && absent > 0)
    return make_error(errc::conflict,
                      "batch partially stored: " + std::to_string(present)
                          + " of " + std::to_string(present + absent)
                          + " items present");
  return present > 0;
}

} // namespace drover::pg
