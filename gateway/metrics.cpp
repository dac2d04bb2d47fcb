#include "gateway/metrics.hpp"

#include "gateway/exposition.hpp"
#include "runtime/json_read.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <dirent.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <time.h>
#include <tuple>
#include <unistd.h>

namespace drover::http {

using detail::exposition;
using detail::label;

namespace {

uint64_t count_fds() {
  uint64_t n = 0;
  if (auto* d = opendir("/proc/self/fd")) {
    while (auto* e = readdir(d))
      if (e->d_name[0] != '.')
        ++n;
    closedir(d);
    if (n > 0)
      --n; // the directory stream's own descriptor
  }
  return n;
}

using json = json_reader;

} // namespace

std::string flow_metrics_text(const std::string& flow_json) {
  json_doc parsed;
  if (!parsed.parse(flow_json))
    return {};
  auto doc = parsed.root();
  auto rates = json_member(doc, "rate_limits");
  auto breakers = json_member(doc, "breakers");
  if (!rates || !breakers || rates->which() != capnp::JsonValue::ARRAY
      || breakers->which() != capnp::JsonValue::ARRAY)
    return {};
  exposition e;
  auto each = [](json list, auto f) {
    for (auto x : list.getArray())
      f(x, label("key", json_string(x, "key")));
  };
  auto family = [&](json list, const char* name, const char* type,
                    const char* help, const char* field) {
    e.family(name, type, help);
    each(list, [&](json x, const std::string& key) {
      e.sample(name, json_number(x, field), key);
    });
  };
  family(*rates, "drover_rate_limit_tokens_per_second", "gauge",
         "A rate limiter's rate.", "rate_per_second");
  family(*rates, "drover_rate_limit_tokens", "gauge",
         "Tokens in a rate limiter's bucket now.", "tokens");
  family(*rates, "drover_rate_limit_granted_total", "counter",
         "Tokens granted (dispatches and takes of running jobs) since "
         "the queue started.",
         "granted");
  family(*rates, "drover_rate_limit_waiting_jobs", "gauge",
         "Ready jobs waiting for a token.", "waiting");
  e.family("drover_breaker_state", "gauge",
           "1 for a circuit breaker's current state (closed, open, "
           "half_open), 0 for the others.");
  each(*breakers, [&](json x, const std::string& key) {
    auto now = json_string(x, "state");
    for (auto s : {"closed", "open", "half_open"})
      e.sample("drover_breaker_state", now == s ? 1.0 : 0.0,
               key + "," + label("state", s));
  });
  family(*breakers, "drover_breaker_opened_total", "counter",
         "Times a circuit breaker opened on the failures it saw since the "
         "queue started.",
         "times_opened");
  family(*breakers, "drover_breaker_followed_total", "counter",
         "Times a circuit breaker opened because another coordinator "
         "sharing the partitions opened its own, since the queue started.",
         "times_followed");
  family(*breakers, "drover_breaker_failures_in_row", "gauge",
         "Counted failures in a row of a closed breaker.", "failures_in_row");
  family(*breakers, "drover_breaker_waiting_jobs", "gauge",
         "Ready jobs waiting for a breaker to let them through.", "waiting");
  // Breakers with a ratio rule only (null otherwise): a 0 would read as
  // an empty window.
  for (auto [name, field, help] :
       {std::tuple{"drover_breaker_window_calls", "window_calls",
                   "Attempts that ended within a ratio breaker's window."},
        std::tuple{"drover_breaker_window_failures", "window_failures",
                   "Counted failures within a ratio breaker's window."}}) {
    e.family(name, "gauge", help);
    each(*breakers,
         [&, name = name, field = field](json x, const std::string& key) {
           auto v = json_member(x, field);
           if (v && v->which() == capnp::JsonValue::NUMBER)
             e.sample(name, v->getNumber(), key);
         });
  }
  // {"node": {"pool": {"total": T, "used": U}}} (runtime/resources.hpp).
  if (auto pools = json_member(doc, "resource_pools");
      pools && pools->which() == capnp::JsonValue::OBJECT) {
    for (auto [name, field, help] :
         {std::tuple{"drover_resource_pool_total", "total",
                     "A worker node's resource pool (--resources)."},
          std::tuple{"drover_resource_pool_used", "used",
                     "What the attempts leased to the node hold of it."}}) {
      e.family(name, "gauge", help);
      for (auto node : pools->getObject())
        if (node.getValue().which() == capnp::JsonValue::OBJECT)
          for (auto pool : node.getValue().getObject())
            e.sample(name, json_number(pool.getValue(), field),
                     label("node", node.getName().cStr()) + ","
                         + label("pool", pool.getName().cStr()));
    }
  }
  // Through a sharing gateway: coordinators of its list whose part the
  // sums above lack (runtime/view_merge.hpp).
  if (auto unreached = json_member(doc, "unreached_coordinators");
      unreached && unreached->which() == capnp::JsonValue::ARRAY)
    e.one("drover_gateway_unreached_coordinators", "gauge",
          "Coordinators of the gateway's list it is not joined to: the "
          "flow figures above lack their part.",
          static_cast<uint64_t>(unreached->getArray().size()));
  return e.take();
}

process_figures read_process_figures() {
  process_figures p;
  rusage ru{};
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    p.cpu_seconds
        = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec)
          + static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec)
                / 1e6;
  auto page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  std::ifstream statm{"/proc/self/statm"};
  uint64_t size = 0;
  uint64_t resident = 0;
  if (statm >> size >> resident) {
    p.virtual_bytes = size * page;
    p.resident_bytes = resident * page;
  }
  // Field 22 of /proc/self/stat: start time in clock ticks after boot.
  std::ifstream stat{"/proc/self/stat"};
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  std::ifstream uptime_file{"/proc/uptime"};
  double uptime = 0;
  if (close != std::string::npos && (uptime_file >> uptime)) {
    std::istringstream rest{line.substr(close + 2)};
    std::string field;
    uint64_t start_ticks = 0;
    for (int i = 3; i <= 22 && rest >> field; ++i)
      if (i == 22)
        start_ticks = std::stoull(field);
    auto hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    timespec now{};
    clock_gettime(CLOCK_REALTIME, &now);
    double boot = static_cast<double>(now.tv_sec)
                  + static_cast<double>(now.tv_nsec) / 1e9 - uptime;
    p.start_time_seconds = boot + static_cast<double>(start_ticks) / hz;
  }
  p.open_fds = count_fds();
  return p;
}

std::string metrics_text(const queue_stats& s, const process_figures& p) {
  exposition e;
  std::array<double, 3> oldest{};
  for (size_t i = 0; i < 3; ++i)
    oldest[i] = static_cast<double>(s.oldest_age_ms[i]) / 1000.0;
  e.per_priority("drover_queue_ready_jobs", "gauge",
                 "Jobs ready to run: waiting for a worker, or held back by a "
                 "concurrency limit.",
                 s.depth);
  e.per_priority("drover_queue_oldest_ready_age_seconds", "gauge",
                 "How long the oldest ready job has waited (0 when none).",
                 oldest);
  e.one("drover_queue_delayed_jobs", "gauge",
        "Scheduled jobs and retries waiting for their time.", s.delayed);
  e.one("drover_queue_running_attempts", "gauge", "Attempts leased to workers.",
        s.running);
  e.one("drover_queue_idle_workers", "gauge", "Worker slots waiting for work.",
        s.idle_workers);
  e.per_priority("drover_jobs_dispatched_total", "counter",
                 "Attempts started since the queue started.", s.dispatched);
  e.one("drover_jobs_completed_total", "counter",
        "Jobs completed since the queue started.", s.completed);
  e.one("drover_jobs_failed_total", "counter",
        "Jobs failed for good (dead-lettered) since the queue started.",
        s.failed);
  e.one("drover_jobs_cancelled_total", "counter",
        "Jobs cancelled since the queue started.", s.cancelled);
  e.one("drover_jobs_retried_total", "counter",
        "Retries scheduled since the queue started.", s.retried);
  e.one("drover_queue_start_time_seconds", "gauge",
        "Unix time the queue's counters started from.",
        static_cast<double>(s.since_ms) / 1000.0);
  e.one("drover_admission_in_flight_submissions", "gauge",
        "Submissions sent to the store and not answered yet.",
        s.admission_in_flight);
  e.one("drover_admission_queued_work_bytes", "gauge",
        "Estimated memory of queued work (waiting jobs, submissions in "
        "flight).",
        s.admission_memory_bytes);
  e.one("drover_admission_queued_work_limit_bytes", "gauge",
        "The bound on queued work (0 = none).", s.admission_memory_limit_bytes);
  e.one("drover_admission_refused_total", "counter",
        "Submissions refused by admission control since the queue started.",
        s.admission_refused);
  // Per resource class and job type.
  auto per_type
      = [&](const char* name, const char* type, const char* help, auto value) {
          e.family(name, type, help);
          for (const auto& t : s.by_type)
            e.sample(name, static_cast<double>(value(t)),
                     label("resource_class", t.resource_class) + ","
                         + label("job_type", t.job_type));
        };
  per_type("drover_queue_type_ready_jobs", "gauge",
           "Ready jobs of a resource class and job type.",
           [](const type_figures& t) { return t.ready; });
  per_type("drover_queue_type_oldest_ready_age_seconds", "gauge",
           "How long its oldest ready job has waited (0 when none).",
           [](const type_figures& t) { return t.oldest_age_ms / 1000.0; });
  per_type("drover_queue_type_delayed_jobs", "gauge",
           "Its scheduled jobs and retries waiting for their time.",
           [](const type_figures& t) { return t.delayed; });
  per_type("drover_queue_type_running_attempts", "gauge",
           "Its attempts leased to workers.",
           [](const type_figures& t) { return t.running; });
  per_type("drover_jobs_type_dispatched_total", "counter",
           "Its attempts started since the queue started.",
           [](const type_figures& t) { return t.dispatched; });
  per_type("drover_jobs_type_completed_total", "counter",
           "Its jobs completed since the queue started.",
           [](const type_figures& t) { return t.completed; });
  per_type("drover_queue_type_arrival_rate", "gauge",
           "Jobs becoming ready per second (decaying over a minute).",
           [](const type_figures& t) { return t.arrivals_per_second; });
  per_type("drover_queue_type_completion_rate", "gauge",
           "Jobs completed per second (decaying over a minute).",
           [](const type_figures& t) { return t.completions_per_second; });
  per_type("drover_queue_type_mean_run_time_seconds", "gauge",
           "Mean run time of its recent attempts (0 = none ended yet).",
           [](const type_figures& t) { return t.mean_run_ms / 1000.0; });
  per_type("drover_queue_type_recommended_slots", "gauge",
           "Worker slots that would keep up with its arrivals and drain "
           "its backlog within a minute.",
           [](const type_figures& t) { return t.recommended_slots; });
  // Per partition of the job space with a job waiting or running.
  auto per_partition = [&](const char* name, const char* help, auto value) {
    e.family(name, "gauge", help);
    for (const auto& p : s.by_partition)
      e.sample(name, static_cast<double>(value(p)),
               label("partition", std::to_string(p.partition)));
  };
  per_partition("drover_partition_waiting_jobs",
                "Jobs of the partition waiting (ready, held back, scheduled, "
                "retrying) and its submissions in flight.",
                [](const partition_figures& p) { return p.waiting; });
  per_partition("drover_partition_running_attempts",
                "Attempts of the partition's jobs leased to workers.",
                [](const partition_figures& p) { return p.running; });
  e.histogram("drover_job_start_latency_seconds",
              "How long jobs waited ready (submitted, due, or due for a "
              "retry) before an attempt started.",
              s.start_latency);
  e.histogram("drover_job_run_time_seconds",
              "How long attempts ran until their outcome was recorded.",
              s.run_time);
  return e.take() + process_metrics_text(p);
}

std::string process_metrics_text(const process_figures& p) {
  exposition e;
  e.one("process_cpu_seconds_total", "counter",
        "User and system CPU time of the node process.", p.cpu_seconds);
  e.one("process_resident_memory_bytes", "gauge", "Resident memory size.",
        p.resident_bytes);
  e.one("process_virtual_memory_bytes", "gauge", "Virtual memory size.",
        p.virtual_bytes);
  e.one("process_open_fds", "gauge", "Open file descriptors.", p.open_fds);
  e.one("process_start_time_seconds", "gauge", "Unix time the process started.",
        p.start_time_seconds);
  return e.take();
}

std::string worker_metrics_text(const worker_figures& w,
                                const process_figures& p) {
  exposition e;
  auto per_class = [&](const char* name, const char* type, const char* help,
                       auto value, bool elastic_only = false) {
    e.family(name, type, help);
    for (const auto& [cls, k] : w.classes)
      if (!elastic_only || k.elastic_min > 0)
        e.sample(name, static_cast<uint64_t>(value(k)),
                 label("resource_class", cls).c_str());
  };
  using figures = worker_class_figures;
  per_class("drover_worker_slots", "gauge",
            "Worker slots of a resource class on this node (--slots): the "
            "most attempts of the class it runs at once.",
            [](const figures& k) { return k.slots; });
  per_class(
      "drover_worker_elastic_min_slots", "gauge",
      "Slots an elastic class (--elastic-slots) offers at least; the "
      "coordinator grows it up to drover_worker_slots.",
      [](const figures& k) { return k.elastic_min; }, true);
  per_class("drover_worker_busy_slots", "gauge",
            "Slots holding an attempt (running, finishing, or abandoned "
            "while its handler has not returned).",
            [](const figures& k) { return k.busy; });
  per_class("drover_worker_running_attempts", "gauge",
            "Attempts running on the class's slots.",
            [](const figures& k) { return k.running; });
  per_class("drover_worker_buffered_leases", "gauge",
            "Leases received and waiting for a free slot (prefetch).",
            [](const figures& k) { return k.buffered; });
  per_class("drover_worker_attempts_started_total", "counter",
            "Attempts started since the process started.",
            [](const figures& k) { return k.started; });
  e.one("drover_worker_attempts_finished_total", "counter",
        "Attempts that ended on this node (an outcome, or their worker "
        "died) since the process started.",
        w.attempts_finished);
  e.one("drover_worker_leases_received_total", "counter",
        "Leases received from the coordinator since the process started.",
        w.leases_received);
  e.one("drover_worker_stale_leases_refused_total", "counter",
        "Leases refused because a lease of the same partition with a newer "
        "epoch came before (sent by a coordinator deposed meanwhile).",
        w.stale_leases_refused);
  e.one("drover_worker_unsettled_outcomes", "gauge",
        "Outcomes held until the coordinator says they are settled.",
        w.unsettled_outcomes);
  e.one("drover_worker_connected", "gauge",
        "1 while the node is joined to a coordinator, else 0.",
        uint64_t{w.connected ? 1u : 0u});
  e.one("drover_worker_draining", "gauge",
        "1 while the node drains (SIGTERM: no new leases), else 0.",
        uint64_t{w.draining ? 1u : 0u});
  e.family("drover_worker_heartbeat_answer_age_seconds", "gauge",
           "Seconds since the coordinator last answered a heartbeat (or "
           "the join); no sample before its first answer.");
  if (w.since_answer_ms >= 0)
    e.sample("drover_worker_heartbeat_answer_age_seconds",
             static_cast<double>(w.since_answer_ms) / 1000.0);
  e.one("drover_worker_reconnects_total", "counter",
        "Joins to a coordinator after the first since the process started.",
        w.reconnects);
  e.one("drover_worker_connection_failures_total", "counter",
        "Failed connection attempts and handshakes since the process "
        "started.",
        w.connection_failures);
  e.one("drover_worker_heartbeats_unanswered_total", "counter",
        "Heartbeats the coordinator did not answer since the process "
        "started.",
        w.heartbeats_unanswered);
  e.one("drover_worker_token_takes_waiting", "gauge",
        "Mid-attempt token takes of running jobs waiting for the "
        "coordinator's rate limiter.",
        w.token_takes_waiting);
  e.one("drover_worker_tokens_granted_total", "counter",
        "Tokens the coordinator granted to this node's running jobs since "
        "the process started.",
        w.tokens_granted);
  return e.take() + process_metrics_text(p);
}

} // namespace drover::http
