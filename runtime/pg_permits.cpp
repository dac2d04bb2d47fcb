// Concurrency permits of job types across the coordinators that share the
// partitions (runtime/pg.hpp, session::grant_permits; schema version 9;
// docs/jobs.md, "Concurrency limits").
//
// A coordinator's queue counts the attempts of a limited type it runs;
// with several coordinators each would let N run. So before a job of a
// limited type takes its slot, its coordinator asks for a permit here. A
// permit is a row of drover.concurrency_permits and counts:
//  - while its job is `processing` (an attempt runs, or may: until its
//    outcome is written, whoever owns the partition then), or
//  - granted but not started yet: while the job is live, no attempt of it
//    started after the grant (no `started` event after the job's seq at
//    the grant) and its partition's lease is at the epoch it was granted
//    under. A job whose attempt started and ended (it waits for a retry
//    now), one that finished or was cancelled, and the grants of an owner
//    that died or was deposed stop counting by themselves; nothing has to
//    be given back. (Events that leave a waiting job waiting, a zombie's
//    rejected report or a webhook attempt of a redriven job, do not end
//    its grant.)
// Rows that stopped counting are deleted by the next grant of their key,
// under a transaction-scoped advisory lock of the key, so two coordinators
// granting the same key count each other's grants.
//
// Fairness between coordinators: one refused a permit it asked for (within
// `most_new`: the jobs it has workers for) records the first such job
// (drover.concurrency_waiters); a grant to
// another coordinator leaves one permit free for each such waiter whose
// job was submitted before the asker's first (job ids sort by submission),
// so a coordinator that keeps completing and asking again does not starve
// one that asks a moment later. Waiters not refreshed within 5 s (their
// coordinator stopped asking) are not counted.

#include "runtime/errors.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg.hpp"

#include <algorithm>
#include <string>
#include <unordered_set>
#include <vector>

namespace drover::pg {

namespace {

constexpr size_t max_permit_request = 10000;

caf::error check_permit_request(const std::string& type,
                                const std::string& tenant, uint32_t limit,
                                const std::vector<std::string>& job_ids) {
  if (type.empty() || type.size() > 256 || tenant.size() > 256)
    return make_error(errc::invalid_request,
                      "permits: type must be 1-256 bytes, tenant at most 256");
  if (limit == 0 || limit > 1000000)
    return make_error(errc::invalid_request,
                      "permits: limit must be within [1, 1000000]");
  if (job_ids.size() > max_permit_request)
    return make_error(errc::invalid_request,
                      "permits: at most " + std::to_string(max_permit_request)
                          + " jobs per request");
  for (const auto& id : job_ids)
    if (id.empty() || id.size() > 64)
      return make_error(errc::invalid_request,
                        "permits: a job id must be 1-64 bytes");
  return caf::none;
}

} // namespace

caf::expected<std::vector<std::string>>
session::grant_permits(const std::string& type, const std::string& tenant,
                       uint32_t limit, uint32_t most_new,
                       const std::vector<std::string>& job_ids) {
  if (auto err = check_permit_request(type, tenant, limit, job_ids))
    return err;
  if (!fence_)
    return make_error(errc::invalid_request,
                      "permits: only a coordinator writing under partition "
                      "leases asks for permits");
  // The jobs of partitions this fence writes, in the order asked.
  std::vector<std::string> asking;
  std::vector<int32_t> partitions;
  std::vector<int32_t> touched;
  std::unordered_set<std::string> seen;
  for (const auto& id : job_ids) {
    auto p = partition_of_id(id);
    if (fence_->epoch_of(p) < 0 || !seen.insert(id).second)
      continue;
    asking.push_back(id);
    partitions.push_back(p);
    touched.push_back(p);
  }
  std::vector<std::string> out;
  if (asking.empty())
    return out;
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  const char* what = "granting concurrency permits";
  if (auto err = begin_write(touched, what))
    return err;
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };
  auto key = params{}.text(type).text(tenant);
  // Never waits for the key: a holder that paused (idle in its transaction
  // until the lease TTL ends it) would hold up this session's writes.
  //
  // The grant commits synchronously, like the job writes: the queue starts
  // the granted jobs as soon as it hears, so a grant lost with PostgreSQL
  // after the answer (an asynchronous commit not flushed yet) would let its
  // job run without a permit that counts. (Measured: off for these
  // transactions alone, on their own connection, the limited drain was
  // not faster beyond the noise, 0.58x against 0.55x of the reference.)
  auto locked = conn_.exec_prepared(
      "drover_permit_lock",
      "SELECT pg_try_advisory_xact_lock(hashtextextended('drover.permit:' || "
      "$1 || ':' || $2, 0))",
      key, false, what);
  if (!locked)
    return fail(std::move(locked.error()));
  if (locked->value(0, 0) != "t") {
    rollback_quietly();
    return out; // busy: asked again later
  }
  // In one statement: the permits that stopped counting are deleted; the
  // rest are read (the snapshot is the one before the delete: those
  // deleted are left out), and with them, on every row (one row with no
  // job when no permit counts), the other coordinators' waiters whose job
  // came before this ask's first.
  auto held = conn_.exec_prepared(
      "drover_permit_held",
      "WITH gone AS (DELETE FROM drover.concurrency_permits p WHERE p.type = "
      "$1 AND p.tenant = $2 AND NOT EXISTS (SELECT 1 FROM drover.jobs j "
      "WHERE j.job_id = p.job_id AND j.final_status IS NULL AND (j.status = "
      "2 OR (EXISTS (SELECT 1 FROM drover.partition_leases l WHERE "
      "l.partition = p.partition AND l.epoch = p.epoch) AND NOT EXISTS "
      "(SELECT 1 FROM drover.events e WHERE e.job_id = p.job_id AND e.seq > "
      "p.seq AND e.kind = 3)))) RETURNING p.job_id), w AS (SELECT count(*) AS "
      "before FROM drover.concurrency_waiters WHERE type = $1 AND tenant = "
      "$2 AND instance <> $3 AND seen_at > now() - interval '5 s' AND job_id "
      "< $4) "
      "SELECT w.before, k.job_id FROM w LEFT JOIN (SELECT p.job_id FROM "
      "drover.concurrency_permits p WHERE p.type = $1 AND p.tenant = $2 AND "
      "NOT EXISTS (SELECT 1 FROM gone g WHERE g.job_id = p.job_id)) k ON "
      "true",
      params{}.text(type).text(tenant).text(fence_->instance).text(asking[0]),
      false, what);
  if (!held)
    return fail(std::move(held.error()));
  if (held->rows() < 1)
    return fail(make_error(errc::unavailable,
                           std::string{what} + ": no row read back"));
  std::unordered_set<std::string> holding;
  for (int row = 0; row < held->rows(); ++row)
    if (!held->is_null(row, 1))
      holding.emplace(held->value(row, 1));
  // And permits left for other coordinators' earlier waiters.
  auto counted
      = holding.size()
        + static_cast<size_t>(std::stoll(std::string{held->value(0, 0)}));
  array_param ids{array_param::element::text};
  array_param parts{array_param::element::int4};
  array_param epochs{array_param::element::int8};
  size_t grants = 0;
  // The first job refused a permit it asked for because the limit is used
  // up: this coordinator's waiter. Jobs beyond `most_new` (named only so
  // that held ones are found) wait for nothing from the others.
  const std::string* first_refused = nullptr;
  for (size_t i = 0; i < asking.size(); ++i) {
    if (holding.count(asking[i]) > 0) {
      out.push_back(asking[i]); // held already (an answer lost, asked again)
      continue;
    }
    if (grants >= most_new)
      continue;
    if (counted + grants >= limit) {
      if (first_refused == nullptr)
        first_refused = &asking[i];
      continue;
    }
    ids.text(asking[i]);
    parts.int32(partitions[i]);
    epochs.int64(fence_->epoch_of(partitions[i]));
    ++grants;
  }
  // Only jobs that wait (live, not running) get one: the row's seq is the
  // job's as it is now. In the same statement: refused one it asked for,
  // this coordinator waits (its first refused job is its waiter); else it
  // waits no more.
  static const std::string insert_permits
      = "INSERT INTO drover.concurrency_permits (type, tenant, job_id, seq, "
        "partition, epoch) SELECT $1, $2, j.job_id, j.seq, r.partition, "
        "r.epoch FROM unnest($3::text[], $4::int4[], $5::int8[]) AS "
        "r(job_id, partition, epoch) JOIN drover.jobs j ON j.job_id = "
        "r.job_id WHERE j.final_status IS NULL AND j.status <> 2 RETURNING "
        "job_id";
  auto ps = params{}
                .text(type)
                .text(tenant)
                .array(ids)
                .array(parts)
                .array(epochs)
                .text(fence_->instance);
  auto grant = [&]() {
    if (first_refused != nullptr)
      return conn_.exec_prepared(
          "drover_permit_grant_wait",
          "WITH w AS (INSERT INTO drover.concurrency_waiters (type, tenant, "
          "instance, job_id) VALUES ($1, $2, $6, $7) ON CONFLICT (type, "
          "tenant, instance) DO UPDATE SET job_id = EXCLUDED.job_id, seen_at "
          "= now()) "
              + insert_permits,
          ps.text(*first_refused), false, what);
    return conn_.exec_prepared(
        "drover_permit_grant",
        "WITH w AS (DELETE FROM drover.concurrency_waiters WHERE type = $1 "
        "AND tenant = $2 AND (instance = $6 OR seen_at < now() - interval '1 "
        "hour')) "
            + insert_permits,
        ps, false, what);
  };
  auto res = grant();
  if (!res)
    return fail(std::move(res.error()));
  for (int row = 0; row < res->rows(); ++row)
    out.emplace_back(res->value(row, 0));
  if (auto done = conn_.exec("COMMIT", {}, false, what); !done)
    return fail(std::move(done.error()));
  return out;
}

} // namespace drover::pg
