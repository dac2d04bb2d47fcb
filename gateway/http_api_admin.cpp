// The operator resources of the HTTP API (gateway/http_api.hpp): queue
// figures (GET /api/admin/queues) and the supervision tree (GET
// /api/admin/tree) with the jobs it runs. See
// gateway/detail/http_api_writer.hpp.

#include "gateway/detail/http_api_writer.hpp"

namespace drover::http {

using api_detail::running_stage;
using api_detail::write_eta;
using api_detail::writer;

std::string queues_json(const queue_stats& s,
                        const std::array<double, 3>& rates) {
  static constexpr const char* names[] = {"high", "normal", "low"};
  writer w;
  w.open_object().key("priorities").open_object();
  for (size_t i = 0; i < 3; ++i) {
    w.key(names[i])
        .open_object()
        .key("depth")
        .num(static_cast<int64_t>(s.depth[i]))
        .key("oldest_age_seconds")
        .num(s.oldest_age_ms[i] / 1000.0)
        .key("dispatched_total")
        .num(static_cast<int64_t>(s.dispatched[i]))
        .key("dispatched_per_second");
    rates[i] < 0 ? w.null() : w.num(rates[i]);
    w.close_object();
  }
  w.close_object()
      .key("delayed")
      .num(static_cast<int64_t>(s.delayed))
      .key("running")
      .num(static_cast<int64_t>(s.running))
      .key("idle_workers")
      .num(static_cast<int64_t>(s.idle_workers))
      .key("completed_total")
      .num(static_cast<int64_t>(s.completed))
      .key("failed_total")
      .num(static_cast<int64_t>(s.failed))
      .key("cancelled_total")
      .num(static_cast<int64_t>(s.cancelled))
      .key("retried_total")
      .num(static_cast<int64_t>(s.retried))
      .key("counters_since")
      .time(s.since_ms)
      .key("admission")
      .open_object()
      .key("in_flight")
      .num(static_cast<int64_t>(s.admission_in_flight))
      .key("queued_memory_bytes")
      .num(static_cast<int64_t>(s.admission_memory_bytes))
      .key("queued_memory_limit_bytes");
  s.admission_memory_limit_bytes == 0
      ? w.null()
      : w.num(static_cast<int64_t>(s.admission_memory_limit_bytes));
  w.key("refused_total")
      .num(static_cast<int64_t>(s.admission_refused))
      .close_object()
      .key("types")
      .open_array();
  for (const auto& t : s.by_type)
    w.open_object()
        .key("resource_class")
        .str(t.resource_class)
        .key("job_type")
        .str(t.job_type)
        .key("ready")
        .num(static_cast<int64_t>(t.ready))
        .key("oldest_age_seconds")
        .num(t.oldest_age_ms / 1000.0)
        .key("delayed")
        .num(static_cast<int64_t>(t.delayed))
        .key("running")
        .num(static_cast<int64_t>(t.running))
        .key("dispatched_total")
        .num(static_cast<int64_t>(t.dispatched))
        .key("completed_total")
        .num(static_cast<int64_t>(t.completed))
        .key("arrivals_per_second")
        .num(t.arrivals_per_second)
        .key("completions_per_second")
        .num(t.completions_per_second)
        .key("mean_run_seconds")
        .num(t.mean_run_ms / 1000.0)
        .key("recommended_slots")
        .num(static_cast<int64_t>(t.recommended_slots))
        .close_object();
  w.close_array().key("partitions").open_array();
  for (const auto& p : s.by_partition)
    w.open_object()
        .key("partition")
        .num(static_cast<int64_t>(p.partition))
        .key("waiting")
        .num(static_cast<int64_t>(p.waiting))
        .key("running")
        .num(static_cast<int64_t>(p.running))
        .close_object();
  w.close_array().close_object();
  return w.take();
}

namespace {

void write_tree(writer& w, const tree_node& n,
                const std::map<std::string, job_record>& jobs) {
  w.open_object()
      .key("name")
      .str(n.name)
      .key("kind")
      .str(to_string(n.kind))
      .key("state")
      .str(to_string(n.state))
      .key("restart")
      .str(to_string(n.restart));
  if (n.kind == child_kind::supervisor)
    w.key("strategy").str(snake_case(to_string(n.strat)));
  w.key("restarts")
      .num(static_cast<int64_t>(n.restarts))
      .key("uptime_seconds")
      .num(n.uptime_ms / 1000.0)
      .key("last_exit");
  n.last_exit.empty() ? w.null() : w.str(n.last_exit);
  if (n.name.rfind("job ", 0) == 0) {
    auto j = jobs.find(n.name.substr(4));
    if (j != jobs.end()) {
      auto& job = j->second;
      w.key("job")
          .open_object()
          .key("job_id")
          .str(job.job_id)
          .key("type")
          .str(job.spec.type)
          .key("status")
          .str(to_string(job.status))
          .key("attempt")
          .num(static_cast<int64_t>(job.attempt))
          .key("progress")
          .num(job.progress)
          .key("stage");
      auto st = running_stage(job.stages);
      st.empty() ? w.null() : w.str(st);
      w.key("eta_seconds");
      write_eta(w, job.eta_ms);
      w.key("worker_id")
          .str(job.worker_id)
          .key("started_at")
          .time(job.started_at_ms)
          .close_object();
    }
  }
  w.key("children").open_array();
  for (auto& c : n.children)
    write_tree(w, c, jobs);
  w.close_array().close_object();
}

} // namespace

std::string tree_json(const tree_node& root,
                      const std::map<std::string, job_record>& jobs) {
  writer w;
  write_tree(w, root, jobs);
  return w.take();
}

void running_job_ids(const tree_node& root, std::vector<std::string>& out) {
  if (root.name.rfind("job ", 0) == 0)
    out.push_back(root.name.substr(4));
  for (auto& c : root.children)
    running_job_ids(c, out);
}

} // namespace drover::http
