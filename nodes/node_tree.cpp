// A drover-node's supervision tree (nodes/node_tree.hpp): its job types
// and the children of its root supervisor, by role.

#include "nodes/node_tree.hpp"

#include "gateway/webhook.hpp"
#include "runtime/errors.hpp"
#include "runtime/exec_policy.hpp"
#include "runtime/task.hpp"

#include <string>
#include <utility>

namespace drover::node {

caf::expected<drover::supervisor_spec>
node_tree(const drover::node_config& cfg, const drover::node_program& program,
          std::shared_ptr<drover::job_system_handles> handles,
          const coordinator_claim& claim,
          std::shared_ptr<drover::node::worker_shared> worker,
          std::shared_ptr<drover::webhook_dispatcher_slot> webhooks_running) {
  auto handlers = std::make_shared<drover::handler_registry>();
  drover::builtin_options builtins;
  builtins.exec_kill_grace = cfg.exec_kill_grace;
  auto exec = exec_policy_of(cfg);
  if (!exec)
    return std::move(exec.error());
  builtins.exec = std::move(*exec);
  if (auto err = drover::register_builtin_handlers(*handlers, builtins))
    return err;
  if (program.register_handlers)
    if (auto err = program.register_handlers(*handlers))
      return drover::make_error(
          drover::errc::bad_config,
          program.name + ": its job types: " + drover::describe(err));
  for (const auto& t : cfg.remote_job_types) {
    if (handlers->find(t) != nullptr)
      return drover::make_error(drover::errc::bad_config,
                                "remote-job-types: '" + t
                                    + "' is a type this program runs itself "
                                      "(or is listed twice)");
    if (auto err = handlers->declare_remote(t))
      return drover::make_error(drover::errc::bad_config,
                                "remote-job-types: " + drover::describe(err));
  }
  for (const auto& t : cfg.job_types)
    if (handlers->find(t) == nullptr)
      return drover::make_error(drover::errc::bad_config,
                                "job-types: no handler for '" + t
                                    + "' on this node");
  for (const auto& [t, limit] : cfg.concurrency)
    if (handlers->find(t) == nullptr)
      return drover::make_error(
          drover::errc::bad_config,
          "concurrency-limit: no job type '" + t
              + "' here (a handler, or one of --remote-job-types)");
  auto roles = drover::roles_of(cfg);
  drover::supervisor_spec root;
  root.name = "node:" + cfg.node_id;
  root.flags.strat = drover::strategy::one_for_one;
  if (!roles.coordinator) {
    if (roles.worker)
      root.children.push_back(
          drover::node::worker_node_child(cfg, handlers, worker));
    return root;
  }
  drover::job_system_config jobs;
  if (roles.worker)
    jobs.slots = cfg.slots;
  else
    jobs.slots.clear();
  jobs.remote_workers = cfg.cluster_port >= 0;
  jobs.handlers = handlers;
  jobs.queue.aging_interval = cfg.aging_interval;
  jobs.queue.recovery_page = cfg.recovery_page_jobs;
  jobs.queue.admission = cfg.admission;
  jobs.queue.concurrency = cfg.concurrency;
  jobs.queue.flow = cfg.flow;
  jobs.queue.tenant_weights = cfg.tenant_weights;
  if (roles.worker)
    jobs.queue.local_resources = cfg.resources;
  jobs.queue.limits.max_input_bytes = cfg.max_input_bytes;
  // A job asking for a class no worker has would wait forever: refused,
  // unless worker nodes may join (they bring their own classes; a job no
  // connected worker can run waits, visibly, in the node list).
  if (!jobs.remote_workers) {
    for (const auto& [resource_class, count] : cfg.slots)
      if (count > 0)
        jobs.queue.limits.resource_classes.insert(resource_class);
    jobs.queue.limits.resource_pools = cfg.resources;
  }
  if (jobs.remote_workers)
    jobs.queue.adopt_grace
        = cfg.attempt_lease_ttl + cfg.worker_heartbeat_interval;
  if (cfg.store == "postgres")
    drover::node::use_postgres(cfg, claim, jobs);
  if (auto err = drover::validate(jobs))
    return err;
  auto webhooks = drover::webhook_options_from(cfg);
  if (!webhooks)
    return std::move(webhooks.error());
  drover::webhook_dispatcher_config wh;
  wh.options = std::move(*webhooks);
  wh.handles = handles;
  wh.running = std::move(webhooks_running);
  root.children.push_back(drover::job_system_child(jobs, handles));
  root.children.push_back(drover::webhook_child(std::move(wh)));
  return root;
}

} // namespace drover::node
