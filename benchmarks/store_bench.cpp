// drover_bench_store: durable submits through the PostgreSQL store actor,
// with group commit versus one transaction per job, measured against the
// raw multi-row INSERT rate of the same PostgreSQL in the same run (a
// benchmark, not a test; figures and analysis in docs/benchmarks.md).
//
//   DROVER_PG_URL=$(scripts/pg url) build/benchmarks/drover_bench_store
//       [--runs R] [--seconds S] [--concurrency C...] [--raw-rows N]
//       [--pg-url URL]
//
// Per run (--runs, default 3; the summary shows medians over the runs):
//   1. for each C (default 1, 16, 128) and each mode — group commit (the
//      default pg_store_config, max_batch 2000) and one transaction per job
//      (max_batch 1) — a fresh database, a fresh actor system and store;
//      one client keeps C submits outstanding (`submit_atom` with
//      `submitted` events, straight to the store actor: no queue, no
//      workers) for S seconds (default 5), then waits for the rest. Acks/s
//      over the whole cell; ack latency (send -> reply) p50 and p99;
//      submits per committed transaction (pg_stat_database);
//   2. the limits, each in a fresh database: a table shaped like
//      drover.events (CREATE TABLE ... (LIKE drover.events INCLUDING ALL):
//      same columns, checks and primary key) filled by multi-row INSERTs of
//      1000 rows per statement, each statement its own transaction; and
//      Drover's own SQL without the actor: pg::session::write of batches of
//      1000 submits (a jobs row and an events row each) per transaction,
//      from one thread.
// Durability level D2: fsync on, synchronous_commit on (read from the
// server; the program refuses to measure anything weaker). A submit counts
// only once the store acknowledged it, i.e. after its commit.

#include "actors/pg_store.hpp"
#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/pg.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

using namespace drover;
using clock_type = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) {
  std::cerr << "drover_bench_store: " << what << '\n';
  std::exit(1);
}

template <class T>
T must(caf::expected<T>&& x, const char* what) {
  if (!x)
    die(std::string{what} + ": " + describe(x.error()));
  return std::move(*x);
}

double median(std::vector<double> xs) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto n = xs.size();
  return n % 2 == 1 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
}

/// Nearest-rank percentile of `xs` (sorted in place).
double percentile(std::vector<double>& xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto rank = static_cast<size_t>(p * static_cast<double>(xs.size()) + 0.5);
  return xs[std::min(xs.size() - 1, rank > 0 ? rank - 1 : 0)];
}

/// What one submit carries (a small JSON input, defaults otherwise).
job_event submitted(const std::string& id) {
  job_event ev;
  ev.job_id = id;
  ev.kind = event_kind::submitted;
  ev.at_ms = 1'800'000'000'000;
  ev.spec.type = "noop";
  ev.spec.input = R"({"n": 1})";
  return ev;
}

// -- databases ----------------------------------------------------------------

/// A fresh database on the server, dropped on destruction.
class scratch_db {
public:
  scratch_db(pg::connection& admin, const std::string& server) : admin_(admin) {
    static std::mt19937_64 rng{std::random_device{}()};
    name_ = "drover_bench_" + std::to_string(rng() % 1'000'000'000);
    must(admin_.exec("CREATE DATABASE " + name_), "creating a database");
    url_ = must(pg::conninfo_with(server, {{"dbname", name_}}),
                "building the database url");
  }
  ~scratch_db() {
    admin_.exec("DROP DATABASE IF EXISTS " + name_ + " WITH (FORCE)");
  }
  scratch_db(const scratch_db&) = delete;
  scratch_db& operator=(const scratch_db&) = delete;

  const std::string& url() const {
    return url_;
  }
  const std::string& name() const {
    return name_;
  }

private:
  pg::connection& admin_;
  std::string name_;
  std::string url_;
};

/// Transactions committed in database `name` so far.
int64_t commits_of(pg::connection& admin, const std::string& name) {
  auto res = must(admin.exec("SELECT xact_commit FROM pg_stat_database "
                             "WHERE datname = $1",
                             pg::params{}.text(name)),
                  "reading pg_stat_database");
  return res.rows() == 1 ? std::stoll(std::string{res.value(0, 0)}) : 0;
}

// -- the store ----------------------------------------------------------------

struct cell_figures {
  double acks_per_s = 0;
  double p50_us = 0;
  double p99_us = 0;
  double per_commit = 0; // submits per committed transaction
  size_t acks = 0;
  size_t failed = 0;
};

/// Keeps `outstanding` submits in flight for `duration`, then waits for the
/// rest. Returns acks/s over the whole cell and the ack latencies.
cell_figures drive(caf::actor_system& sys, const store_actor& store,
                   const std::string& prefix, size_t outstanding,
                   std::chrono::milliseconds duration) {
  caf::scoped_actor self{sys};
  std::unordered_map<std::string, clock_type::time_point> sent;
  std::vector<double> latencies;
  latencies.reserve(100000);
  cell_figures f;
  size_t next = 0;
  auto send_one = [&] {
    auto id = prefix + std::to_string(next++);
    sent.emplace(id, clock_type::now());
    // A plain send: the store's answer (record or error) comes back as an
    // ordinary message, so any number can be in flight from one client.
    self->send(store, submit_atom::value, submitted(id));
  };
  auto start = clock_type::now();
  auto stop_sending = start + duration;
  auto last = start;
  for (size_t i = 0; i < outstanding; ++i)
    send_one();
  while (!sent.empty()) {
    self->receive(
        [&](job_record& rec) {
          auto t = sent.find(rec.job_id);
          if (t == sent.end())
            return;
          last = clock_type::now();
          latencies.push_back(
              std::chrono::duration<double, std::micro>(last - t->second)
                  .count());
          sent.erase(t);
          ++f.acks;
          if (last < stop_sending)
            send_one();
        },
        [&](caf::error& err) {
          // An error reply carries no job id: count it and stop refilling
          // (the cell is void then; it is reported).
          if (f.failed++ == 0)
            std::cerr << "submit failed: " << describe(err) << '\n';
          sent.erase(sent.begin());
        });
  }
  auto secs = std::chrono::duration<double>(last - start).count();
  f.acks_per_s = secs > 0 ? static_cast<double>(f.acks) / secs : 0;
  f.p50_us = percentile(latencies, 0.50);
  f.p99_us = percentile(latencies, 0.99);
  return f;
}

cell_figures run_cell(pg::connection& admin, const std::string& server,
                      size_t max_batch, size_t outstanding,
                      std::chrono::milliseconds duration,
                      const std::string& prefix) {
  scratch_db db{admin, server};
  cell_figures f;
  size_t warm_acks = 0;
  {
    caf::actor_system_config cfg;
    register_types(cfg);
    cfg.set("scheduler.max-threads", size_t{2});
    caf::actor_system sys{cfg};
    pg_store_config pc;
    pc.conninfo = db.url();
    pc.max_batch = max_batch;
    auto store = spawn_pg_store(sys, pc);
    // Warm up one at a time (so each warm-up submit is one transaction in
    // either mode): connections open, schema migrated, plans cached.
    auto warm
        = drive(sys, store, prefix + "w", 1, std::chrono::milliseconds{300});
    if (warm.failed > 0)
      die("the warm-up failed");
    warm_acks = warm.acks;
    f = drive(sys, store, prefix + "m", outstanding, duration);
    caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
  } // the actor system is gone: the store's connections are closed
  // A backend reports its transaction counts when it exits: wait for the
  // store's two backends to go (bounded), then read them.
  for (int i = 0; i < 250; ++i) {
    auto res = must(admin.exec("SELECT count(*) FROM pg_stat_activity "
                               "WHERE datname = $1",
                               pg::params{}.text(db.name())),
                    "reading pg_stat_activity");
    if (res.value(0, 0) == "0")
      break;
    usleep(20000);
  }
  admin.exec("SELECT pg_stat_clear_snapshot()");
  // Everything the store committed in this database, less the warm-up
  // (one transaction per submit); a few session-setup and migration
  // transactions remain in the count.
  auto commits = commits_of(admin, db.name()) - static_cast<int64_t>(warm_acks);
  f.per_commit
      = commits > 0 ? static_cast<double>(f.acks) / static_cast<double>(commits)
                    : 0;
  return f;
}

// -- the limits ---------------------------------------------------------------

/// Rows/s of multi-row INSERTs (1000 rows per statement, one transaction
/// each) into a table shaped like drover.events.
double raw_insert_rate(const std::string& url, size_t rows) {
  auto s = must(pg::session::open(url), "connecting");
  if (auto err = s.migrate())
    die("migrating: " + describe(err));
  auto& conn = s.conn();
  must(conn.exec("CREATE TABLE raw_events (LIKE drover.events INCLUDING ALL)"),
       "creating raw_events");
  constexpr size_t per_statement = 1000;
  std::string sql = "INSERT INTO raw_events (job_id, seq, attempt, kind, "
                    "at_ms, payload) VALUES ";
  for (size_t i = 0; i < per_statement; ++i) {
    auto k = i * 6;
    sql += i > 0 ? ",(" : "(";
    for (size_t c = 1; c <= 6; ++c)
      sql += "$" + std::to_string(k + c) + (c < 6 ? "," : ")");
  }
  size_t inserted = 0;
  auto start = clock_type::now();
  for (size_t base = 0; base < rows; base += per_statement) {
    pg::params ps;
    ps.reserve(per_statement * 6);
    for (size_t i = 0; i < per_statement; ++i) {
      auto id = "raw" + std::to_string(base + i);
      auto ev = submitted(id);
      ev.sequence = 1;
      ps.text(id).int64(1).int32(0).int16(0).int64(ev.at_ms).bytes(
          to_bytes(ev));
    }
    must(conn.exec(sql, ps), "inserting");
    inserted += per_statement;
  }
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  return static_cast<double>(inserted) / secs;
}

/// Submits/s of pg::session::write with 1000 submits per transaction: the
/// store's SQL (a jobs row and an events row per job) without the actor.
double session_write_rate(const std::string& url, size_t jobs) {
  auto s = must(pg::session::open(url), "connecting");
  if (auto err = s.migrate())
    die("migrating: " + describe(err));
  constexpr size_t per_batch = 1000;
  size_t written = 0;
  auto start = clock_type::now();
  for (size_t base = 0; base < jobs; base += per_batch) {
    pg::write_batch b;
    for (size_t i = 0; i < per_batch; ++i) {
      auto ev = submitted("sw" + std::to_string(base + i));
      ev.sequence = 1;
      job_record rec;
      if (auto err = apply(rec, ev))
        die("apply: " + describe(err));
      b.submits.push_back(std::move(rec));
      b.events.push_back(std::move(ev));
    }
    must(s.write(b), "writing a batch");
    written += per_batch;
  }
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  return static_cast<double>(written) / secs;
}

// -- output -------------------------------------------------------------------

struct cell_key {
  size_t clients;
  bool group;
  /// By clients, group commit first.
  bool operator<(const cell_key& other) const {
    return std::make_pair(clients, !group)
           < std::make_pair(other.clients, !other.group);
  }
};

const char* mode_name(bool group) {
  return group ? "group commit (max_batch 2000)"
               : "one transaction per job (max_batch 1)";
}

void print_settings(pg::connection& admin) {
  auto version = must(admin.exec("SELECT version()"), "reading the version");
  std::printf("server: %s\n", std::string{version.value(0, 0)}.c_str());
  auto res = must(
      admin.exec("SELECT name, setting, coalesce(unit, '') FROM pg_settings "
                 "WHERE name IN ('fsync', 'synchronous_commit', "
                 "'wal_sync_method', 'full_page_writes', 'wal_level', "
                 "'commit_delay', 'shared_buffers', 'max_wal_size', "
                 "'wal_buffers', 'data_directory') ORDER BY name"),
      "reading settings");
  for (int row = 0; row < res.rows(); ++row)
    std::printf("  %s = %s %s\n", std::string{res.value(row, 0)}.c_str(),
                std::string{res.value(row, 1)}.c_str(),
                std::string{res.value(row, 2)}.c_str());
  auto fsync = must(admin.exec("SHOW fsync"), "reading fsync");
  auto sc = must(admin.exec("SHOW synchronous_commit"),
                 "reading synchronous_commit");
  bool d2 = fsync.value(0, 0) == "on" && sc.value(0, 0) != "off";
  std::printf("durability: %s (fsync %s, synchronous_commit %s)\n",
              d2 ? "D2" : "NOT D2", std::string{fsync.value(0, 0)}.c_str(),
              std::string{sc.value(0, 0)}.c_str());
  if (!d2)
    die("refusing to measure below D2");
}

} // namespace

int main(int argc, char** argv) {
  size_t runs = 3;
  std::chrono::milliseconds duration{5000};
  std::vector<size_t> concurrency{1, 16, 128};
  size_t raw_rows = 100000;
  std::string server;
  if (const char* env = std::getenv("DROVER_PG_URL"))
    server = env;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc)
        die(a + " needs a value");
      return std::string{argv[++i]};
    };
    if (a == "--runs") {
      runs = std::stoul(next());
    } else if (a == "--seconds") {
      duration = std::chrono::milliseconds{
          static_cast<int64_t>(std::stod(next()) * 1000)};
    } else if (a == "--concurrency") {
      concurrency.clear();
      while (i + 1 < argc && argv[i + 1][0] != '-')
        concurrency.push_back(std::stoul(argv[++i]));
    } else if (a == "--raw-rows") {
      raw_rows = std::stoul(next());
    } else if (a == "--pg-url") {
      server = next();
    } else {
      std::cerr << "usage: drover_bench_store [--runs R] [--seconds S] "
                   "[--concurrency C...] [--raw-rows N] [--pg-url URL]\n"
                   "(the server comes from DROVER_PG_URL unless --pg-url)\n";
      return 2;
    }
  }
  if (server.empty() || runs == 0 || concurrency.empty() || raw_rows < 1000
      || duration.count() <= 0) {
    std::cerr << "drover_bench_store: set DROVER_PG_URL (scripts/pg url); "
                 "runs, seconds and concurrency must be positive, "
                 "--raw-rows at least 1000\n";
    return 2;
  }
  auto admin = must(pg::connection::open(server), "connecting");
  std::printf("drover_bench_store: %zu runs, %.1f s per cell, clients:", runs,
              static_cast<double>(duration.count()) / 1000);
  for (auto c : concurrency)
    std::printf(" %zu", c);
  std::printf(", %zu raw rows; %ld cores\n", raw_rows,
              sysconf(_SC_NPROCESSORS_ONLN));
  print_settings(admin);

  std::map<cell_key, std::vector<cell_figures>> cells;
  std::vector<double> raw_rates;
  std::vector<double> session_rates;
  for (size_t run = 1; run <= runs; ++run) {
    std::printf("\nrun %zu\n%-40s %7s %10s %10s %10s %8s %6s\n", run, "mode",
                "clients", "acks/s", "p50 us", "p99 us", "per txn", "failed");
    for (auto c : concurrency)
      for (bool group : {true, false}) {
        auto prefix = "r" + std::to_string(run) + "c" + std::to_string(c)
                      + (group ? "g" : "s");
        auto f
            = run_cell(admin, server, group ? pg_store_config{}.max_batch : 1,
                       c, duration, prefix);
        std::printf("%-40s %7zu %10.0f %10.0f %10.0f %8.1f %6zu\n",
                    mode_name(group), c, f.acks_per_s, f.p50_us, f.p99_us,
                    f.per_commit, f.failed);
        std::fflush(stdout);
        cells[{c, group}].push_back(f);
      }
    {
      scratch_db db{admin, server};
      raw_rates.push_back(raw_insert_rate(db.url(), raw_rows));
    }
    {
      scratch_db db{admin, server};
      session_rates.push_back(session_write_rate(db.url(), raw_rows / 2));
    }
    std::printf("%-48s %10.0f rows/s\n",
                "raw multi-row INSERT (1000 rows/stmt)", raw_rates.back());
    std::printf("%-48s %10.0f submits/s\n",
                "pg::session::write (1000 submits/txn)", session_rates.back());
    std::fflush(stdout);
  }

  auto med = [](const std::vector<cell_figures>& xs, double cell_figures::*m) {
    std::vector<double> v;
    for (const auto& x : xs)
      v.push_back(x.*m);
    return median(v);
  };
  auto range = [](const std::vector<double>& v) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.0f-%.0f",
                  *std::min_element(v.begin(), v.end()),
                  *std::max_element(v.begin(), v.end()));
    return std::string{buf};
  };
  auto rates = [](const std::vector<cell_figures>& xs) {
    std::vector<double> v;
    for (const auto& x : xs)
      v.push_back(x.acks_per_s);
    return v;
  };
  auto raw = median(raw_rates);
  auto sw = median(session_rates);
  std::printf("\nmedians of %zu runs\n%-40s %7s %10s %13s %10s %10s %8s\n",
              runs, "mode", "clients", "acks/s", "(range)", "p50 us", "p99 us",
              "per txn");
  for (const auto& [key, xs] : cells)
    std::printf("%-40s %7zu %10.0f %13s %10.0f %10.0f %8.1f\n",
                mode_name(key.group), key.clients,
                med(xs, &cell_figures::acks_per_s), range(rates(xs)).c_str(),
                med(xs, &cell_figures::p50_us), med(xs, &cell_figures::p99_us),
                med(xs, &cell_figures::per_commit));
  std::printf("%-48s %10.0f rows/s    (range %s)\n",
              "raw multi-row INSERT (1000 rows/stmt)", raw,
              range(raw_rates).c_str());
  std::printf("%-48s %10.0f submits/s (range %s)\n",
              "pg::session::write (1000 submits/txn)", sw,
              range(session_rates).c_str());
  std::printf("\n%7s %16s %18s %22s\n", "clients", "group / per-job",
              "group / raw rows", "group / session write");
  for (auto c : concurrency) {
    auto g = med(cells[{c, true}], &cell_figures::acks_per_s);
    auto s = med(cells[{c, false}], &cell_figures::acks_per_s);
    std::printf("%7zu %16.2f %18.3f %22.3f\n", c, s > 0 ? g / s : 0,
                raw > 0 ? g / raw : 0, sw > 0 ? g / sw : 0);
  }
  size_t failed = 0;
  for (const auto& kv : cells)
    for (const auto& f : kv.second)
      failed += f.failed;
  if (failed > 0) {
    std::printf("\nPROBLEMS: %zu submits failed\n", failed);
    return 4;
  }
  return 0;
}
