#pragma once

// The queue's entries (actors/detail/queue_state.hpp): ready lanes by type
// and shape, resource classes, delayed, running and held-back jobs, and the
// permits of a shared concurrency key. Internal to the queue actor.

#include "actors/detail/ready_queue.hpp"
#include "actors/job_supervisor.hpp"
#include "actors/worker.hpp"
#include "runtime/backoff.hpp"
#include "runtime/concurrency.hpp"
#include "runtime/resources.hpp"

#include <array>
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace drover::queue_detail {

using detail::ready_entry;
using detail::ready_queue;

/// Ready jobs by priority, each shared fairly between tenants.
using priority_queues = std::array<ready_queue, 3>;

/// The ready jobs of one job type and one resource shape (what they draw
/// from the pools of the node that runs them, runtime/resources.hpp).
struct lane : priority_queues {
  shape_ref shape;
};

/// A lane's key: the job type, then for jobs that draw from pools a NUL and
/// the shape's text (a type holds no NUL: a type's lanes sort together).
inline std::string lane_key(const std::string& type, const shape_ref& shape) {
  return shape ? type + '\0' + shape->key : type;
}

inline std::string type_of_lane(const std::string& key) {
  return key.substr(0, key.find('\0'));
}

/// One resource class: ready jobs by lane (a worker node may run only some
/// types and have only some resources), and its idle workers.
struct class_queues {
  std::map<std::string, lane> by_type;
  std::deque<worker_actor> idle_workers;
};

/// The node of a worker: remote slots are "node/class-i", local workers
/// have no '/' (node "").
inline std::string node_of(const std::string& worker_id) {
  auto slash = worker_id.find('/');
  return slash == std::string::npos ? std::string{}
                                    : worker_id.substr(0, slash);
}

/// The machine of a worker: its node without the agent suffix ".c<k>" a
/// worker node sharing several coordinators gives each agent
/// (`<node>.c1`, `<node>.c2`, ...): an attempt runs on one machine, whichever
/// of its agents reports it.
inline std::string machine_of(const std::string& worker_id) {
  auto node = node_of(worker_id);
  auto dot = node.rfind(".c");
  if (dot == std::string::npos || dot + 2 == node.size())
    return node;
  for (auto k = dot + 2; k < node.size(); ++k)
    if (node[k] < '0' || node[k] > '9')
      return node;
  return node.substr(0, dot);
}

/// A scheduled job or a retry waiting for its time.
struct delayed_entry {
  int64_t due_ms;
  std::string job_id;
  std::string resource_class;
  priority prio;
  std::string type;
  /// Its tenant (admission_control::tenant).
  uint32_t tenant = 0;
  /// Its rate-limit and breaker keys (flow_control::intern).
  uint32_t flow = 0;
  /// What it draws from pools (null = nothing).
  shape_ref shape;
  /// Its own concurrency key (null = none).
  own_key_ref own;

  bool operator<(const delayed_entry& other) const {
    return std::tie(due_ms, job_id) < std::tie(other.due_ms, other.job_id);
  }
};

struct running_entry {
  queued_job_actor job_supervisor;
  worker_actor worker;
  std::string resource_class;
  int64_t started_ms;
  /// The concurrency slots it holds (its own key's, its type's).
  slot_keys slots;
  /// Its rate-limit and breaker keys, and whether it runs as a probe of a
  /// half-open breaker.
  uint32_t flow = 0;
  uint64_t probe = 0;
  /// Its job type (figures per type).
  std::string type;
  /// Its `cancel_requested` is committed (request_cancel): a later cancel
  /// is answered without writing it again.
  bool cancel_recorded;
  /// The worker's id (`<node>/<slot>`): its machine.
  std::string worker_id;
  /// The attempt the worker node running it on `worker` lets go to another
  /// agent of its machine (0 = none): only then does an offer move it.
  uint32_t movable = 0;
};

/// A ready job held back by its concurrency key (runtime/concurrency.hpp):
/// it waits behind the key, in order, until an attempt of the key ends.
struct parked_entry {
  ready_entry entry;
  std::string resource_class;
  std::string type;
  size_t prio;
  shape_ref shape;
};

/// Permits of a job type's key asked of the store (coordinators sharing
/// the partitions, actors/queue_permits.cpp): the parked jobs granted one
/// and not woken yet, whether a request is on its way, the armed ask's
/// generation (0 = none armed; an older one firing is not it), until when
/// (flow_now's ms) a refused key is not asked again, and the backoff of
/// failed requests; and the (resource class, job type) pairs of the jobs
/// parked behind the key since the line was made (a few: an ask counts the
/// workers for them without walking the line).
struct permit_line {
  std::unordered_set<std::string> granted;
  std::vector<std::pair<std::string, std::string>> pairs;
  bool asking = false;
  uint64_t armed = 0;
  int64_t quiet_until = 0;
  backoff_counter failures{backoff_schedule{std::chrono::milliseconds{250},
                                            std::chrono::milliseconds{5000},
                                            2.0, 0.5}};
};

} // namespace drover::queue_detail
