#pragma once

// What the fault tests of sharing coordinators (tests/nodes/
// share_fault_test.cpp) add to support/sharing.hpp: a PostgreSQL role per
// coordinator (so that one can be cut off), worker nodes that reach one
// coordinator through a proxy, the lease rows as (owner, epoch) per
// partition, and the writer audit: who wrote each row of the audit log,
// checked against the owner of the job's partition at that moment.

#include "support/audit.hpp"
#include "support/sharing.hpp"

#include <catch2/catch.hpp>

#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace drover::testing::cluster_harness {

/// `url` logging in as `role`, a new login role (a superuser, like the
/// test's own user: the nodes migrate the schema). A coordinator started
/// with it can be cut off alone: ALTER ROLE ... NOLOGIN and its sessions
/// terminated.
inline std::string url_as(pg::connection& admin, const std::string& url,
                          const std::string& role) {
  run(admin, "CREATE ROLE " + role + " LOGIN SUPERUSER");
  return must(pg::conninfo_with(url, {{"user", role}}));
}

/// Terminates every session of `role`; how many there were.
inline int64_t kill_sessions_of(const std::string& url,
                                const std::string& role) {
  return scalar(url, "SELECT count(pg_terminate_backend(pid)) FROM "
                     "pg_stat_activity WHERE usename = '"
                         + role + "'");
}

/// Owner node ("" if none) and epoch per partition.
using lease_map = std::map<int, std::pair<std::string, int64_t>>;

/// Every partition's lease row.
inline lease_map leases_of(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  auto res = run(conn, "SELECT partition, coalesce(owner_node, ''), epoch "
                       "FROM drover.partition_leases");
  lease_map out;
  for (int row = 0; row < res.rows(); ++row)
    out[std::stoi(std::string{res.value(row, 0)})]
        = {std::string{res.value(row, 1)},
           std::stoll(std::string{res.value(row, 2)})};
  return out;
}

/// The --coordinator list of `names`' cluster ports, except that the
/// coordinators in `via` are reached at the given (proxy) ports.
inline std::string
coordinator_list_via(sharing& s, const std::vector<std::string>& names,
                     const std::map<std::string, uint16_t>& via) {
  std::string list;
  for (const auto& n : names) {
    auto port = via.count(n) > 0 ? via.at(n) : s.ports.at(n);
    list += (list.empty() ? "" : ",") + std::string{"127.0.0.1:"}
            + std::to_string(port);
  }
  return list;
}

/// A worker node of sharing coordinators joining `list` with `slots`;
/// `extra`: more options. Its agent for the i-th coordinator of the list is
/// "<name>.c<i>" (docs/cluster.md).
inline process& start_worker_at(sharing& s, const std::string& name,
                                const std::string& list,
                                const std::string& slots,
                                std::vector<std::string> extra = {}) {
  std::vector<std::string> args{
      DROVER_NODE_BIN, "--node-id",     name,  "--roles",
      "worker",        "--coordinator", list,  "--join-secret",
      secret,          "--slots",       slots, "--share-partitions"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto& p = s.nodes[name];
  p = std::make_unique<process>(args, s.c.logs.path() + "/" + name + ".log");
  return *p;
}

/// From now on, every row appended to drover.events is noted with the node
/// whose session wrote it (its application_name, "drover <node id>") and
/// the owner and epoch of the job's partition as the writing transaction
/// sees them. The fence locks that lease row FOR SHARE before the write
/// (runtime/pg_fence.cpp), so no takeover commits in between: a row whose
/// writer is not its partition's owner is a write the fence let through.
inline void install_writer_audit(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  run(conn, "CREATE TABLE public.event_writers (job_id text, seq bigint, "
            "kind smallint, writer text, owner_node text, epoch bigint)");
  run(conn, "CREATE FUNCTION public.note_event_writer() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO public.event_writers SELECT NEW.job_id, NEW.seq, "
            "NEW.kind, current_setting('application_name'), l.owner_node, "
            "l.epoch FROM drover.partition_leases l "
            "WHERE l.partition = drover.partition_of(NEW.job_id); "
            "RETURN NULL; END $$");
  run(conn, "CREATE TRIGGER note_event_writer AFTER INSERT ON drover.events "
            "FOR EACH ROW EXECUTE FUNCTION public.note_event_writer()");
}

/// Rows of the writer audit whose writer was not the partition's owner
/// (described), and how many rows each node wrote.
inline std::pair<std::vector<std::string>, std::map<std::string, int64_t>>
writer_audit(const std::string& url) {
  auto conn = must(pg::connection::open(url));
  auto res = run(conn, "SELECT job_id, seq, kind, writer, "
                       "coalesce(owner_node, '(none)'), epoch "
                       "FROM public.event_writers ORDER BY job_id, seq");
  std::vector<std::string> foreign;
  std::map<std::string, int64_t> by_writer;
  for (int row = 0; row < res.rows(); ++row) {
    auto writer = std::string{res.value(row, 3)};
    auto owner = std::string{res.value(row, 4)};
    ++by_writer[writer];
    if (writer != "drover " + owner)
      foreign.push_back(std::string{res.value(row, 0)} + " seq "
                        + std::string{res.value(row, 1)} + " (kind "
                        + std::string{res.value(row, 2)} + ") written by '"
                        + writer + "' while '" + owner + "' held epoch "
                        + std::string{res.value(row, 5)});
  }
  return {foreign, by_writer};
}

/// After the faults healed: every stored job audited against
/// ../shared/RELIABILITY.md (support/audit.hpp) — each acknowledged one
/// completed exactly once, none that nobody submitted — and every audit-log
/// row written by its partition's owner.
inline void audit_share_run(const std::string& url,
                            const std::set<std::string>& acked,
                            const std::string& label) {
  auto jobs = audit_log::load_all(url);
  auto totals = audit_log::audit(jobs, acked);
  CHECK(totals.completed == acked.size());
  CHECK(jobs.size() == acked.size());
  auto [foreign, by_writer] = writer_audit(url);
  for (const auto& f : foreign)
    FAIL_CHECK("a write its partition's owner did not make: " << f);
  CHECK(by_writer.size() >= 2); // the trigger saw the run
  std::cout << "share_fault_test " << label << ": " << acked.size() << " jobs, "
            << totals.attempts << " attempts, " << totals.interrupted
            << " interrupted; audit-log rows by writer:";
  for (const auto& [writer, n] : by_writer)
    std::cout << " " << writer << "=" << n;
  std::cout << std::endl;
}

} // namespace drover::testing::cluster_harness
