#include "actors/job_system.hpp"

#include "actors/worker.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>

namespace drover {

store_actor job_system_handles::store() const {
  std::lock_guard<std::mutex> guard{mx_};
  return store_;
}

progress_actor job_system_handles::publisher() const {
  std::lock_guard<std::mutex> guard{mx_};
  return publisher_;
}

queue_actor job_system_handles::queue() const {
  std::lock_guard<std::mutex> guard{mx_};
  return queue_;
}

void job_system_handles::set_store(store_actor x) {
  std::lock_guard<std::mutex> guard{mx_};
  store_ = std::move(x);
}

void job_system_handles::set_publisher(progress_actor x) {
  std::lock_guard<std::mutex> guard{mx_};
  publisher_ = std::move(x);
}

void job_system_handles::set_queue(queue_actor x) {
  std::lock_guard<std::mutex> guard{mx_};
  queue_ = std::move(x);
}

caf::error validate(const job_system_config& cfg) {
  if (!cfg.handlers)
    return make_error(errc::bad_config, "no handler registry");
  if (cfg.slots.empty() && !cfg.remote_workers)
    return make_error(errc::bad_config, "no worker slots configured");
  for (const auto& kv : cfg.slots) {
    if (kv.first.empty() || kv.first.size() > 64)
      return make_error(errc::bad_config,
                        "resource class names must be 1 to 64 characters");
    if (kv.second < 1 || kv.second > 1024)
      return make_error(errc::bad_config, "slots of class '" + kv.first
                                              + "' must be within [1, 1024]");
  }
  if (cfg.queue.aging_interval.count() <= 0)
    return make_error(errc::bad_config, "aging interval must be positive");
  return caf::none;
}

child_spec job_system_child(job_system_config cfg,
                            std::shared_ptr<job_system_handles> handles) {
  auto shared = std::make_shared<const job_system_config>(std::move(cfg));
  auto worker_child = [shared, handles](std::string cls, uint32_t index) {
    child_spec spec;
    spec.name = cls + "-" + std::to_string(index);
    spec.start = [shared, handles, cls, id = spec.name](
                     caf::actor_system& sys, const caf::actor_addr&) {
      worker_config wc;
      wc.worker_id = id;
      wc.resource_class = cls;
      // The queue is the worker's home (worker_home_actor is a subset of
      // queue_actor).
      wc.home = handles->queue();
      wc.handlers = shared->handlers;
      wc.clock_ms
          = shared->queue.clock_ms ? shared->queue.clock_ms : system_clock_ms;
      wc.executor = shared->executor;
      auto w = spawn_worker(sys, std::move(wc));
      if (shared->on_worker_started)
        shared->on_worker_started(id, w);
      return child_handle(w);
    };
    return spec;
  };
  supervisor_spec workers{"workers", shared->flags, {}};
  workers.flags.strat = strategy::one_for_one;
  for (const auto& kv : shared->slots)
    for (uint32_t i = 0; i < kv.second; ++i)
      workers.children.push_back(worker_child(kv.first, i));

  supervisor_spec jobs{"jobs", shared->flags, {}};
  jobs.flags.strat = strategy::one_for_all;
  child_spec store;
  store.name = "store";
  store.start
      = [shared, handles](caf::actor_system& sys, const caf::actor_addr&) {
          auto s = shared->make_store ? shared->make_store(sys)
                                      : spawn_memory_store(sys);
          handles->set_store(s);
          return child_handle(s);
        };
  child_spec progress;
  progress.name = "progress";
  progress.start
      = [shared, handles](caf::actor_system& sys, const caf::actor_addr&) {
          auto p = spawn_progress_publisher(sys, shared->progress);
          handles->set_publisher(p);
          return child_handle(p);
        };
  child_spec queue;
  queue.name = "queue";
  queue.describable = true; // lists its running jobs
  queue.start = [shared, handles](caf::actor_system& sys,
                                  const caf::actor_addr&) {
    queue_deps deps{handles->store(), handles->publisher(), shared->handlers};
    auto q = spawn_queue(sys, std::move(deps), shared->queue);
    handles->set_queue(q);
    return child_handle(q);
  };
  jobs.children = {std::move(store), std::move(progress), std::move(queue),
                   supervisor_child(std::move(workers))};
  return supervisor_child(std::move(jobs));
}

} // namespace drover
