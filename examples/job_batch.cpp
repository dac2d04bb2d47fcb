// A batch of jobs on an in-process node.
//
// Registers two job types — `thumbnail` (a plain handler reporting
// progress) and `export` (stages, checkpoints, and a transient failure it
// recovers from by resuming at its last checkpoint) — starts a node's job
// system in this process, submits a batch, and prints progress until every
// job has ended.
//
//   build/examples/job_batch

#include "actors/job_system.hpp"
#include "gateway/local_client.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <atomic>
#include <cmath>
#include <iostream>
#include <mutex>

using namespace drover;
using namespace std::chrono_literals;

namespace {

std::mutex out_mx;

void say(const std::string& line) {
  std::lock_guard<std::mutex> guard{out_mx};
  std::cout << line << std::endl;
}

/// Ten steps of simulated work; interruptible by a cancel.
task_outcome thumbnail(task_context& ctx) {
  for (int step = 1; step <= 10; ++step) {
    if (ctx.wait_for_cancel(15ms))
      return task_outcome::cancelled();
    ctx.progress(step * 10.0);
  }
  return task_outcome::success(R"({"thumbnail": "ok"})");
}

/// Three stages with a checkpoint after each. The first attempt of every
/// export fails in "upload" (a flaky network); the retry resumes after
/// "render" instead of starting over.
task_outcome export_report(task_context& ctx) {
  static const std::vector<std::string> stages{"query", "render", "upload"};
  ctx.declare_stages(stages);
  size_t first = 0;
  if (!ctx.last_checkpoint().empty()) {
    first = static_cast<size_t>(std::stoi(ctx.last_checkpoint()));
    say("  " + ctx.job_id() + ": attempt " + std::to_string(ctx.attempt())
        + " resumes at stage '" + stages[first] + "'");
  }
  for (size_t i = first; i < stages.size(); ++i) {
    for (int part = 1; part <= 4; ++part) {
      if (ctx.wait_for_cancel(10ms))
        return task_outcome::cancelled();
      ctx.progress((static_cast<double>(i) + part / 4.0) * 100.0 / 3.0,
                   stages[i]);
    }
    if (stages[i] == "upload" && ctx.attempt() == 1)
      return task_outcome::retryable("upload_timeout",
                                     "storage did not answer");
    ctx.checkpoint(std::to_string(i + 1));
  }
  return task_outcome::success(
      R"({"rows": 1200, "url": "/exports/report.csv"})");
}

} // namespace

int main() {
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.set("scheduler.max-threads", size_t{2});
  caf::actor_system sys{cfg};

  auto handlers = std::make_shared<handler_registry>();
  handler_options quick_retry;
  quick_retry.retry.max_attempts = 3;
  quick_retry.retry.backoff = {50, 1000, 2.0, 0.1};
  if (auto err = handlers->register_handler("thumbnail", thumbnail)) {
    std::cerr << describe(err) << '\n';
    return 1;
  }
  if (auto err
      = handlers->register_handler("export", export_report, quick_retry)) {
    std::cerr << describe(err) << '\n';
    return 1;
  }

  job_system_config jobs;
  jobs.slots = {{"cpu", 3}};
  jobs.handlers = handlers;
  auto handles = std::make_shared<job_system_handles>();
  auto root = spawn_supervisor(
      sys, {"node:example", {}, {job_system_child(jobs, handles)}});
  if (!root) {
    std::cerr << describe(root.error()) << '\n';
    return 1;
  }
  // The client API, in process: the same calls as over the network.
  auto client = local_client(sys, handles, *root);
  if (!client) {
    std::cerr << describe(client.error()) << '\n';
    return 1;
  }

  // Submit the batch (while the queue starts, the client retries by
  // itself).
  std::vector<std::string> ids;
  auto submit = [&](const std::string& type, int prio) {
    submit_request req;
    req.type = type;
    req.priority = prio;
    auto sub = (*client)->submit(req);
    if (!sub) {
      say("submit failed: " + describe(sub.error()));
      return;
    }
    ids.push_back(sub->job.job_id);
    say("submitted " + type + " as " + sub->job.job_id);
  };
  for (int i = 0; i < 2; ++i)
    submit("export", 0);
  for (int i = 0; i < 5; ++i)
    submit("thumbnail", 1);

  int completed = 0;
  for (const auto& id : ids) {
    auto rec = (*client)->wait(id, 30s, [&id](const progress_update& u) {
      std::string line = "  " + id + " attempt " + std::to_string(u.attempt)
                         + ": " + std::to_string(std::lround(u.percent)) + "%";
      if (!u.stage.empty())
        line += " [" + u.stage + "]";
      if (u.eta_ms >= 0)
        line += " eta " + std::to_string(u.eta_ms) + " ms";
      say(line);
    });
    if (!rec) {
      say(id + ": " + describe(rec.error()));
      continue;
    }
    say(id + " " + to_string(rec->status) + " after "
        + std::to_string(rec->attempt) + " attempt(s): " + rec->result);
    if (rec->status == job_status::completed)
      ++completed;
  }
  say(std::to_string(completed) + " of " + std::to_string(ids.size())
      + " jobs completed");

  caf::scoped_actor self{sys};
  self->monitor(*root);
  self->send_exit(*root, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg&) {});
  return completed == static_cast<int>(ids.size()) ? 0 : 1;
}
