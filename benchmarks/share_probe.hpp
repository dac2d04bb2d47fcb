#pragma once

// What drover_bench_share measures in a cluster of drover-node processes
// sharing one PostgreSQL database: the CPU of each part per job (from
// /proc), the PostgreSQL processes serving the run's database, its commit
// count, and the worker agents' counters as the coordinators list them.

#include "benchmarks/http_submit.hpp"
#include "benchmarks/issue6_support.hpp"
#include "benchmarks/share_fleet.hpp"

#include <array>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace drover::bench {

/// CPU microseconds per job of one phase, by part of the system.
struct phase_cpu {
  double coordinators = 0;
  double gateway = 0;
  double workers = 0;
  double pg_backends = 0;
  double pg_aux = 0;
  double bench_client = 0;
  int pg_backends_missed = 0;      // ended within the phase: not counted
  double commits = 0;              // per job (-1: not known)
  double coordinator_switches = 0; // context switches per job, all threads

  double system() const {
    return coordinators + gateway + workers + pg_backends;
  }
  void add_to(json_line& j, const std::string& prefix) const {
    j.num(prefix + "_coordinators_us_per_job", coordinators)
        .num(prefix + "_gateway_us_per_job", gateway)
        .num(prefix + "_workers_us_per_job", workers)
        .num(prefix + "_pg_backends_us_per_job", pg_backends)
        .num(prefix + "_system_us_per_job", system())
        .num(prefix + "_pg_aux_us_per_job", pg_aux)
        .num(prefix + "_bench_client_us_per_job", bench_client)
        .integer(prefix + "_pg_backends_missed", pg_backends_missed)
        .num(prefix + "_commits_per_job", commits, 3)
        .num(prefix + "_coordinator_context_switches_per_job",
             coordinator_switches, 2);
  }
};

/// The first column of `sql`'s rows, as process ids.
inline std::vector<int> pids_from(pg::connection& db, const std::string& sql) {
  std::vector<int> out;
  if (auto r = db.exec(sql))
    for (int i = 0; i < r->rows(); ++i)
      out.push_back(std::atoi(std::string{r->value(i, 0)}.c_str()));
  return out;
}

/// The run database's PostgreSQL backends but `db`'s own.
inline std::vector<int> backends(pg::connection& db) {
  return pids_from(db, "SELECT pid FROM pg_stat_activity WHERE datname = "
                       "current_database() AND pid <> pg_backend_pid()");
}

/// The server's WAL writer, checkpointer and background writer (they
/// serve every database of the server).
inline std::vector<int> aux(pg::connection& db) {
  return pids_from(db, "SELECT pid FROM pg_stat_activity WHERE backend_type "
                       "IN ('walwriter', 'checkpointer', 'background "
                       "writer')");
}

/// The first value of `sql`'s first row; -1 if none (or an error).
inline int64_t query_int(pg::connection& db, const std::string& sql) {
  auto r = db.exec(sql);
  if (!r || r->rows() == 0 || r->is_null(0, 0))
    return -1;
  return std::strtoll(std::string{r->value(0, 0)}.c_str(), nullptr, 10);
}

/// Committed transactions of the run's database so far, as PostgreSQL
/// has published them (on a connection of its own, which adds one).
inline int64_t commits_of(const std::string& url) {
  return std::strtoll(
      ("0"
       + sql_value(url, "SELECT xact_commit FROM pg_stat_database WHERE "
                        "datname = current_database()"))
          .c_str(),
      nullptr, 10);
}

inline std::string kind(event_kind k) {
  return std::to_string(static_cast<int>(k));
}

inline std::string completed_status() {
  return std::to_string(static_cast<int>(job_status::completed));
}

/// What every part had spent when a phase began.
struct phase_probe {
  std::map<int, double> nodes, pg, aux;
  double self = 0;
  int64_t coordinator_switches = 0;
};

inline phase_probe probe(const fleet& f, pg::connection& db) {
  return {cpu_of(f.all_pids()), cpu_of(backends(db)), cpu_of(aux(db)),
          process_cpu_seconds(), context_switches(f.pids_of("c"))};
}

/// Per job of `jobs`, since `p`.
inline phase_cpu cpu_per_job(const phase_probe& p, const fleet& f,
                             pg::connection& db, int64_t jobs) {
  auto per_job = [jobs](double s) {
    return jobs <= 0 ? 0.0 : s * 1e6 / static_cast<double>(jobs);
  };
  auto nodes = [&](const std::string& prefix) {
    int missed = 0;
    auto pids = f.pids_of(prefix);
    return per_job(cpu_since(fleet::cpu_subset(p.nodes, pids), pids, missed));
  };
  phase_cpu out;
  out.coordinators = nodes("c");
  out.gateway = nodes("gw");
  out.workers = nodes("w");
  out.pg_backends
      = per_job(cpu_since(p.pg, backends(db), out.pg_backends_missed));
  int aux_missed = 0;
  out.pg_aux = per_job(cpu_since(p.aux, aux(db), aux_missed));
  out.bench_client = per_job(process_cpu_seconds() - p.self);
  out.coordinator_switches
      = jobs <= 0 ? 0.0
                  : static_cast<double>(context_switches(f.pids_of("c"))
                                        - p.coordinator_switches)
                        / static_cast<double>(jobs);
  return out;
}

/// The worker agents' counters, summed over every coordinator's node list:
/// GET /api/admin/nodes through the gateway goes to the coordinators in
/// turn, and each agent ("<node>.c<i>") is counted once.
struct agent_counters {
  int64_t agents = 0, leases = 0, batches = 0, reports = 0, heartbeats = 0;
};

inline agent_counters counters_of_agents(int http_port, uint32_t n) {
  http_connection conn{http_port};
  std::map<std::string, std::array<int64_t, 4>> seen;
  const std::string node_key = "{\"node\":\"";
  for (uint32_t k = 0; k < 3 * n; ++k) {
    std::string body, error;
    if (conn.request("/api/admin/nodes", "", body, error) != 200)
      continue;
    for (auto at = body.find(node_key); at != std::string::npos;
         at = body.find(node_key, at + 1)) {
      auto name_at = at + node_key.size();
      auto name = body.substr(name_at, body.find('"', name_at) - name_at);
      auto c = body.find("\"counters\":{", name_at);
      auto next = body.find(node_key, name_at);
      if (c == std::string::npos || c > next)
        continue; // a gateway node: no counters
      auto end = body.find('}', c);
      auto field = [&](const std::string& key) -> int64_t {
        auto f = body.find("\"" + key + "\":", c);
        return f < end ? std::atoll(body.c_str() + f + key.size() + 3) : 0;
      };
      seen[name] = {field("leases"), field("lease_batches"), field("reports"),
                    field("heartbeats")};
    }
  }
  agent_counters out;
  for (auto& [_, v] : seen) {
    ++out.agents;
    out.leases += v[0];
    out.batches += v[1];
    out.reports += v[2];
    out.heartbeats += v[3];
  }
  return out;
}

/// Idle for `seconds`: the coordinators' CPU in ms per second.
inline double idle_window(const fleet& f, double seconds) {
  auto coords = f.pids_of("c");
  auto c0 = cpu_of(coords);
  auto t0 = steady::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  int missed = 0;
  return 1e3 * cpu_since(c0, coords, missed) / seconds_since(t0);
}

} // namespace drover::bench
