#include "nodes/droverctl_view.hpp"

#include "gateway/http_api.hpp"
#include "runtime/json_read.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <sstream>

namespace drover::ctl {

namespace {

std::string time_text(int64_t ms) {
  return ms > 0 ? http::rfc3339(ms) : std::string{};
}

std::string duration_text(int64_t ms) {
  if (ms < 0)
    return {};
  auto s = (ms + 500) / 1000;
  if (s < 60)
    return std::to_string(s) + "s";
  if (s < 3600)
    return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  return std::to_string(s / 3600) + "h" + std::to_string(s / 60 % 60) + "m";
}

std::string percent_text(double p) {
  return std::to_string(std::lround(p)) + "%";
}

std::string stage_of(const job_record& job) {
  for (const auto& s : job.stages)
    if (s.state == stage_state::running)
      return s.name;
  return {};
}

/// Columns padded to the widest cell of each.
std::string table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& row : rows)
    for (size_t i = 0; i < row.size(); ++i) {
      if (width.size() <= i)
        width.push_back(0);
      width[i] = std::max(width[i], row[i].size());
    }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size())
        line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ')
      line.pop_back(); // an empty last cell
    out += line + '\n';
  }
  return out;
}

} // namespace

std::string job_text(const job_record& job) {
  std::vector<std::vector<std::string>> rows;
  auto add = [&](const char* key, const std::string& value) {
    if (!value.empty())
      rows.push_back({std::string{key} + ':', value});
  };
  add("job", job.job_id);
  add("type", job.spec.type);
  add("tenant", job.spec.tenant);
  add("status", std::string{to_string(job.status)}
                    + (job.dead_lettered ? " (dead-letter queue)" : "")
                    + (job.cancel_requested && !is_terminal(job.status)
                           ? " (cancel requested)"
                           : ""));
  add("attempt", std::to_string(job.attempt) + " of "
                     + std::to_string(job.spec.max_attempts));
  if (job.status == job_status::processing) {
    add("progress", percent_text(job.progress));
    add("stage", stage_of(job));
    add("eta", duration_text(job.eta_ms));
  }
  add("worker", job.worker_id);
  add("created", time_text(job.created_at_ms));
  add("started", time_text(job.started_at_ms));
  add("ended", time_text(job.completed_at_ms));
  if (job.status == job_status::retrying)
    add("next attempt", time_text(job.retry_at_ms));
  if (!job.error.code.empty())
    add("error", job.error.code + ": " + job.error.message);
  if (job.status == job_status::completed)
    add("result", job.result.empty() ? "null" : job.result);
  return table(rows);
}

std::string jobs_table(const std::vector<job_record>& jobs, bool more) {
  std::vector<std::vector<std::string>> rows{
      {"JOB", "TYPE", "STATUS", "ATTEMPT", "PROGRESS", "CREATED"}};
  for (const auto& j : jobs)
    rows.push_back(
        {j.job_id, j.spec.type,
         std::string{to_string(j.status)} + (j.dead_lettered ? " (dlq)" : ""),
         std::to_string(j.attempt) + "/" + std::to_string(j.spec.max_attempts),
         percent_text(j.progress), time_text(j.created_at_ms)});
  auto out = table(rows);
  if (more && !jobs.empty())
    out += "more: --after " + jobs.back().job_id + '\n';
  return out;
}

std::string events_text(const std::vector<job_event>& events) {
  std::vector<std::vector<std::string>> rows{
      {"TIME", "SEQ", "EVENT", "ATTEMPT", "DETAILS"}};
  for (const auto& e : events) {
    std::string details;
    auto add = [&details](const std::string& x) {
      if (!x.empty())
        details += (details.empty() ? "" : "  ") + x;
    };
    if (!e.worker_id.empty())
      add("worker=" + e.worker_id);
    if (e.kind == event_kind::progressed)
      add(percent_text(e.progress.percent)
          + (e.progress.stage.empty() ? "" : " " + e.progress.stage));
    if (!e.error.code.empty())
      add(e.error.code + ": " + e.error.message);
    add(e.reason);
    if (e.next_attempt_at_ms > 0)
      add("next attempt " + time_text(e.next_attempt_at_ms));
    rows.push_back({time_text(e.at_ms), std::to_string(e.sequence),
                    http::snake_case(to_string(e.kind)),
                    std::to_string(e.attempt), details});
  }
  return table(rows);
}

std::string queues_text(const queue_stats& s) {
  static const char* names[] = {"high", "normal", "low"};
  std::vector<std::vector<std::string>> rows{
      {"PRIORITY", "QUEUED", "OLDEST", "DISPATCHED"}};
  for (size_t i = 0; i < 3; ++i)
    rows.push_back({names[i], std::to_string(s.depth[i]),
                    s.depth[i] > 0 ? duration_text(s.oldest_age_ms[i]) : "-",
                    std::to_string(s.dispatched[i])});
  auto out = table(rows);
  out += "scheduled " + std::to_string(s.delayed) + ", running "
         + std::to_string(s.running) + ", idle workers "
         + std::to_string(s.idle_workers) + "; since start: completed "
         + std::to_string(s.completed) + ", failed " + std::to_string(s.failed)
         + ", cancelled " + std::to_string(s.cancelled) + ", retried "
         + std::to_string(s.retried) + '\n';
  out += "admission: " + std::to_string(s.admission_in_flight)
         + " submissions in flight, queued work ~"
         + std::to_string(s.admission_memory_bytes / 1024) + " KiB of "
         + (s.admission_memory_limit_bytes == 0
                ? std::string{"no bound"}
                : std::to_string(s.admission_memory_limit_bytes / 1024)
                      + " KiB")
         + ", refused " + std::to_string(s.admission_refused) + '\n';
  if (!s.by_type.empty()) {
    std::vector<std::vector<std::string>> types{
        {"CLASS", "TYPE", "READY", "OLDEST", "SCHEDULED", "RUNNING",
         "DISPATCHED", "COMPLETED", "IN/S", "DONE/S", "RUN", "SLOTS"}};
    auto rate = [](double r) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2f", r);
      return std::string{buf};
    };
    for (const auto& t : s.by_type)
      types.push_back({t.resource_class, t.job_type, std::to_string(t.ready),
                       t.ready > 0 ? duration_text(t.oldest_age_ms) : "-",
                       std::to_string(t.delayed), std::to_string(t.running),
                       std::to_string(t.dispatched),
                       std::to_string(t.completed), rate(t.arrivals_per_second),
                       rate(t.completions_per_second),
                       t.mean_run_ms <= 0 ? std::string{"-"}
                       : t.mean_run_ms < 1000
                           ? std::to_string(std::lround(t.mean_run_ms)) + "ms"
                           : duration_text(static_cast<int64_t>(t.mean_run_ms)),
                       std::to_string(t.recommended_slots)});
    out += table(types);
  }
  if (!s.by_partition.empty()) {
    // The busiest first, at most 16 (--json has them all).
    auto parts = s.by_partition;
    std::stable_sort(
        parts.begin(), parts.end(),
        [](const partition_figures& x, const partition_figures& y) {
          return x.waiting + x.running > y.waiting + y.running;
        });
    std::vector<std::vector<std::string>> rows{
        {"PARTITION", "WAITING", "RUNNING"}};
    for (size_t i = 0; i < parts.size() && i < 16; ++i)
      rows.push_back({std::to_string(parts[i].partition),
                      std::to_string(parts[i].waiting),
                      std::to_string(parts[i].running)});
    out += table(rows);
    if (parts.size() > 16)
      out += "(" + std::to_string(parts.size() - 16)
             + " more partitions with jobs: --json lists them all)\n";
  }
  if (s.start_latency.count() > 0)
    out += "started after waiting ready "
           + std::to_string(s.start_latency.sum_ms / s.start_latency.count())
           + " ms on average; attempts ran "
           + std::to_string(s.run_time.count() > 0
                                ? s.run_time.sum_ms / s.run_time.count()
                                : 0)
           + " ms on average\n";
  return out;
}

namespace {

void tree_lines(std::string& out, const tree_node& n, int depth) {
  out += std::string(static_cast<size_t>(depth) * 2, ' ') + n.name + " ["
         + to_string(n.kind);
  if (n.kind == child_kind::supervisor)
    out += std::string{" "} + to_string(n.strat);
  out += std::string{"] "} + to_string(n.state)
         + " restarts=" + std::to_string(n.restarts)
         + " uptime=" + std::to_string(n.uptime_ms) + "ms";
  if (depth > 0)
    out += std::string{" restart="} + to_string(n.restart);
  if (!n.last_exit.empty())
    out += " last_exit=\"" + n.last_exit + '"';
  out += '\n';
  for (const auto& c : n.children)
    tree_lines(out, c, depth + 1);
}

} // namespace

std::string tree_text(const tree_node& root) {
  std::string out;
  tree_lines(out, root, 0);
  return out;
}

std::string outcome_text(const job_record& job) {
  std::string out = job.job_id + ' ' + to_string(job.status) + " (attempt "
                    + std::to_string(job.attempt) + ")";
  if (job.status == job_status::completed)
    return out + '\n' + (job.result.empty() ? "null" : job.result) + '\n';
  if (!job.error.code.empty())
    out += ": " + job.error.code + ": " + job.error.message;
  return out + '\n';
}

progress_view::progress_view(std::FILE* out, bool terminal)
    : out_(out), terminal_(terminal) {
  // nop
}

void progress_view::update(const progress_update& u) {
  auto stage = http::current_stage(u);
  std::string text = percent_text(u.percent);
  if (!stage.empty())
    text += "  " + stage;
  if (u.eta_ms >= 0)
    text += "  ETA " + duration_text(u.eta_ms);
  text += "  attempt " + std::to_string(u.attempt);
  if (!u.message.empty())
    text += "  " + u.message;
  if (!terminal_) {
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
    return;
  }
  constexpr int width = 30;
  auto filled = static_cast<int>(
      std::lround(std::clamp(u.percent, 0.0, 100.0) * width / 100));
  std::string bar = "[" + std::string(static_cast<size_t>(filled), '#')
                    + std::string(static_cast<size_t>(width - filled), '.')
                    + "]  ";
  // \r and erase-line: the bar replaces the previous one.
  std::fprintf(out_, "\r\x1b[2K%s%s", bar.c_str(), text.c_str());
  std::fflush(out_);
  drawn_ = true;
}

void progress_view::finish() {
  if (terminal_ && drawn_) {
    std::fprintf(out_, "\n");
    std::fflush(out_);
  }
  drawn_ = false;
}

namespace {

using json = json_reader;

/// A scalar as text ("" when not a scalar).
std::string scalar(json v) {
  switch (v.which()) {
    case capnp::JsonValue::STRING: {
      auto t = v.getString();
      return std::string{t.begin(), t.size()};
    }
    case capnp::JsonValue::NUMBER: {
      auto n = v.getNumber();
      if (std::floor(n) == n && std::fabs(n) < 1e15)
        return std::to_string(static_cast<int64_t>(n));
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", n);
      return buf;
    }
    case capnp::JsonValue::BOOLEAN:
      return v.getBoolean() ? "yes" : "no";
    default:
      return {};
  }
}

/// A scalar member as text ("" when absent or not a scalar).
std::string field(json obj, const char* name) {
  auto v = json_member(obj, name);
  return v ? scalar(*v) : std::string{};
}

/// An object of counts as "cpu=2,gpu=1" ("-" when empty).
std::string counts(json obj, const char* name) {
  std::string out;
  if (auto v = json_member(obj, name);
      v && v->which() == capnp::JsonValue::OBJECT)
    for (auto f : v->getObject()) {
      auto n = f.getName();
      out += (out.empty() ? "" : ",") + std::string{n.begin(), n.size()} + "="
             + scalar(f.getValue());
    }
  return out.empty() ? "-" : out;
}

/// A member in ms as a duration ("" when absent).
std::string ago(json obj, const char* name) {
  auto v = json_member(obj, name);
  if (!v || v->which() != capnp::JsonValue::NUMBER)
    return "-";
  return duration_text(static_cast<int64_t>(v->getNumber())) + " ago";
}

std::vector<json> items(json obj, const char* name) {
  std::vector<json> out;
  if (auto v = json_member(obj, name);
      v && v->which() == capnp::JsonValue::ARRAY)
    for (auto x : v->getArray())
      out.push_back(x);
  return out;
}

} // namespace

std::string unreached_text(const std::vector<std::string>& unreached,
                           const std::string& what) {
  if (unreached.empty())
    return {};
  std::string out
      = "coordinators not reached (their " + what + " are missing above): ";
  for (size_t i = 0; i < unreached.size(); ++i)
    out += (i == 0 ? "" : ", ") + unreached[i];
  return out + '\n';
}

std::string nodes_text(const std::string& text) {
  json_doc parsed;
  if (!parsed.parse(text))
    return text + '\n';
  auto doc = parsed.root();
  std::string out;
  std::vector<std::vector<std::string>> rows{
      {"NODE", "ROLE", "CONNECTED", "SLOTS", "RESOURCES", "RUNNING", "LEASES",
       "LENT", "HEARTBEAT", "JOINED"}};
  for (auto n : items(doc, "nodes")) {
    auto role = field(n, "role");
    bool worker = role == "worker";
    auto connected = field(n, "connected");
    auto lent = field(n, "lent"); // none from an older coordinator
    if (worker && field(n, "draining") == "yes")
      connected += " (draining)";
    rows.push_back({field(n, "node"), role, worker ? connected : "-",
                    worker ? counts(n, "slots") : "-",
                    worker ? counts(n, "resources") : "-",
                    worker ? field(n, "running") : "-",
                    worker ? field(n, "leases_in_flight") : "-",
                    worker && !lent.empty() ? lent : "-",
                    worker ? ago(n, "last_heartbeat_ms_ago") : "-",
                    ago(n, "joined_ms_ago")});
  }
  out += rows.size() > 1 ? table(rows) : "no worker or gateway node joined\n";
  // With --nodes, coordinators that did not answer: their nodes are
  // missing above.
  std::vector<std::string> unreached;
  for (auto x : items(doc, "unreached_coordinators"))
    unreached.push_back(scalar(x));
  out += unreached_text(unreached, "nodes");
  auto coordinators = items(doc, "coordinators");
  if (!coordinators.empty()) {
    std::vector<std::vector<std::string>> c{{"COORDINATOR", "STATE",
                                             "PARTITIONS", "ADDRESS", "HOST",
                                             "PID", "HEARD", "STARTED"}};
    for (auto x : coordinators)
      c.push_back({field(x, "node_id"), field(x, "state"),
                   field(x, "partitions"), field(x, "cluster_address"),
                   field(x, "host"), field(x, "pid"), ago(x, "heard_ms_ago"),
                   field(x, "started_at")});
    out += '\n' + table(c);
  }
  for (auto w : items(doc, "waiting_without_worker"))
    out += "waiting without a worker: " + field(w, "jobs") + " job(s) of type "
           + field(w, "job_type") + ", resource class "
           + field(w, "resource_class") + '\n';
  return out;
}

} // namespace drover::ctl
