#pragma once

// What a coordinator sharing the partitions (--share-partitions,
// runtime/pg_share.hpp) does when its share changes: tells its store (the
// write fence) and its queue (the jobs it holds), in the order that keeps
// every write of a partition before its hand-over.

#include "actors/job_system.hpp"
#include "runtime/partition_epochs.hpp"
#include "runtime/pg_share.hpp"

#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <memory>

namespace drover::node {

/// The share keeper's hooks for the job system behind `handles`:
/// - taken: the store's fence first (the new partitions become writable),
///   then the queue (it recovers them);
/// - handed over: the queue first (it lets go of their jobs and running
///   attempts), then the store's fence, whose answer means that every
///   write accepted before has been committed or refused — only then are
///   the leases released.
/// Each step waits at most `timeout`; a failed step is logged and the
/// change tried again the next round. `taken` runs after each take that
/// went through (the webhook dispatcher looks for the webhooks owed).
/// `epochs` learns the epoch of every partition taken before the queue
/// does (leases to worker nodes carry it).
pg::share_keeper::hooks share_hooks(caf::actor_system& sys,
                                    std::shared_ptr<job_system_handles> handles,
                                    std::chrono::milliseconds timeout,
                                    std::shared_ptr<partition_epochs> epochs,
                                    std::function<void()> taken);

} // namespace drover::node
