// Reading jobs, events and webhook deliveries from PostgreSQL (the
// session's read side; writing and migrations are in pg.cpp).

#include "runtime/pg.hpp"

#include "runtime/detail/pg_common.hpp"
#include "runtime/errors.hpp"
#include "runtime/partition.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace drover::pg {

using detail::code_of;
using detail::context_of;
using detail::parse_number;

// -- reading ------------------------------------------------------------------

caf::expected<job_record> session::decode_record(std::string_view job_id,
                                                 std::string_view bytes) const {
  auto rec = from_bytes<job_record>(bytes.data(), bytes.size(), limits_);
  if (!rec)
    return make_error(code_of(rec.error()), "drover.jobs row '"
                                                + std::string{job_id}
                                                + "' holds a corrupt record: "
                                                + context_of(rec.error()));
  if (rec->job_id != job_id)
    return make_error(errc::malformed, "drover.jobs row '" + std::string{job_id}
                                           + "' holds the record of job '"
                                           + rec->job_id + "'");
  return rec;
}

caf::expected<std::vector<job_record>>
session::query_records(const std::string& sql, const params& ps,
                       std::string_view what) {
  // Binary results: record bytes arrive as they are, no hex decoding.
  auto res = conn_.exec(sql, ps, true, what);
  if (!res)
    return std::move(res.error());
  std::vector<job_record> out;
  out.reserve(static_cast<size_t>(res->rows()));
  for (int row = 0; row < res->rows(); ++row) {
    auto rec = decode_record(res->value(row, 0), res->value(row, 1));
    if (!rec)
      return std::move(rec.error());
    out.push_back(std::move(*rec));
  }
  return out;
}

caf::expected<job_record> session::load_job(const std::string& job_id) {
  auto recs = query_records(
      "SELECT job_id, record FROM drover.jobs WHERE job_id = $1",
      params{}.text(job_id), "loading a job");
  if (!recs)
    return std::move(recs.error());
  if (recs->empty())
    return make_error(errc::not_found, "no job '" + job_id + "'");
  return std::move(recs->front());
}

caf::expected<std::vector<job_record>>
session::load_jobs(const std::vector<std::string>& job_ids) {
  if (job_ids.empty())
    return std::vector<job_record>{};
  array_param ids{array_param::element::text, job_ids.size()};
  for (const auto& id : job_ids)
    ids.text(id);
  return query_records(
      "SELECT job_id, record FROM drover.jobs WHERE job_id = ANY($1::text[])",
      params{}.array(ids), "loading jobs");
}

caf::expected<std::vector<job_event>>
session::load_events(const std::string& job_id) {
  auto out = load_events(job_id, 0, 0);
  if (out && out->empty())
    return make_error(errc::not_found, "no events of job '" + job_id + "'");
  return out;
}

caf::expected<std::vector<job_event>>
session::load_events(const std::string& job_id, uint64_t after,
                     uint32_t limit) {
  // limit 0: all of them (load_events(job_id)).
  auto from = static_cast<int64_t>(
      std::min<uint64_t>(after, static_cast<uint64_t>(INT64_MAX)));
  auto res = limit == 0
                 ? conn_.exec("SELECT seq, payload FROM drover.events WHERE "
                              "job_id = $1 AND seq > $2 ORDER BY seq",
                              params{}.text(job_id).int64(from), true,
                              "loading events")
                 : conn_.exec("SELECT seq, payload FROM drover.events WHERE "
                              "job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                              params{}.text(job_id).int64(from).int64(limit),
                              true, "loading events");
  if (!res)
    return std::move(res.error());
  std::vector<job_event> out;
  out.reserve(static_cast<size_t>(res->rows()));
  for (int row = 0; row < res->rows(); ++row) {
    auto seq = static_cast<uint64_t>(binary_int(res->value(row, 0)));
    auto payload = res->value(row, 1);
    auto ev = from_bytes<job_event>(payload.data(), payload.size(), limits_);
    auto where
        = "drover.events row ('" + job_id + "', " + std::to_string(seq) + ")";
    if (!ev)
      return make_error(code_of(ev.error()), where + " holds a corrupt event: "
                                                 + context_of(ev.error()));
    if (ev->job_id != job_id || ev->sequence != seq)
      return make_error(errc::malformed, where + " holds event "
                                             + std::to_string(ev->sequence)
                                             + " of job '" + ev->job_id + "'");
    out.push_back(std::move(*ev));
  }
  return out;
}

caf::expected<std::vector<job_record>> session::list(const job_query& q) {
  if (q.limit == 0 || q.limit > 10000)
    return make_error(errc::invalid_request, "limit must be within [1, 10000]");
  if (q.status > static_cast<int32_t>(job_status::cancelled))
    return std::vector<job_record>{};
  params ps;
  std::string sql = "SELECT job_id, record FROM drover.jobs WHERE job_id > $1";
  ps.text(q.after);
  auto next = [&ps] { return "$" + std::to_string(ps.size() + 1); };
  if (q.status >= 0) {
    // Predicates of the partial indexes jobs_finished and jobs_live.
    auto st = static_cast<job_status>(q.status);
    if (is_terminal(st))
      sql += " AND final_status = " + next();
    else
      sql += " AND final_status IS NULL AND status = " + next();
    ps.int16(static_cast<int16_t>(q.status));
  }
  if (q.dead_lettered)
    sql += " AND dead_lettered";
  if (!q.tenant.empty()) {
    sql += " AND tenant = " + next();
    ps.text(q.tenant);
  }
  if (!q.type.empty()) {
    sql += " AND type = " + next();
    ps.text(q.type);
  }
  sql += " ORDER BY job_id LIMIT " + next();
  ps.int64(q.limit);
  return query_records(sql, ps, "listing jobs");
}

caf::expected<std::vector<job_record>>
session::live_jobs(const std::string& after, uint32_t limit) {
  // The predicate repeats jobs_live's so the partial index applies.
  std::string sql = "SELECT job_id, record FROM drover.jobs "
                    "WHERE final_status IS NULL AND job_id > $1 "
                    "ORDER BY job_id";
  params ps;
  ps.text(after);
  if (limit > 0) {
    sql += " LIMIT $2";
    ps.int64(limit);
  }
  return query_records(sql, ps, "loading live jobs");
}

caf::expected<std::vector<job_record>>
session::live_jobs_of(int32_t partition, const std::string& after,
                      uint32_t limit) {
  if (partition < 0 || partition >= max_partitions)
    return make_error(errc::invalid_request,
                      "partition " + std::to_string(partition)
                          + " is outside [0, " + std::to_string(max_partitions)
                          + ")");
  if (limit == 0 || limit > 100000)
    return make_error(errc::invalid_request,
                      "limit must be within [1, 100000]");
  // Expression and predicate repeat jobs_live_partition's, so the index
  // yields the partition's live jobs in job-id order from `after` on.
  return query_records("SELECT job_id, record FROM drover.jobs "
                       "WHERE drover.partition_of(job_id) = $1 "
                       "AND final_status IS NULL AND job_id > $2 "
                       "ORDER BY job_id LIMIT $3",
                       params{}.int32(partition).text(after).int64(limit),
                       "loading a partition's live jobs");
}

caf::expected<std::vector<job_record>>
session::pending_webhooks(const std::string& after, uint32_t limit) {
  if (limit == 0 || limit > 10000)
    return make_error(errc::invalid_request, "limit must be within [1, 10000]");
  // The predicate repeats jobs_webhook_pending's so the partial index
  // applies.
  return query_records("SELECT job_id, record FROM drover.jobs "
                       "WHERE webhook_pending AND job_id > $1 "
                       "ORDER BY job_id LIMIT $2",
                       params{}.text(after).int64(limit),
                       "loading jobs that owe a webhook");
}

caf::expected<std::vector<job_record>>
session::pending_webhooks(const std::string& after, uint32_t limit,
                          const std::vector<int32_t>& partitions) {
  if (limit == 0 || limit > 10000)
    return make_error(errc::invalid_request, "limit must be within [1, 10000]");
  if (partitions.empty())
    return std::vector<job_record>{};
  array_param parts{array_param::element::int4, partitions.size()};
  for (auto p : partitions)
    parts.int32(p);
  // jobs_webhook_pending holds few rows (finished jobs whose delivery is
  // not settled): the partition is a filter on them.
  return query_records("SELECT job_id, record FROM drover.jobs "
                       "WHERE webhook_pending AND job_id > $1 "
                       "AND drover.partition_of(job_id) = ANY($3::int4[]) "
                       "ORDER BY job_id LIMIT $2",
                       params{}.text(after).int64(limit).array(parts),
                       "loading jobs that owe a webhook");
}

caf::expected<job_record> session::find_by_key(const std::string& tenant,
                                               const std::string& key) {
  if (key.empty())
    return make_error(errc::not_found, "no idempotency key given");
  auto recs = query_records("SELECT job_id, record FROM drover.jobs "
                            "WHERE tenant = $1 AND idempotency_key = $2",
                            params{}.text(tenant).text(key),
                            "looking up an idempotency key");
  if (!recs)
    return std::move(recs.error());
  if (recs->empty())
    return make_error(errc::not_found, "no job of tenant '" + tenant
                                           + "' with idempotency key '" + key
                                           + "'");
  return std::move(recs->front());
}

caf::expected<uint64_t> session::purge_finished(int64_t before_ms,
                                                int32_t max_jobs) {
  // Fenced: the jobs of the fence's partitions only, their lease rows
  // checked and locked FOR SHARE like a job write's (a takeover of one of
  // them waits for the purge). Several coordinators purge their own
  // partitions side by side.
  auto fence = fence_;
  if (fence && fence->partitions.empty())
    return uint64_t{0};
  if (auto err = begin_write(fence ? fence->partitions : std::vector<int32_t>{},
                             "purging finished jobs"))
    return err;
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };
  auto res = [&]() -> caf::expected<result> {
    if (!fence)
      return conn_.exec("SELECT drover.purge_finished($1, $2)",
                        params{}.int64(before_ms).int32(max_jobs), false,
                        "purging finished jobs");
    array_param parts{array_param::element::int4, fence->partitions.size()};
    for (auto p : fence->partitions)
      parts.int32(p);
    return conn_.exec("SELECT drover.purge_finished($1, $2, $3::int4[])",
                      params{}.int64(before_ms).int32(max_jobs).array(parts),
                      false, "purging finished jobs");
  }();
  if (!res)
    return fail(std::move(res.error()));
  uint64_t n = 0;
  if (res->rows() != 1 || !parse_number(res->value(0, 0), n))
    return fail(make_error(errc::malformed, "unreadable purge count"));
  if (auto done = conn_.exec("COMMIT", {}, false, "committing a purge"); !done)
    return fail(std::move(done.error()));
  return n;
}

} // namespace drover::pg
