#pragma once

// drover_bench_share --type-limit L: what a job type's concurrency limit
// costs coordinators that share the partitions. Each N runs twice, each on
// a fresh database: first with no limit on the jobs' type (the reference),
// then with --concurrency-limit sleep=L on every coordinator, so that every
// job needs a permit from PostgreSQL (runtime/pg_permits.cpp,
// actors/queue_permits.cpp) before it takes its slot. With L above the
// slots in all, the limit holds nothing back: the difference between the
// two drains is what asking for permits costs.
//
// Permits are counted from the run database's statistics, read once every
// backend has ended (a backend publishes its counts when it leaves): rows
// inserted into drover.concurrency_permits (grants), rows inserted into or
// updated in drover.concurrency_waiters (the waiter an ask records, when
// runtime/pg_permits.cpp records one), and the database's rolled-back
// transactions over its whole run (an ask that finds another coordinator
// granting the key rolls back). Asks that committed are not counted apart: the
// drain's extra commits per job over the reference's stand for them.

#include "benchmarks/share_probe.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace drover::bench {

/// The jobs' type in drover_bench_share (the no-op `sleep`).
inline const std::string share_job_type = "sleep";

struct permit_counts {
  int64_t granted = -1;       // rows inserted into concurrency_permits
  int64_t waiter_writes = -1; // rows written to concurrency_waiters
  int64_t rollbacks = -1;     // the database's, over its whole run
};

/// Read once the coordinators' backends have ended.
inline permit_counts read_permit_counts(pg::connection& db) {
  auto table = [&](const std::string& what, const std::string& name) {
    return query_int(db, "SELECT " + what
                             + " FROM pg_stat_user_tables WHERE relid = "
                               "'drover."
                             + name + "'::regclass");
  };
  permit_counts out;
  out.granted = table("n_tup_ins", "concurrency_permits");
  out.waiter_writes = table("n_tup_ins + n_tup_upd", "concurrency_waiters");
  out.rollbacks = query_int(db, "SELECT xact_rollback FROM pg_stat_database "
                                "WHERE datname = current_database()");
  return out;
}

inline double per_job(int64_t count, int64_t jobs) {
  return count < 0 || jobs <= 0
             ? -1.0
             : static_cast<double>(count) / static_cast<double>(jobs);
}

inline void add_permits_to(json_line& j, const permit_counts& c, int64_t jobs) {
  j.num("permits_granted_per_job", per_job(c.granted, jobs), 3)
      .num("permit_waiter_writes_per_job", per_job(c.waiter_writes, jobs), 3)
      .num("rollbacks_per_job", per_job(c.rollbacks, jobs), 3);
}

/// One configuration's drain, as the permit summary compares them.
struct permit_row {
  uint32_t n = 0;
  uint32_t limit = 0; // 0: none
  bool ok = false;
  int64_t jobs = 0;
  double drain_per_s = 0;
  phase_cpu drain;
  permit_counts permits;
};

/// For each N with both drains: one JSON line of the limited drain's ratios
/// to the reference (and its extra commits per job), then a table.
inline void print_permit_summary(const std::vector<permit_row>& rows,
                                 uint32_t limit) {
  auto find = [&](uint32_t n, uint32_t l) -> const permit_row* {
    for (const auto& r : rows)
      if (r.n == n && r.limit == l && r.ok)
        return &r;
    return nullptr;
  };
  auto ratio = [](double x, double ref) {
    return ref > 0 ? fmt(x / ref, 2) : std::string{"null"};
  };
  json_line sum;
  sum.str("summary", "drain with " + share_job_type + "="
                         + std::to_string(limit)
                         + " over no limit, same N, same run");
  for (const auto& r : rows) {
    const auto* ref = find(r.n, 0);
    if (r.limit == 0 || !r.ok || ref == nullptr)
      continue;
    sum.raw("n" + std::to_string(r.n),
            "{\"jobs_per_s\":" + ratio(r.drain_per_s, ref->drain_per_s)
                + ",\"coordinators_us_per_job\":"
                + ratio(r.drain.coordinators, ref->drain.coordinators)
                + ",\"pg_backends_us_per_job\":"
                + ratio(r.drain.pg_backends, ref->drain.pg_backends)
                + ",\"system_us_per_job\":"
                + ratio(r.drain.system(), ref->drain.system())
                + ",\"extra_commits_per_job\":"
                + fmt(r.drain.commits - ref->drain.commits, 3) + "}");
  }
  sum.print();
  std::printf("\n%-3s %-6s | %9s %10s %9s %10s %9s | %9s %9s %9s\n", "N",
              "limit", "drain/s", "coord us/j", "PG us/j", "syst. us/j",
              "commits/j", "granted/j", "waits/j", "rollb./j");
  for (const auto& r : rows)
    std::printf("%-3u %-6s | %9s %10s %9s %10s %9s | %9s %9s %9s\n", r.n,
                r.limit == 0 ? "none" : std::to_string(r.limit).c_str(),
                fmt(r.drain_per_s).c_str(), fmt(r.drain.coordinators).c_str(),
                fmt(r.drain.pg_backends).c_str(), fmt(r.drain.system()).c_str(),
                fmt(r.drain.commits, 3).c_str(),
                fmt(per_job(r.permits.granted, r.jobs), 3).c_str(),
                fmt(per_job(r.permits.waiter_writes, r.jobs), 3).c_str(),
                fmt(per_job(r.permits.rollbacks, r.jobs), 3).c_str());
  std::printf("(drain only; granted: permits granted, waits: rows written "
              "to drover.concurrency_waiters, rollb.: the database's "
              "rolled-back transactions, whole run; per job)\n");
  std::fflush(stdout);
}

} // namespace drover::bench
