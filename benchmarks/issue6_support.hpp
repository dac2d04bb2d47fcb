#pragma once

// Helpers shared by the issue-6 benchmark programs (drover_bench_drain,
// _latency, _deep, _recovery): the machine's load, CPU accounting of this
// process and of the PostgreSQL processes serving one database, scratch
// databases, an in-process job system with the memory or PostgreSQL store,
// and one-line JSON output.

#include "benchmarks/bench_support.hpp"

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/pg.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/submit.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace drover::bench {

// -- the machine
// ------------------------------------------------------------------

/// 1, 5 and 15 minute load averages.
inline std::array<double, 3> loadavg() {
  std::array<double, 3> out{};
  std::ifstream in{"/proc/loadavg"};
  in >> out[0] >> out[1] >> out[2];
  return out;
}

/// User + system CPU seconds of this process (all threads).
inline double process_cpu_seconds() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
         + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/// Resident set size of this process, bytes.
inline int64_t rss_bytes() {
  std::ifstream in{"/proc/self/statm"};
  int64_t pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

/// User + system CPU seconds of process `pid` (0 if it is gone).
inline double pid_cpu_seconds(int pid) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/stat"};
  std::string line;
  if (!std::getline(in, line))
    return 0;
  auto close = line.rfind(')');
  if (close == std::string::npos)
    return 0;
  std::istringstream rest{line.substr(close + 2)};
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14)
      utime = std::atof(field.c_str());
    if (i == 15)
      stime = std::atof(field.c_str());
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// -- PostgreSQL
// -------------------------------------------------------------------

/// URL of database `db` on the server of `url` (libpq URI form
/// postgresql:///name?...).
inline std::string with_db(const std::string& url, const std::string& db) {
  auto p = url.find("///");
  auto q = url.find('?');
  if (p == std::string::npos)
    return url;
  return url.substr(0, p + 3) + db
         + (q == std::string::npos ? "" : url.substr(q));
}

/// Runs `stmt`; the first row's columns go to `row` if given.
inline bool sql(const std::string& url, const std::string& stmt,
                std::vector<std::string>* row = nullptr) {
  auto s = pg::connection::open(url);
  if (!s) {
    std::cerr << "cannot connect: " << describe(s.error()) << std::endl;
    return false;
  }
  auto r = s->exec(stmt);
  if (!r) {
    std::cerr << stmt << ": " << describe(r.error()) << std::endl;
    return false;
  }
  if (row) {
    row->clear();
    if (r->rows() > 0)
      for (int c = 0; c < r->columns(); ++c)
        row->emplace_back(r->value(0, c));
  }
  return true;
}

/// The first value of the first row, "" on error or no row.
inline std::string sql_value(const std::string& url, const std::string& stmt) {
  std::vector<std::string> row;
  if (!sql(url, stmt, &row) || row.empty())
    return {};
  return row[0];
}

/// All rows of column 0 (and 1 if present) as text pairs.
inline std::vector<std::pair<std::string, std::string>>
sql_rows(const std::string& url, const std::string& stmt) {
  std::vector<std::pair<std::string, std::string>> out;
  auto s = pg::connection::open(url);
  if (!s)
    return out;
  auto r = s->exec(stmt);
  if (!r)
    return out;
  for (int i = 0; i < r->rows(); ++i)
    out.emplace_back(std::string{r->value(i, 0)},
                     r->columns() > 1 ? std::string{r->value(i, 1)} : "");
  return out;
}

/// A fresh database on the server of `admin_url`; exits on failure.
inline std::string create_db(const std::string& admin_url,
                             const std::string& name) {
  if (!sql(admin_url, "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
      || !sql(admin_url, "CREATE DATABASE " + name)) {
    std::cerr << "cannot create database " << name << std::endl;
    std::exit(2);
  }
  return with_db(admin_url, name);
}

inline void drop_db(const std::string& admin_url, const std::string& name) {
  sql(admin_url, "DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
}

/// Refuses to measure anything below D2.
inline void require_d2(const std::string& url) {
  auto fsync = sql_value(url, "SHOW fsync");
  auto sc = sql_value(url, "SHOW synchronous_commit");
  if (fsync != "on" || sc != "on") {
    std::cerr << "not D2: fsync=" << fsync << " synchronous_commit=" << sc
              << std::endl;
    std::exit(2);
  }
}

/// The PostgreSQL processes whose CPU a run of database `db` costs: its
/// backends and the cluster's auxiliary processes (WAL writer,
/// checkpointer, background writer, ...). Backends of other databases are
/// left out: the cluster is shared. Autovacuum workers that start later
/// are not seen.
inline std::vector<int> pg_pids_of(const std::string& url,
                                   const std::string& db) {
  std::vector<int> out;
  for (auto& [pid, _] :
       sql_rows(url, "SELECT pid FROM pg_stat_activity WHERE datname = '" + db
                         + "' OR datname IS NULL"))
    out.push_back(std::atoi(pid.c_str()));
  return out;
}

inline double pids_cpu_seconds(const std::vector<int>& pids) {
  double total = 0;
  for (auto pid : pids)
    total += pid_cpu_seconds(pid);
  return total;
}

// -- an in-process job system
// -------------------------------------------------------

/// Holds attempts back until released (each attempt runs on its own thread,
/// the default executor, so a held attempt blocks only its thread).
struct gate {
  std::mutex mx;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock<std::mutex> lock{mx};
    cv.wait(lock, [this] { return open; });
  }
  void release() {
    {
      std::lock_guard<std::mutex> guard{mx};
      open = true;
    }
    cv.notify_all();
  }
};

struct running_system {
  supervisor_actor root;
  std::shared_ptr<job_system_handles> handles;
};

/// Starts a job system under a root supervisor; `db_url` empty = memory
/// store. Exits on failure.
inline running_system
start_system(caf::actor_system& sys, std::map<std::string, uint32_t> slots,
             std::shared_ptr<const handler_registry> handlers,
             const std::string& db_url,
             std::function<void(std::function<void()>)> executor = nullptr,
             std::shared_ptr<const pg::write_fence> fence = nullptr,
             flow_limits flow = {}) {
  job_system_config jc;
  jc.queue.flow = std::move(flow);
  jc.slots = std::move(slots);
  jc.handlers = std::move(handlers);
  jc.executor = std::move(executor);
  if (!db_url.empty()) {
    pg_store_config pc;
    pc.conninfo = db_url;
    if (fence) {
      // As drover-node: new jobs go into the partitions the fence holds
      // (all of them), so a write locks as many lease rows as a node's.
      jc.queue.partitions = fence->partitions;
      jc.queue.partition_count = static_cast<int32_t>(fence->partitions.size());
    }
    pc.fence = std::move(fence);
    jc.make_store
        = [pc](caf::actor_system& s) { return spawn_pg_store(s, pc); };
  }
  running_system out;
  out.handles = std::make_shared<job_system_handles>();
  supervisor_spec spec{"bench", {}, {job_system_child(jc, out.handles)}};
  auto root = spawn_supervisor(sys, spec);
  if (!root) {
    std::cerr << "cannot start: " << describe(root.error()) << std::endl;
    std::exit(2);
  }
  out.root = *root;
  return out;
}

inline caf::optional<queue_stats> get_stats(caf::scoped_actor& self,
                                            const running_system& rs) {
  caf::optional<queue_stats> out;
  if (auto q = rs.handles->queue())
    self->request(q, std::chrono::seconds{5}, stats_atom::value)
        .receive([&](queue_stats& s) { out = s; }, [](caf::error&) {});
  return out;
}

/// Waits until `idle` workers announced themselves (exits after 60 s).
inline void wait_idle_workers(caf::scoped_actor& self, const running_system& rs,
                              uint64_t idle) {
  auto deadline = steady::now() + std::chrono::seconds{60};
  for (;;) {
    if (auto s = get_stats(self, rs); s && s->idle_workers >= idle)
      return;
    if (steady::now() > deadline) {
      std::cerr << "the job system did not start" << std::endl;
      std::exit(3);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{1});
  }
}

inline void stop_system(caf::actor_system& sys, running_system& rs) {
  caf::scoped_actor self{sys};
  self->monitor(rs.root);
  self->send_exit(rs.root, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {});
}

inline uint64_t depth_of(const queue_stats& s) {
  return s.depth[0] + s.depth[1] + s.depth[2];
}

/// Submits `n` copies of `req` with `window` outstanding; returns the
/// windowed result, `first_error` gets the first failure.
inline window_result preload(caf::actor_system& sys, const queue_actor& queue,
                             const submit_request& req, uint64_t n,
                             uint64_t window, std::string& first_error) {
  auto err = std::make_shared<std::string>();
  auto res
      = run_windowed(sys, n, window,
                     [queue, req, err](caf::event_based_actor* a, uint64_t,
                                       std::function<void(bool)> done) {
                       a->request(queue, caf::infinite, submit_atom::value, req)
                           .then([done](job_record&) { done(true); },
                                 [done, err](caf::error& e) {
                                   if (err->empty())
                                     *err = describe(e);
                                   done(false);
                                 });
                     });
  first_error = *err;
  return res;
}

/// Preloads `n` no-op `sleep` jobs ({"ms":0}) into the database at
/// `db_url` through a job system whose one worker serves another class, so
/// that every job stays queued; the system stops afterwards. The submits'
/// windowed result; `first_error` gets the first failure.
///
/// `spread`: into every partition of the database in turn, as a node
/// owning them all puts keyless jobs (it takes the partition leases for the
/// preload and gives them back after); otherwise all go into partition 0.
inline window_result preload_noop_jobs(const std::string& db_url, uint64_t n,
                                       uint64_t window,
                                       std::string& first_error,
                                       bool spread = false) {
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", size_t{2});
  caf::actor_system sys{cfg};
  auto handlers = std::make_shared<handler_registry>();
  handlers->register_handler(
      "sleep", [](task_context&) { return task_outcome::success(); });
  std::optional<pg::lease_grant> grant;
  if (spread) {
    auto g = pg::claim_coordinator(db_url, pg::this_process("bench-preload"),
                                   std::chrono::hours{1});
    if (!g) {
      std::cerr << "cannot take the leases: " << describe(g.error())
                << std::endl;
      std::exit(2);
    }
    grant = std::move(*g);
  }
  auto rs = start_system(sys, {{"preload-only", 1}}, handlers, db_url, nullptr,
                         grant ? grant->fence() : nullptr);
  {
    caf::scoped_actor self{sys};
    wait_idle_workers(self, rs, 1);
  }
  submit_request req;
  req.type = "sleep";
  req.input = R"({"ms":0})";
  auto res = preload(sys, rs.handles->queue(), req, n, window, first_error);
  stop_system(sys, rs);
  if (grant) {
    auto db = pg::session::open(db_url);
    if (!db || pg::release(*db, *grant)) {
      std::cerr << "cannot give the preload's leases back" << std::endl;
      std::exit(2);
    }
  }
  return res;
}

// -- output
// ------------------------------------------------------------------------

/// One JSON object on one line, fields in insertion order.
class json_line {
public:
  json_line& num(const std::string& k, double v, int prec = 0) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.*f", prec, v);
    return raw(k, buf);
  }
  json_line& integer(const std::string& k, int64_t v) {
    return raw(k, std::to_string(v));
  }
  json_line& str(const std::string& k, const std::string& v) {
    std::string q = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\')
        q += '\\';
      if (static_cast<unsigned char>(c) < 0x20)
        q += ' ';
      else
        q += c;
    }
    return raw(k, q + "\"");
  }
  json_line& boolean(const std::string& k, bool v) {
    return raw(k, v ? "true" : "false");
  }
  json_line& raw(const std::string& k, const std::string& v) {
    body_ += (body_.empty() ? "" : ",") + ("\"" + k + "\":" + v);
    return *this;
  }
  json_line& load(const std::string& prefix = "loadavg") {
    return load(prefix, loadavg());
  }
  json_line& load(const std::string& prefix, const std::array<double, 3>& l) {
    return raw(prefix, "[" + fmt_plain(l[0]) + "," + fmt_plain(l[1]) + ","
                           + fmt_plain(l[2]) + "]");
  }
  void print() const {
    std::printf("{%s}\n", body_.c_str());
    std::fflush(stdout);
  }

private:
  static std::string fmt_plain(double x) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.2f", x);
    return buf;
  }
  std::string body_;
};

/// Latency summary fields (microseconds) of `xs` under `prefix`.
inline void add_latency(json_line& j, const std::string& prefix,
                        const std::vector<double>& xs_us) {
  j.num(prefix + "_p50_us", percentile(xs_us, 0.50));
  j.num(prefix + "_p99_us", percentile(xs_us, 0.99));
  j.num(prefix + "_p999_us", percentile(xs_us, 0.999));
  j.num(prefix + "_max_us",
        xs_us.empty() ? 0 : *std::max_element(xs_us.begin(), xs_us.end()));
  double sum = 0;
  for (auto x : xs_us)
    sum += x;
  j.num(prefix + "_mean_us", xs_us.empty() ? 0 : sum / xs_us.size());
}

/// Comma-separated numbers.
template <class T>
std::vector<T> parse_list(const std::string& text) {
  std::vector<T> out;
  std::stringstream ss{text};
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty())
      out.push_back(static_cast<T>(std::stod(item)));
  return out;
}

} // namespace drover::bench
