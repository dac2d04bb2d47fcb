#pragma once

// The job system of one node as a supervision subtree:
//
//   jobs (one_for_all)
//    ├─ store        memory store (or the configured one)
//    ├─ progress     progress publisher
//    ├─ queue        queue + dispatcher; spawns a job supervisor per
//    │               running job (listed in its describe())
//    └─ workers (one_for_one)
//        ├─ cpu-0 … cpu-N   one worker per slot and resource class
//        └─ gpu-0 …
//
// one_for_all at the top because the parts hold each other's handles: if
// one dies, all restart with fresh handles (durable state lives in the
// store). Workers are restarted one by one by their own supervisor; a new
// worker announces itself to the queue.

#include "actors/attempt_protocol.hpp"
#include "actors/progress_publisher.hpp"
#include "actors/queue.hpp"
#include "actors/store.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/task.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace drover {

struct job_system_config {
  /// Worker slots per resource class (may be empty with remote_workers).
  std::map<std::string, uint32_t> slots{{"cpu", 2}};
  /// Worker nodes may join (a coordinator with a cluster port).
  bool remote_workers = false;
  queue_options queue;
  progress_options progress;
  std::shared_ptr<const handler_registry> handlers;
  /// Creates the store; default: the memory store.
  std::function<store_actor(caf::actor_system&)> make_store;
  /// Runs attempts; default: a thread of its own per running attempt, reused
  /// through a thread_cache (see worker_config).
  std::function<void(std::function<void()>)> executor;
  /// Restart policy of the `jobs` and `workers` supervisors.
  supervisor_flags flags;
  /// Called with each worker incarnation as it starts (observability and
  /// tests); runs on a supervisor's thread and must not block.
  std::function<void(const std::string& worker_id, const local_worker_actor&)>
      on_worker_started;
};

/// The current handles of a running job system, updated whenever a part
/// (re)starts. Thread-safe; callers take a copy of the handle they need.
class job_system_handles {
public:
  store_actor store() const;
  progress_actor publisher() const;
  queue_actor queue() const;

  void set_store(store_actor x);
  void set_publisher(progress_actor x);
  void set_queue(queue_actor x);

private:
  mutable std::mutex mx_;
  store_actor store_;
  progress_actor publisher_;
  queue_actor queue_;
};

/// Checks slots (at least one class, 1..1024 slots each) and handlers.
caf::error validate(const job_system_config& cfg);

/// The `jobs` subtree; `handles` is filled as its parts start.
child_spec job_system_child(job_system_config cfg,
                            std::shared_ptr<job_system_handles> handles);

} // namespace drover
