// drover_bench_store: durable submits through the PostgreSQL store, with
// group commit versus one transaction per job, against the raw multi-row
// INSERT rate of the same PostgreSQL in the same run.
//
//   DROVER_PG_URL=$(scripts/pg url) build/benchmarks/drover_bench_store
//     [--jobs N] [--concurrency C ...]
//
// Durability level D2: fsync on, synchronous_commit on; a submit counts
// only when the store acknowledged it, i.e. after its commit. Works in a
// fresh database it creates and drops.

#include "actors/pg_store.hpp"
#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/pg.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <random>
#include <unordered_map>

using namespace drover;
using clock_type = std::chrono::steady_clock;

namespace {

struct figures {
  double per_second = 0;
  double p50_us = 0;
  double p99_us = 0;
  size_t failed = 0;
};

double percentile(std::vector<double>& xs, double p) {
  if (xs.empty())
    return 0;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<size_t>(p * static_cast<double>(xs.size() - 1));
  return xs[i];
}

job_event submitted(const std::string& id) {
  job_event ev;
  ev.job_id = id;
  ev.kind = event_kind::submitted;
  ev.at_ms = 1'800'000'000'000;
  ev.spec.type = "noop";
  ev.spec.input = R"({"n": 1})";
  return ev;
}

/// N submits with C outstanding through a store; acks/s and ack latency.
figures run_store(caf::actor_system& sys, const store_actor& store,
                  const std::string& prefix, size_t jobs, size_t outstanding) {
  caf::scoped_actor self{sys};
  std::unordered_map<std::string, clock_type::time_point> sent;
  std::vector<double> latencies;
  latencies.reserve(jobs);
  figures f;
  size_t next = 0;
  size_t done = 0;
  auto send_one = [&] {
    auto id = prefix + std::to_string(next++);
    sent.emplace(id, clock_type::now());
    // A plain send: the answer (record or error) arrives as a message.
    self->send(store, submit_atom::value, submitted(id));
  };
  auto start = clock_type::now();
  while (next < std::min(jobs, outstanding))
    send_one();
  while (done < jobs) {
    self->receive(
      [&](job_record& rec) {
        auto t = sent.find(rec.job_id);
        if (t != sent.end()) {
          latencies.push_back(std::chrono::duration<double, std::micro>(
                                clock_type::now() - t->second)
                                .count());
          sent.erase(t);
        }
      },
      [&](caf::error&) { ++f.failed; });
    ++done;
    if (next < jobs)
      send_one();
  }
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  f.per_second = static_cast<double>(jobs) / secs;
  f.p50_us = percentile(latencies, 0.50);
  f.p99_us = percentile(latencies, 0.99);
  return f;
}

/// Raw multi-row INSERT of event-shaped rows, 1000 rows per statement (and
/// per transaction): the limit to compare against.
double run_raw_insert(const std::string& url, size_t rows) {
  auto conn = pg::connection::open(url);
  if (!conn) {
    std::cerr << describe(conn.error()) << '\n';
    std::exit(1);
  }
  auto ok = conn->exec("CREATE TABLE IF NOT EXISTS bench_raw (job_id text, "
                       "seq bigint, attempt int, kind smallint, at_ms bigint, "
                       "payload bytea, PRIMARY KEY (job_id, seq))");
  if (!ok) {
    std::cerr << describe(ok.error()) << '\n';
    std::exit(1);
  }
  auto payload = to_bytes(submitted("x"));
  constexpr size_t per_statement = 1000;
  auto start = clock_type::now();
  for (size_t base = 0; base < rows; base += per_statement) {
    std::string sql = "INSERT INTO bench_raw VALUES ";
    pg::params ps;
    auto n = std::min(per_statement, rows - base);
    for (size_t i = 0; i < n; ++i) {
      auto k = i * 6;
      sql += (i > 0 ? ",(" : "(");
      for (size_t c = 1; c <= 6; ++c)
        sql += "$" + std::to_string(k + c) + (c < 6 ? "," : ")");
      ps.text("raw" + std::to_string(base + i))
        .int64(1)
        .int32(0)
        .int16(0)
        .int64(1'800'000'000'000)
        .bytes(payload);
    }
    auto r = conn->exec(sql, ps);
    if (!r) {
      std::cerr << describe(r.error()) << '\n';
      std::exit(1);
    }
  }
  auto secs = std::chrono::duration<double>(clock_type::now() - start).count();
  return static_cast<double>(rows) / secs;
}

} // namespace

int main(int argc, char** argv) {
  size_t jobs = 5000;
  std::vector<size_t> concurrency{1, 16, 128};
  std::string server = std::getenv("DROVER_PG_URL") ? std::getenv("DROVER_PG_URL")
                                                    : "";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--jobs" && i + 1 < argc) {
      jobs = std::stoul(argv[++i]);
    } else if (a == "--concurrency" && i + 1 < argc) {
      concurrency.clear();
      while (i + 1 < argc && argv[i + 1][0] != '-')
        concurrency.push_back(std::stoul(argv[++i]));
    } else if (a == "--pg-url" && i + 1 < argc) {
      server = argv[++i];
    } else {
      std::cerr << "usage: drover_bench_store [--jobs N] [--concurrency C...] "
                   "[--pg-url URL]\n";
      return 2;
    }
  }
  if (server.empty() || jobs == 0 || concurrency.empty()) {
    std::cerr << "drover_bench_store: set DROVER_PG_URL (scripts/pg url)\n";
    return 2;
  }
  auto admin = pg::connection::open(server);
  if (!admin) {
    std::cerr << describe(admin.error()) << '\n';
    return 1;
  }
  std::mt19937_64 rng{std::random_device{}()};
  auto db = "drover_bench_" + std::to_string(rng() % 1000000000);
  if (auto r = admin->exec("CREATE DATABASE " + db); !r) {
    std::cerr << describe(r.error()) << '\n';
    return 1;
  }
  auto url = pg::conninfo_with(server, {{"dbname", db}});
  if (!url) {
    std::cerr << describe(url.error()) << '\n';
    return 1;
  }
  std::printf("drover_bench_store: %zu submits per cell; durability D2 "
              "(fsync on, synchronous_commit on)\n",
              jobs);
  double raw = run_raw_insert(*url, std::max<size_t>(jobs, 20000));
  std::printf("\n%-34s %8s %12s %10s %10s %8s\n", "mode", "clients",
              "acks/s", "p50 us", "p99 us", "failed");
  std::vector<std::pair<size_t, double>> group_rates, single_rates;
  int cell = 0;
  for (auto c : concurrency) {
    for (size_t max_batch : {size_t{2000}, size_t{1}}) {
      caf::actor_system_config cfg;
      register_types(cfg);
      cfg.set("scheduler.max-threads", size_t{2});
      caf::actor_system sys{cfg};
      pg_store_config pc;
      pc.conninfo = *url;
      pc.max_batch = max_batch;
      auto store = spawn_pg_store(sys, pc);
      // Warm up: connect and migrate.
      run_store(sys, store, "w" + std::to_string(cell) + "-", 50, 1);
      auto f = run_store(sys, store, "c" + std::to_string(cell++) + "-", jobs,
                         c);
      std::printf("%-34s %8zu %12.0f %10.0f %10.0f %8zu\n",
                  max_batch > 1 ? "group commit (max_batch 2000)"
                                : "one transaction per job (max_batch 1)",
                  c, f.per_second, f.p50_us, f.p99_us, f.failed);
      (max_batch > 1 ? group_rates : single_rates)
        .emplace_back(c, f.per_second);
      caf::anon_send_exit(store, caf::exit_reason::user_shutdown);
    }
  }
  std::printf("\n%-40s %12.0f rows/s\n",
              "raw multi-row INSERT (1000 rows/stmt)", raw);
  std::printf("\n%8s %22s %22s\n", "clients", "group / per-job",
              "group / raw INSERT");
  for (size_t i = 0; i < group_rates.size(); ++i)
    std::printf("%8zu %22.2f %22.3f\n", group_rates[i].first,
                group_rates[i].second / single_rates[i].second,
                group_rates[i].second / raw);
  admin->exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
  return 0;
}
