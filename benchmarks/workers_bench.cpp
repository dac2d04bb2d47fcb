// drover_bench_workers: issue 13's simulated-scale run — one real
// coordinator (drover-node --roles coordinator, PostgreSQL store, D2)
// serving N simulated worker nodes, with its CPU per job and its memory per
// connected worker node.
//
//   drover_bench_workers --node build/nodes/drover-node --pg-url URL
//        [--workers 1000] [--ref-workers 10] [--jobs 20000]
//        [--slots-per-worker 1] [--ctl build/nodes/droverctl]
//        [--coordinator-arg ARG]... [--memory-only on] [--hold-s S]
//
// (Diagnostics: --coordinator-arg passes one more option to every
// coordinator, e.g. --coordinator-arg --attempt-lease-ttl-ms=8000;
// --memory-only on runs the memory phase alone; --hold-s S waits S
// seconds after each phase's measurements, with the nodes connected and
// again after they stopped, to inspect the coordinator.)
//
// The simulated worker nodes live in this process: one CAF actor system
// (io middleman, 2 threads, sharing scheduler) connects to the
// coordinator's cluster port once and spawns N actors that each speak the
// worker protocol as a node of their own (runtime/cluster_protocol.hpp,
// as actors/worker_agent.cpp does): hello, join with the HMAC proof over
// the challenge, a heartbeat every heartbeat_interval_ms (the first one at
// a random offset within the interval, as independent nodes would send
// them), and an immediate `succeeded` report for every lease (all leases
// of a batch in one report, at most one report in flight per node, the
// rest queued). CAF shares one TCP connection per remote node, so the N
// simulated nodes share one connection: per-connection kernel and socket
// costs are not in the figures; every per-node structure of the
// coordinator (its node link, slot actors, the proxies of the nodes'
// agents, heartbeats, lease checks) is. No job runs anywhere: a lease is
// answered at once.
//
// Three phases, each on a fresh database and a fresh coordinator:
//   memory: no jobs. RSS of the coordinator once ready (after a 1 s
//       settle) and its CPU while idle (3 s); N nodes join (the join storm:
//       all hellos at once); once every join is answered and the admin
//       node list (droverctl nodes) shows N connected nodes, a 2 s settle,
//       then RSS again -> bytes per connected worker node, and the CPU of
//       5 s with N idle nodes heartbeating -> idle CPU per node.
//   drain: --jobs no-op `sleep` jobs ({"ms":0}) preloaded (as
//       drover_bench_recovery does) before the coordinator starts; once its
//       queue holds them all (droverctl stats), N nodes join and drain
//       them. Coordinator CPU from just before the first hello to the last
//       `completed` row in the audit log, / jobs = CPU per job (the join
//       storm included; the memory phase's join CPU is reported to take
//       it out). Drain time: first `started` to last `completed`
//       (drover.events at_ms).
//   reference: the same drain with --ref-workers nodes holding the same
//       slots in total (N * slots / ref each), so that the ratio of the
//       two CPU-per-job figures isolates what the number of nodes costs.
// Verified from each drain's audit log: one `completed` event per job, no
// job with two, every job completed. Exit 4 otherwise.
//
// Output: one JSON line, then a human-readable summary.

#include "benchmarks/issue6_support.hpp"
#include "benchmarks/node_child.hpp"

#include "runtime/cluster_protocol.hpp"
#include "runtime/join_proof.hpp"

#include <caf/io/middleman.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

struct options {
  std::string node;
  std::string ctl;
  std::string pg_url;
  uint32_t workers = 1000;
  uint32_t ref_workers = 10;
  uint64_t jobs = 20000;
  uint32_t slots = 1;
  /// Diagnostics: more drover-node options for every coordinator, and
  /// the memory phase alone.
  std::vector<std::string> coord_args;
  bool memory_only = false;
  /// Diagnostics: seconds to wait, after a phase's measurements, with the
  /// nodes still connected and again once they are stopped (to inspect
  /// the coordinator, e.g. with gdb).
  double hold_s = 0;
};

const std::string join_secret = "bench-workers-secret-0123456789";

// -- the coordinator process
// --------------------------------------------------------

struct node_proc : node_child {
  int admin_port = 0;
  int cluster_port = 0;
  double ready_s = -1;
  std::thread drain; // reads stdout after "ready" (the pipe must not fill)
};

node_proc* start_coordinator(const options& opt, const std::string& db_url,
                             const std::string& log_path,
                             const std::string& state_dir) {
  auto n = new node_proc;
  // As tests/support/cluster.hpp's coordinator_args, with the production
  // defaults for the attempt lease (2 s) and the worker heartbeat (500 ms),
  // and config/cluster/coordinator.ini's scheduler (sharing).
  std::vector<std::string> args{
      opt.node,      "--node-id",     "coord",     "--roles",
      "coordinator", "--store",       "postgres",  "--pg-url",
      db_url,        "--admin-port",  "0",         "--cluster-port",
      "0",           "--join-secret", join_secret, "--scheduler-policy",
      "sharing",     "--state-dir",   state_dir};
  args.insert(args.end(), opt.coord_args.begin(), opt.coord_args.end());
  auto t0 = steady::now();
  static_cast<node_child&>(*n) = spawn_node(std::move(args), log_path);
  auto line = read_until(*n, " node: ready ", log_path);
  n->ready_s = seconds_since(t0);
  n->admin_port = port_field(line, "admin");
  n->cluster_port = port_field(line, "cluster");
  if (n->admin_port <= 0 || n->cluster_port <= 0) {
    std::cerr << "no admin or cluster port in: " << line << std::endl;
    std::exit(3);
  }
  n->drain = std::thread{[fd = n->out_fd] {
    char chunk[4096];
    while (read(fd, chunk, sizeof(chunk)) > 0) {
      // discarded: announcements only
    }
  }};
  return n;
}

void stop_coordinator(node_proc* n) {
  kill(n->pid, SIGTERM);
  int status = 0;
  waitpid(n->pid, &status, 0);
  if (n->drain.joinable())
    n->drain.join();
  close(n->out_fd);
  delete n;
}

/// A value (kB -> bytes) of /proc/<pid>/status, e.g. "VmRSS".
int64_t proc_status_bytes(pid_t pid, const std::string& key) {
  std::ifstream in{"/proc/" + std::to_string(pid) + "/status"};
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size() + 1, key + ":") == 0)
      return std::atoll(line.c_str() + key.size() + 1) * 1024;
  return -1;
}

/// droverctl `args` against the coordinator's admin port; its stdout.
std::string ctl(const options& opt, int admin_port, const std::string& args) {
  auto cmd = opt.ctl + " " + args + " --port " + std::to_string(admin_port)
             + " --timeout-ms 30000 2>/dev/null";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[65536];
    size_t r;
    while ((r = fread(buf, 1, sizeof(buf), p)) > 0)
      out.append(buf, r);
    pclose(p);
  }
  return out;
}

/// Queued jobs (all priorities) per `droverctl stats`; -1 on failure.
int64_t queue_depth(const options& opt, int admin_port) {
  auto out = ctl(opt, admin_port, "stats");
  std::istringstream in{out};
  std::string line;
  int64_t total = 0;
  int rows = 0;
  while (std::getline(in, line)) {
    std::istringstream f{line};
    std::string name;
    int64_t depth = 0;
    f >> name;
    if (name == "high" || name == "normal" || name == "low") {
      f >> depth;
      total += depth;
      ++rows;
    }
  }
  return rows == 3 ? total : -1;
}

/// Busy and total jiffies of the whole machine (/proc/stat).
std::pair<double, double> machine_jiffies() {
  std::ifstream in{"/proc/stat"};
  std::string cpu;
  in >> cpu;
  double v[8] = {};
  for (auto& x : v)
    in >> x;
  double idle = v[3] + v[4];
  double total = 0;
  for (auto x : v)
    total += x;
  return {total - idle, total};
}

size_t count_of(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1))
    ++n;
  return n;
}

// -- the simulated worker nodes
// -----------------------------------------------------

using sim_beat_atom = caf::atom_constant<caf::atom("sw_beat")>;
using sim_hello_atom = caf::atom_constant<caf::atom("sw_hello")>;

using sim_agent_actor
    = worker_agent_actor::extend<caf::reacts_to<sim_beat_atom>,
                                 caf::reacts_to<sim_hello_atom>>;

/// What the simulated nodes saw, shared by all of them.
struct sim_stats {
  std::atomic<uint64_t> joined{0};
  std::atomic<uint64_t> hello_errors{0};
  std::atomic<uint64_t> join_errors{0};
  std::atomic<uint64_t> refused{0};
  std::atomic<uint64_t> leases{0};
  std::atomic<uint64_t> lease_batches{0};
  std::atomic<uint64_t> duplicate_leases{0};
  std::atomic<uint64_t> reports{0};
  std::atomic<uint64_t> reported{0};
  std::atomic<uint64_t> report_errors{0};
  std::atomic<uint64_t> settled{0};
  std::atomic<uint64_t> superseded{0};
  std::atomic<uint64_t> heartbeats{0};
  std::atomic<uint64_t> heartbeat_errors{0};
  /// Beats skipped because the previous heartbeat was still unanswered.
  std::atomic<uint64_t> heartbeats_skipped{0};
  /// Which sample set heartbeat round trips go to (0 = none).
  std::atomic<int> window{0};
  std::mutex mx;
  std::vector<double> join_ms;                // hello sent -> join answered
  std::map<int, std::vector<double>> beat_us; // by window
  std::string first_error;

  void error(const std::string& what) {
    std::lock_guard<std::mutex> g{mx};
    if (first_error.empty())
      first_error = what;
  }
};

struct sim_state {
  std::string node_id;
  uint32_t slots = 1;
  cluster_endpoint_actor endpoint;
  node_link_actor link;
  std::shared_ptr<sim_stats> stats;
  /// Leased, not yet reported (the heartbeat's `running`).
  std::map<std::string, uint32_t> running;
  /// Outcomes waiting for the report in flight to be answered.
  std::vector<completion> outbox;
  /// Reported, not yet settled (the heartbeat's `unacknowledged`).
  std::set<std::pair<std::string, uint32_t>> unacked;
  bool report_in_flight = false;
  bool beat_in_flight = false;
  bool beating = false;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds lease_ttl{2000};
  steady::time_point hello_at;
  bool first_hello = true;
  std::minstd_rand rng{std::random_device{}()};

  static inline const char* name = "drover.sim_worker";
};

using sim_ptr = sim_agent_actor::stateful_pointer<sim_state>;

register_worker registration(sim_ptr self) {
  auto& st = self->state;
  register_worker reg;
  reg.node_id = st.node_id;
  reg.worker_id = st.node_id;
  reg.role = "worker";
  reg.protocol_min = cluster_protocol_min;
  reg.protocol_max = cluster_protocol_max;
  reg.capacity.push_back(resource_capacity{"cpu", st.slots});
  reg.job_types = {"sleep"};
  reg.prefetch = 0;
  for (auto& [job_id, attempt] : st.running)
    reg.running.push_back(running_attempt{job_id, attempt, "cpu"});
  return reg;
}

/// After a failed hello or join: again after 100 ms to 1 s (jittered).
void retry_hello(sim_ptr self) {
  std::uniform_int_distribution<int> d{100, 1000};
  self->delayed_send(self, std::chrono::milliseconds{d(self->state.rng)},
                     sim_hello_atom::value);
}

void apply_reply(sim_ptr self, const coordinator_reply& r) {
  auto& st = self->state;
  for (auto& s : r.settled)
    if (st.unacked.erase({s.job_id, s.attempt}) > 0)
      ++st.stats->settled;
  for (auto& s : r.superseded) {
    ++st.stats->superseded;
    st.unacked.erase({s.job_id, s.attempt});
    auto i = st.running.find(s.job_id);
    if (i != st.running.end() && i->second == s.attempt)
      st.running.erase(i);
    st.outbox.erase(std::remove_if(st.outbox.begin(), st.outbox.end(),
                                   [&](const completion& c) {
                                     return c.job_id == s.job_id
                                            && c.attempt == s.attempt;
                                   }),
                    st.outbox.end());
  }
}

void maybe_report(sim_ptr self) {
  auto& st = self->state;
  if (!st.link || st.report_in_flight || st.outbox.empty())
    return;
  completion_batch cb;
  cb.completions.swap(st.outbox);
  for (auto& c : cb.completions) {
    st.running.erase(c.job_id);
    st.unacked.emplace(c.job_id, c.attempt);
  }
  st.report_in_flight = true;
  ++st.stats->reports;
  st.stats->reported += cb.completions.size();
  auto sent = cb.completions;
  self->request(st.link, std::chrono::seconds{10}, report_atom::value,
                progress_batch{}, std::move(cb))
      .then(
          [self](coordinator_reply& r) {
            self->state.report_in_flight = false;
            apply_reply(self, r);
            maybe_report(self);
          },
          [self, sent](caf::error& err) {
            auto& st = self->state;
            st.report_in_flight = false;
            ++st.stats->report_errors;
            st.stats->error("report: " + describe(err));
            // Not reported after all: they go again (with the next
            // heartbeat's answer, as the real agent does).
            for (auto& c : sent) {
              st.unacked.erase({c.job_id, c.attempt});
              st.running[c.job_id] = c.attempt;
              st.outbox.push_back(c);
            }
          });
}

void send_heartbeat(sim_ptr self) {
  auto& st = self->state;
  if (!st.link)
    return;
  if (st.beat_in_flight) {
    ++st.stats->heartbeats_skipped;
    return;
  }
  heartbeat hb;
  hb.node_id = st.node_id;
  hb.at_ms = wall_ms();
  for (auto& [job_id, attempt] : st.running)
    hb.running.push_back(running_attempt{job_id, attempt, {}});
  for (auto& [job_id, attempt] : st.unacked)
    hb.unacknowledged.push_back(running_attempt{job_id, attempt, {}});
  st.beat_in_flight = true;
  ++st.stats->heartbeats;
  auto t0 = steady::now();
  int window = st.stats->window.load();
  self->request(st.link, st.lease_ttl, heartbeat_atom::value, std::move(hb))
      .then(
          [self, t0, window](coordinator_reply& r) {
            auto& st = self->state;
            st.beat_in_flight = false;
            if (window != 0) {
              auto us = seconds_since(t0) * 1e6;
              std::lock_guard<std::mutex> g{st.stats->mx};
              st.stats->beat_us[window].push_back(us);
            }
            apply_reply(self, r);
            maybe_report(self);
          },
          [self](caf::error& err) {
            auto& st = self->state;
            st.beat_in_flight = false;
            ++st.stats->heartbeat_errors;
            st.stats->error("heartbeat: " + describe(err));
          });
}

void join(sim_ptr self, const std::string& challenge,
          const std::string& secret) {
  auto& st = self->state;
  auto reg = registration(self);
  reg.proof = join_proof(secret, reg.role, reg.node_id, challenge);
  self->request(st.endpoint, std::chrono::seconds{10}, join_atom::value, reg,
                worker_agent_actor{self})
      .then(
          [self](coordinator_reply& r, node_link_actor& link) {
            auto& st = self->state;
            bool first = !st.link;
            st.link = link;
            st.heartbeat_interval = std::chrono::milliseconds{
                std::max<int64_t>(10, r.heartbeat_interval_ms)};
            st.lease_ttl = std::chrono::milliseconds{
                std::max<int64_t>(100, r.lease_ttl_ms)};
            if (first) {
              ++st.stats->joined;
              std::lock_guard<std::mutex> g{st.stats->mx};
              st.stats->join_ms.push_back(seconds_since(st.hello_at) * 1e3);
            }
            apply_reply(self, r);
            if (!st.beating) {
              // Independent nodes: the first beat at a random point of
              // the interval.
              st.beating = true;
              std::uniform_int_distribution<int64_t> d{
                  1, st.heartbeat_interval.count()};
              self->delayed_send(self, std::chrono::milliseconds{d(st.rng)},
                                 sim_beat_atom::value);
            }
            maybe_report(self);
          },
          [self](caf::error& err) {
            auto& st = self->state;
            ++st.stats->join_errors;
            st.stats->error("join: " + describe(err));
            if (is(err, errc::forbidden)) {
              ++st.stats->refused;
              return;
            }
            retry_hello(self);
          });
}

void hello(sim_ptr self, const std::string& secret) {
  auto& st = self->state;
  if (st.first_hello) {
    st.first_hello = false;
    st.hello_at = steady::now();
  }
  auto reg = registration(self);
  reg.running.clear();
  self->request(st.endpoint, std::chrono::seconds{10}, hello_atom::value, reg)
      .then([self,
             secret](coordinator_reply& r) { join(self, r.challenge, secret); },
            [self](caf::error& err) {
              auto& st = self->state;
              ++st.stats->hello_errors;
              st.stats->error("hello: " + describe(err));
              if (is(err, errc::forbidden)) {
                ++st.stats->refused;
                return;
              }
              retry_hello(self);
            });
}

sim_agent_actor::behavior_type sim_agent(sim_ptr self, std::string node_id,
                                         uint32_t slots,
                                         cluster_endpoint_actor endpoint,
                                         std::shared_ptr<sim_stats> stats,
                                         std::string secret) {
  auto& st = self->state;
  st.node_id = std::move(node_id);
  st.slots = slots;
  st.endpoint = std::move(endpoint);
  st.stats = std::move(stats);
  self->send(self, sim_hello_atom::value);
  return {
      [self](lease_atom, lease_batch& b) {
        auto& st = self->state;
        ++st.stats->lease_batches;
        st.stats->leases += b.leases.size();
        for (auto& l : b.leases) {
          auto r = st.running.find(l.job_id);
          if ((r != st.running.end() && r->second >= l.attempt)
              || st.unacked.count({l.job_id, l.attempt}) > 0) {
            ++st.stats->duplicate_leases;
            continue;
          }
          st.running[l.job_id] = l.attempt;
          completion c;
          c.job_id = l.job_id;
          c.attempt = l.attempt;
          c.outcome = completion_outcome::succeeded;
          st.outbox.push_back(std::move(c));
        }
        maybe_report(self);
      },
      [](cancel_atom, std::string&, uint32_t) {
        // Every attempt has already ended when a cancel could arrive.
      },
      [self](abandon_atom, std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        auto i = st.running.find(job_id);
        if (i != st.running.end() && i->second == attempt)
          st.running.erase(i);
      },
      [self, secret](sim_hello_atom) { hello(self, secret); },
      [self](sim_beat_atom) {
        send_heartbeat(self);
        self->delayed_send(self, self->state.heartbeat_interval,
                           sim_beat_atom::value);
      },
  };
}

// -- one phase: a fresh database, a coordinator, N simulated nodes
// ------------------

struct phase_result {
  uint32_t workers = 0;
  uint32_t slots_each = 0;
  uint64_t jobs = 0;
  bool ok = true;
  std::string problem;
  double ready_s = 0;
  // join storm
  double join_s = 0;
  double join_cpu_s = 0;
  double join_p50_ms = 0, join_p99_ms = 0, join_max_ms = 0;
  uint64_t hello_errors = 0, join_errors = 0;
  // memory phase
  int64_t rss_ready = 0, rss_joined = 0, rss_after_idle = 0, hwm = 0;
  double idle0_cpu_per_s = 0; // no nodes
  double idleN_cpu_per_s = 0; // N nodes heartbeating
  size_t admin_connected = 0;
  double idle_beat_p50_us = 0, idle_beat_p99_us = 0, idle_beat_max_us = 0;
  // drain phase
  double recovery_s = 0;
  double drain_cpu_s = 0;   // coordinator, first hello -> last completed
  double drain_wall_s = 0;  // the same window
  double bench_cpu_s = 0;   // this process (the simulated nodes), same window
  double pg_cpu_s = 0;      // PostgreSQL (the database's backends), same
  double machine_busy = 0;  // share of all cores busy, same window
  double audit_drain_s = 0; // first started -> last completed
  double drain_beat_p50_us = 0, drain_beat_p99_us = 0, drain_beat_max_us = 0;
  uint64_t completed_events = 0, completed_jobs = 0, twice = 0;
  uint64_t lease_expired = 0, report_rejected = 0, worker_lost = 0;
  uint64_t leases = 0, lease_batches = 0, reports = 0, heartbeats = 0;
  uint64_t heartbeat_errors = 0, heartbeats_skipped = 0, report_errors = 0;
  uint64_t superseded = 0, duplicate_leases = 0, settled = 0;
  std::string first_error;
};

void preload_jobs(const std::string& db_url, uint64_t jobs) {
  std::string first_error;
  auto sub = preload_noop_jobs(db_url, jobs, 2000, first_error);
  if (sub.errors > 0) {
    std::cerr << sub.errors << " submits failed: " << first_error << std::endl;
    std::exit(4);
  }
}

uint64_t sql_count(const std::string& db_url, const std::string& stmt) {
  return std::stoull("0" + sql_value(db_url, stmt));
}

std::string kind_is(event_kind k) {
  return "kind = " + std::to_string(static_cast<int>(k));
}

void beat_summary(sim_stats& s, int window, double& p50, double& p99,
                  double& max) {
  std::lock_guard<std::mutex> g{s.mx};
  auto& xs = s.beat_us[window];
  p50 = percentile(xs, 0.5);
  p99 = percentile(xs, 0.99);
  max = xs.empty() ? 0 : *std::max_element(xs.begin(), xs.end());
}

/// Waits until `pred` holds, checking every `step`; false after `limit`.
template <class Pred>
bool wait_for(Pred pred, std::chrono::milliseconds step,
              std::chrono::seconds limit) {
  auto deadline = steady::now() + limit;
  while (!pred()) {
    if (steady::now() > deadline)
      return false;
    std::this_thread::sleep_for(step);
  }
  return true;
}

phase_result run_phase(const options& opt, const std::string& tag,
                       uint32_t workers, uint32_t slots_each, uint64_t jobs) {
  phase_result res;
  res.workers = workers;
  res.slots_each = slots_each;
  res.jobs = jobs;
  auto fail = [&](const std::string& why) {
    res.ok = false;
    res.problem += (res.problem.empty() ? "" : "; ") + why;
    std::cerr << "  " << tag << ": " << why << std::endl;
  };
  auto suffix = std::to_string(getpid()) + "_" + tag;
  auto db = "drover_bench_workers_" + suffix;
  auto db_url = create_db(opt.pg_url, db);
  require_d2(db_url);
  auto log_path = "/tmp/drover_bench_workers_" + suffix + ".log";
  auto state_dir = "/tmp/drover-bench-workers-" + suffix;
  if (jobs > 0) {
    std::cerr << "  " << tag << ": preloading " << jobs << " jobs" << std::endl;
    preload_jobs(db_url, jobs);
  }
  auto* coord = start_coordinator(opt, db_url, log_path, state_dir);
  res.ready_s = coord->ready_s;
  auto pid = coord->pid;
  std::cerr << "  " << tag << ": coordinator pid " << pid << " ready in "
            << coord->ready_s << " s (log " << log_path << ")" << std::endl;
  auto stats = std::make_shared<sim_stats>();
  {
    caf::actor_system_config cfg;
    register_types(cfg);
    cfg.load<caf::io::middleman>();
    cfg.set("scheduler.max-threads", size_t{2});
    cfg.set("scheduler.policy", caf::atom("sharing"));
    cfg.set("middleman.heartbeat-interval", caf::timespan{1s});
    caf::actor_system sys{cfg};
    auto ep = sys.middleman().remote_actor<cluster_endpoint_actor>(
        "127.0.0.1", static_cast<uint16_t>(coord->cluster_port));
    if (!ep) {
      std::cerr << "cannot reach the cluster port: " << sys.render(ep.error())
                << std::endl;
      std::exit(3);
    }
    if (jobs > 0) {
      // The queue holds every preloaded job before the first node joins.
      auto t0 = steady::now();
      if (!wait_for(
              [&] {
                return queue_depth(opt, coord->admin_port)
                       >= static_cast<int64_t>(jobs);
              },
              100ms, 300s))
        fail("the coordinator did not recover the queue");
      res.recovery_s = seconds_since(t0);
    } else {
      std::this_thread::sleep_for(1s); // settle after ready
      res.rss_ready = proc_status_bytes(pid, "VmRSS");
      auto c0 = pid_cpu_seconds(pid);
      auto t0 = steady::now();
      std::this_thread::sleep_for(3s);
      res.idle0_cpu_per_s = (pid_cpu_seconds(pid) - c0) / seconds_since(t0);
    }
    // The join storm: every node says hello at once.
    auto pg_pids = pg_pids_of(opt.pg_url, db);
    auto pg0 = pids_cpu_seconds(pg_pids);
    auto m0 = machine_jiffies();
    auto cpu0 = pid_cpu_seconds(pid);
    auto bench0 = process_cpu_seconds();
    auto t0 = steady::now();
    std::vector<sim_agent_actor> agents;
    agents.reserve(workers);
    for (uint32_t i = 0; i < workers; ++i)
      agents.push_back(sys.spawn(sim_agent, "sim-" + std::to_string(i),
                                 slots_each, *ep, stats, join_secret));
    stats->window = jobs > 0 ? 2 : 0;
    if (!wait_for(
            [&] {
              return stats->joined.load() + stats->refused.load() >= workers;
            },
            5ms, 300s)
        || stats->refused > 0)
      fail("only " + std::to_string(stats->joined.load()) + " of "
           + std::to_string(workers) + " nodes joined");
    res.join_s = seconds_since(t0);
    res.join_cpu_s = pid_cpu_seconds(pid) - cpu0;
    std::cerr << "  " << tag << ": " << stats->joined << " nodes joined in "
              << res.join_s << " s" << std::endl;
    if (jobs == 0) {
      auto nodes = ctl(opt, coord->admin_port, "nodes");
      res.admin_connected = count_of(nodes, "\"connected\":true");
      if (res.admin_connected != workers)
        fail("the admin node list shows " + std::to_string(res.admin_connected)
             + " connected nodes");
      std::this_thread::sleep_for(2s); // settle: four heartbeat rounds
      res.rss_joined = proc_status_bytes(pid, "VmRSS");
      stats->window = 1;
      auto c0 = pid_cpu_seconds(pid);
      auto ti = steady::now();
      std::this_thread::sleep_for(5s);
      res.idleN_cpu_per_s = (pid_cpu_seconds(pid) - c0) / seconds_since(ti);
      stats->window = 0;
      res.rss_after_idle = proc_status_bytes(pid, "VmRSS");
      res.hwm = proc_status_bytes(pid, "VmHWM");
      beat_summary(*stats, 1, res.idle_beat_p50_us, res.idle_beat_p99_us,
                   res.idle_beat_max_us);
    } else {
      // Until every outcome is reported, then until the audit log holds
      // every `completed` event.
      auto progress
          = [&] { return stats->reported.load() + stats->settled.load(); };
      uint64_t last = progress();
      auto since = steady::now();
      while (stats->reported.load() < jobs) {
        if (progress() != last) {
          last = progress();
          since = steady::now();
        } else if (steady::now() - since > 60s) {
          fail("the drain stalled at " + std::to_string(stats->reported.load())
               + " reported outcomes");
          break;
        }
        std::this_thread::sleep_for(5ms);
      }
      if (res.ok
          && !wait_for(
              [&] {
                return sql_count(db_url,
                                 "SELECT count(*) FROM drover.events WHERE "
                                     + kind_is(event_kind::completed))
                       >= jobs;
              },
              10ms, 60s))
        fail("not every job completed in the audit log");
      res.drain_cpu_s = pid_cpu_seconds(pid) - cpu0;
      res.drain_wall_s = seconds_since(t0);
      res.bench_cpu_s = process_cpu_seconds() - bench0;
      res.pg_cpu_s = pids_cpu_seconds(pg_pids) - pg0;
      auto m1 = machine_jiffies();
      res.machine_busy = (m1.first - m0.first) / (m1.second - m0.second);
      stats->window = 0;
      res.hwm = proc_status_bytes(pid, "VmHWM");
      beat_summary(*stats, 2, res.drain_beat_p50_us, res.drain_beat_p99_us,
                   res.drain_beat_max_us);
    }
    {
      std::lock_guard<std::mutex> g{stats->mx};
      res.join_p50_ms = percentile(stats->join_ms, 0.5);
      res.join_p99_ms = percentile(stats->join_ms, 0.99);
      res.join_max_ms = stats->join_ms.empty()
                            ? 0
                            : *std::max_element(stats->join_ms.begin(),
                                                stats->join_ms.end());
      res.first_error = stats->first_error;
    }
    if (opt.hold_s > 0) {
      std::cerr << "  " << tag << ": holding, nodes connected" << std::endl;
      std::this_thread::sleep_for(std::chrono::duration<double>{opt.hold_s});
    }
    for (auto& a : agents)
      caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    agents.clear();
  } // the actor system ends here (and with it the connection)
  if (opt.hold_s > 0) {
    std::cerr << "  " << tag << ": holding, nodes stopped" << std::endl;
    std::this_thread::sleep_for(std::chrono::duration<double>{opt.hold_s});
  }
  stop_coordinator(coord);
  res.hello_errors = stats->hello_errors;
  res.join_errors = stats->join_errors;
  res.leases = stats->leases;
  res.lease_batches = stats->lease_batches;
  res.reports = stats->reports;
  res.heartbeats = stats->heartbeats;
  res.heartbeat_errors = stats->heartbeat_errors;
  res.heartbeats_skipped = stats->heartbeats_skipped;
  res.report_errors = stats->report_errors;
  res.superseded = stats->superseded;
  res.duplicate_leases = stats->duplicate_leases;
  res.settled = stats->settled;
  if (jobs > 0) {
    auto first = sql_value(db_url, "SELECT min(at_ms) FROM drover.events WHERE "
                                       + kind_is(event_kind::started));
    auto lastc = sql_value(db_url, "SELECT max(at_ms) FROM drover.events WHERE "
                                       + kind_is(event_kind::completed));
    if (!first.empty() && !lastc.empty())
      res.audit_drain_s = (std::stoll(lastc) - std::stoll(first)) / 1000.0;
    res.completed_events
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::completed));
    res.completed_jobs = sql_count(
        db_url, "SELECT count(*) FROM drover.jobs WHERE status = "
                    + std::to_string(static_cast<int>(job_status::completed)));
    res.twice = sql_count(
        db_url, "SELECT count(*) FROM (SELECT job_id FROM drover.events WHERE "
                    + kind_is(event_kind::completed)
                    + " GROUP BY job_id HAVING count(*) > 1) t");
    res.lease_expired
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::lease_expired));
    res.report_rejected
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::report_rejected));
    res.worker_lost
        = sql_count(db_url, "SELECT count(*) FROM drover.events WHERE "
                                + kind_is(event_kind::worker_lost));
    if (res.completed_events != jobs || res.completed_jobs != jobs
        || res.twice != 0)
      fail("verification failed: " + std::to_string(res.completed_events)
           + " completed events, " + std::to_string(res.completed_jobs)
           + " completed jobs, " + std::to_string(res.twice)
           + " jobs completed twice, of " + std::to_string(jobs));
  }
  drop_db(opt.pg_url, db);
  if (res.ok)
    unlink(log_path.c_str());
  else
    res.problem += " (coordinator log: " + log_path + ")";
  return res;
}

void usage() {
  std::cerr << "usage: drover_bench_workers --node PATH --pg-url URL\n"
               "         [--workers 1000] [--ref-workers 10] [--jobs 20000]\n"
               "         [--slots-per-worker 1] [--ctl PATH]\n"
               "         [--coordinator-arg ARG]... [--memory-only on]\n"
               "         [--hold-s S]\n";
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--node")
      opt.node = args.value();
    else if (args.key() == "--ctl")
      opt.ctl = args.value();
    else if (args.key() == "--pg-url")
      opt.pg_url = args.value();
    else if (args.key() == "--workers")
      opt.workers = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--ref-workers")
      opt.ref_workers = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--jobs")
      opt.jobs = std::stoull(args.value());
    else if (args.key() == "--slots-per-worker")
      opt.slots = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--coordinator-arg")
      opt.coord_args.push_back(args.value());
    else if (args.key() == "--hold-s")
      opt.hold_s = std::stod(args.value());
    else if (args.key() == "--memory-only")
      opt.memory_only = args.value() == "on";
    else {
      usage();
      return 2;
    }
  }
  if (opt.ctl.empty() && !opt.node.empty()) {
    auto slash = opt.node.rfind('/');
    opt.ctl = (slash == std::string::npos ? std::string{}
                                          : opt.node.substr(0, slash + 1))
              + "droverctl";
  }
  if (opt.node.empty() || opt.pg_url.empty() || opt.workers == 0
      || opt.ref_workers == 0 || opt.slots == 0 || opt.jobs == 0
      || access(opt.node.c_str(), X_OK) != 0
      || access(opt.ctl.c_str(), X_OK) != 0) {
    usage();
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  auto load0 = loadavg();
  uint64_t total_slots = uint64_t{opt.workers} * opt.slots;
  auto ref_slots = static_cast<uint32_t>(
      std::max<uint64_t>(1, total_slots / opt.ref_workers));
  std::cerr << "memory phase: " << opt.workers << " nodes, no jobs"
            << std::endl;
  auto mem = run_phase(opt, "mem", opt.workers, opt.slots, 0);
  phase_result big, ref;
  if (opt.memory_only) {
    std::printf(
        "{\"workers\":%u,\"rss_per_worker_bytes\":%.0f,"
        "\"join_storm_s\":%.3f,\"idle_cpu_no_workers_ms_per_s\":%.2f,"
        "\"idle_cpu_workers_ms_per_s\":%.2f,\"idle_heartbeats\":%llu,"
        "\"idle_heartbeat_rtt_p99_us\":%.0f,\"join_retries\":%llu,"
        "\"join_max_ms\":%.1f,\"ok\":%s}\n",
        opt.workers,
        static_cast<double>(mem.rss_joined - mem.rss_ready) / opt.workers,
        mem.join_s, mem.idle0_cpu_per_s * 1e3, mem.idleN_cpu_per_s * 1e3,
        static_cast<unsigned long long>(mem.heartbeats), mem.idle_beat_p99_us,
        static_cast<unsigned long long>(mem.hello_errors + mem.join_errors),
        mem.join_max_ms, mem.ok ? "true" : "false");
    if (!mem.first_error.empty())
      std::printf("first error seen by a node: %s\n", mem.first_error.c_str());
    return mem.ok ? 0 : 4;
  }
  std::cerr << "drain phase: " << opt.workers << " nodes x " << opt.slots
            << " slots, " << opt.jobs << " jobs" << std::endl;
  big = run_phase(opt, "drain", opt.workers, opt.slots, opt.jobs);
  std::cerr << "reference: " << opt.ref_workers << " nodes x " << ref_slots
            << " slots, " << opt.jobs << " jobs" << std::endl;
  ref = run_phase(opt, "ref", opt.ref_workers, ref_slots, opt.jobs);
  bool ok = mem.ok && big.ok && ref.ok;
  auto per_node_bytes
      = static_cast<double>(mem.rss_joined - mem.rss_ready) / opt.workers;
  auto per_node_bytes_idle
      = static_cast<double>(mem.rss_after_idle - mem.rss_ready) / opt.workers;
  auto idle_us_per_node_s
      = (mem.idleN_cpu_per_s - mem.idle0_cpu_per_s) * 1e6 / opt.workers;
  auto cpu_job = [](const phase_result& p) {
    return p.drain_cpu_s * 1e6 / static_cast<double>(p.jobs);
  };
  auto big_net_us = (big.drain_cpu_s - mem.join_cpu_s) * 1e6 / opt.jobs;
  auto ratio = cpu_job(ref) > 0 ? cpu_job(big) / cpu_job(ref) : 0;
  auto ratio_net = cpu_job(ref) > 0 ? big_net_us / cpu_job(ref) : 0;
  json_line j;
  j.str("system", "drover")
      .str("workload", "issue13-sim-workers")
      .str("durability", "D2")
      .integer("workers", opt.workers)
      .integer("slots_per_worker", opt.slots)
      .integer("ref_workers", opt.ref_workers)
      .integer("ref_slots_per_worker", ref_slots)
      .integer("jobs", static_cast<int64_t>(opt.jobs))
      // memory phase
      .num("mem_ready_s", mem.ready_s, 3)
      .integer("rss_ready_bytes", mem.rss_ready)
      .integer("rss_joined_bytes", mem.rss_joined)
      .integer("rss_after_idle_bytes", mem.rss_after_idle)
      .integer("rss_peak_bytes", mem.hwm)
      .num("rss_per_worker_bytes", per_node_bytes)
      .num("rss_per_worker_after_idle_bytes", per_node_bytes_idle)
      .integer("admin_connected", static_cast<int64_t>(mem.admin_connected))
      .num("join_storm_s", mem.join_s, 3)
      .num("join_storm_cpu_s", mem.join_cpu_s, 3)
      .num("join_cpu_per_worker_us", mem.join_cpu_s * 1e6 / opt.workers, 1)
      .num("join_p50_ms", mem.join_p50_ms, 1)
      .num("join_p99_ms", mem.join_p99_ms, 1)
      .num("join_max_ms", mem.join_max_ms, 1)
      .integer("join_retries",
               static_cast<int64_t>(mem.hello_errors + mem.join_errors))
      .num("idle_cpu_no_workers_ms_per_s", mem.idle0_cpu_per_s * 1e3, 2)
      .num("idle_cpu_workers_ms_per_s", mem.idleN_cpu_per_s * 1e3, 2)
      .num("idle_cpu_per_worker_us_per_s", idle_us_per_node_s, 2)
      .num("idle_heartbeat_rtt_p50_us", mem.idle_beat_p50_us)
      .num("idle_heartbeat_rtt_p99_us", mem.idle_beat_p99_us)
      .num("idle_heartbeat_rtt_max_us", mem.idle_beat_max_us)
      .integer("idle_heartbeats", static_cast<int64_t>(mem.heartbeats))
      .integer("idle_heartbeat_errors",
               static_cast<int64_t>(mem.heartbeat_errors));
  auto drain_fields = [&](const std::string& p, const phase_result& r) {
    j.num(p + "ready_s", r.ready_s, 3)
        .num(p + "recovery_s", r.recovery_s, 3)
        .num(p + "join_s", r.join_s, 3)
        .num(p + "join_max_ms", r.join_max_ms, 1)
        .integer(p + "join_retries",
                 static_cast<int64_t>(r.hello_errors + r.join_errors))
        .num(p + "drain_s", r.audit_drain_s, 3)
        .num(p + "jobs_per_s",
             r.audit_drain_s > 0 ? static_cast<double>(r.jobs) / r.audit_drain_s
                                 : 0)
        .num(p + "window_s", r.drain_wall_s, 3)
        .num(p + "coord_cpu_s", r.drain_cpu_s, 3)
        .num(p + "coord_cpu_per_job_us", cpu_job(r), 1)
        .num(p + "sim_cpu_per_job_us", r.bench_cpu_s * 1e6 / r.jobs, 1)
        .num(p + "pg_cpu_per_job_us", r.pg_cpu_s * 1e6 / r.jobs, 1)
        .num(p + "machine_busy", r.machine_busy, 3)
        .integer(p + "coord_rss_peak_bytes", r.hwm)
        .num(p + "heartbeat_rtt_p50_us", r.drain_beat_p50_us)
        .num(p + "heartbeat_rtt_p99_us", r.drain_beat_p99_us)
        .num(p + "heartbeat_rtt_max_us", r.drain_beat_max_us)
        .integer(p + "heartbeats", static_cast<int64_t>(r.heartbeats))
        .integer(p + "heartbeat_errors",
                 static_cast<int64_t>(r.heartbeat_errors))
        .integer(p + "heartbeats_skipped",
                 static_cast<int64_t>(r.heartbeats_skipped))
        .integer(p + "leases", static_cast<int64_t>(r.leases))
        .integer(p + "lease_batches", static_cast<int64_t>(r.lease_batches))
        .integer(p + "reports", static_cast<int64_t>(r.reports))
        .integer(p + "report_errors", static_cast<int64_t>(r.report_errors))
        .integer(p + "superseded", static_cast<int64_t>(r.superseded))
        .integer(p + "completed_events",
                 static_cast<int64_t>(r.completed_events))
        .integer(p + "completed_jobs", static_cast<int64_t>(r.completed_jobs))
        .integer(p + "completed_twice", static_cast<int64_t>(r.twice))
        .integer(p + "lease_expired_events",
                 static_cast<int64_t>(r.lease_expired))
        .integer(p + "report_rejected_events",
                 static_cast<int64_t>(r.report_rejected))
        .integer(p + "worker_lost_events", static_cast<int64_t>(r.worker_lost));
  };
  drain_fields("drain_", big);
  drain_fields("ref_", ref);
  j.num("drain_coord_cpu_per_job_net_of_joins_us", big_net_us, 1)
      .num("cpu_per_job_ratio", ratio, 3)
      .num("cpu_per_job_ratio_net_of_joins", ratio_net, 3)
      .load("loadavg_at_start", load0)
      .load("loadavg_at_end")
      .boolean("ok", ok);
  std::string problems;
  for (auto* p : {&mem, &big, &ref})
    if (!p->ok || !p->first_error.empty())
      problems += (problems.empty() ? "" : "; ") + p->problem
                  + (p->first_error.empty() ? ""
                                            : " (first error seen by a node: "
                                                  + p->first_error + ")");
  if (!problems.empty())
    j.str("problem", problems);
  j.print();
  // The human-readable summary.
  std::printf(
      "\nOne coordinator (PostgreSQL store, D2: fsync and synchronous_commit "
      "on), %u simulated worker nodes x %u slot(s), one CAF connection\n",
      opt.workers, opt.slots);
  std::printf("  memory: RSS %s bytes ready, %s with %u nodes joined -> %s "
              "bytes per node (%s after 5 s idle); peak %s\n",
              fmt(mem.rss_ready).c_str(), fmt(mem.rss_joined).c_str(),
              opt.workers, fmt(per_node_bytes).c_str(),
              fmt(per_node_bytes_idle).c_str(), fmt(mem.hwm).c_str());
  std::printf(
      "  join storm: %u nodes in %.3f s (p50 %.1f ms, p99 %.1f ms, "
      "max %.1f ms), %llu retries, coordinator CPU %.3f s (%.1f us "
      "per node)\n",
      opt.workers, mem.join_s, mem.join_p50_ms, mem.join_p99_ms,
      mem.join_max_ms,
      static_cast<unsigned long long>(mem.hello_errors + mem.join_errors),
      mem.join_cpu_s, mem.join_cpu_s * 1e6 / opt.workers);
  std::printf("  idle: coordinator CPU %.2f ms/s without nodes, %.2f ms/s with "
              "%u heartbeating -> %.2f us per node per second; heartbeat "
              "RTT p50 %.0f us, p99 %.0f us, max %.0f us\n",
              mem.idle0_cpu_per_s * 1e3, mem.idleN_cpu_per_s * 1e3, opt.workers,
              idle_us_per_node_s, mem.idle_beat_p50_us, mem.idle_beat_p99_us,
              mem.idle_beat_max_us);
  for (auto* p : {&big, &ref})
    std::printf(
        "  drain, %u nodes x %u slots: %llu jobs in %.3f s (%s jobs/s, "
        "audit log), coordinator CPU %.1f us/job (simulated nodes %.1f, "
        "PostgreSQL %.1f; machine %.0f %% busy), heartbeat RTT p99 %.0f us, "
        "lease_expired %llu, completed %llu events / %llu jobs, twice "
        "%llu\n",
        p->workers, p->slots_each, static_cast<unsigned long long>(p->jobs),
        p->audit_drain_s,
        fmt(p->audit_drain_s > 0 ? p->jobs / p->audit_drain_s : 0).c_str(),
        cpu_job(*p), p->bench_cpu_s * 1e6 / p->jobs,
        p->pg_cpu_s * 1e6 / p->jobs, p->machine_busy * 100,
        p->drain_beat_p99_us, static_cast<unsigned long long>(p->lease_expired),
        static_cast<unsigned long long>(p->completed_events),
        static_cast<unsigned long long>(p->completed_jobs),
        static_cast<unsigned long long>(p->twice));
  std::printf("  CPU per job, %u nodes / %u nodes: %.3f (%.3f without the "
              "join storm's %.3f s)\n",
              opt.workers, opt.ref_workers, ratio, ratio_net, mem.join_cpu_s);
  if (!problems.empty())
    std::printf("  PROBLEM: %s\n", problems.c_str());
  std::fflush(stdout);
  return ok ? 0 : 4;
}
