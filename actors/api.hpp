#pragma once

// The node API: one stable actor per node that remote clients (droverctl,
// later the HTTP gateway on another node) talk to over CAF's network layer.
// It outlives restarts of the job system and forwards each request to the
// part that currently serves it, so a client's handle never goes stale.
//
// Protocol (each forwarded with `delegate`; the answer comes from the part):
//   (submit_atom, submit_request)          -> job_record        queue
//   (submit_atom, vector<submit_request>)  -> vector<job_record> queue
//   (cancel_atom, job_id[, reason])        -> ok_atom           queue
//   (redrive_atom, job_id | all_atom)      -> ok_atom | uint32_t queue
//   (purge_atom, job_id | all_atom)        -> ok_atom | uint32_t queue
//   (stats_atom)                           -> queue_stats       queue
//   (partitions_atom)                      -> (string, int32_t) queue: the
//                                          partitions it owns ("0,5,17")
//                                          and the database's count
//   (ping_atom)                            -> ok_atom           store
//                                          (can it write?)
//   (get_atom, job_id)                     -> job_record        store, with
//                                          the publisher's live progress
//                                          (processing) or the queue's
//                                          waiting_for (queued)
//   (events_atom, job_id)                  -> vector<job_event> store
//   (list_atom, job_query)                 -> vector<job_record> store
//   (subscribe_atom, job_id, subscriber)   -> ok_atom           publisher
//   (subscribe_atom, job_id, subscriber, changed_atom) -> ok_atom publisher
//   (unsubscribe_atom, job_id, subscriber)                      publisher
//   (describe_atom)                        -> tree_node         root (+ the
//                                          worker nodes, as child "cluster")
//   (nodes_atom)                           -> string (JSON)     cluster +
//                                          queue: {"nodes": [...],
//                                          "waiting_without_worker": [...]}
//   (flow_atom, n)                         -> string (JSON)     queue +
//                                          store: {"rate_limits": [...],
//                                          "breakers": [...],
//                                          "control_log": [newest n]}
//                                          (n = 0: no control log)
//   (flow_atom, kind, key, spec)           -> string (JSON)     queue:
//                                          creates or changes a rate limit
//                                          or breaker (queue.hpp)
// While a part is restarting, requests fail with `errc::unavailable`.

#include "actors/job_system.hpp"
#include "runtime/supervisor.hpp"

#include <caf/actor.hpp>
#include <caf/fwd.hpp>

#include <memory>

namespace drover {

/// `cluster`: the coordinator's cluster endpoint (actors/cluster_endpoint.hpp)
/// when worker nodes may join; the tree then includes every worker node and
/// (nodes_atom) lists them. Null on an all-in-one node.
caf::actor spawn_api(caf::actor_system& sys,
                     std::shared_ptr<const job_system_handles> handles,
                     supervisor_actor root, caf::actor cluster = {});

} // namespace drover
