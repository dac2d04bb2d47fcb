#pragma once

// The node API's protocol (actors/api.hpp): what the HTTP gateway, the
// client door, a gateway node's relay and router, and a joining gateway
// node send a coordinator's node API. No key travels here: whoever holds
// this handle is trusted (the node's own gateway and door, gateways that
// proved the cluster's join secret); clients from outside come through the
// client door (runtime/client_protocol.hpp), which checks their key first.
//
//   (submit_atom, submit_request)          -> job_record
//   (submit_atom, vector<submit_request>)  -> vector<job_record>
//   (cancel_atom, job_id[, reason])        -> ok_atom
//   (redrive_atom, job_id | all_atom)      -> ok_atom | uint32_t
//   (purge_atom, job_id | all_atom)        -> ok_atom | uint32_t
//   (stats_atom)                           -> queue_stats
//   (partitions_atom)                      -> (string, int32_t): the
//                                          partitions it owns ("0,5,17")
//                                          and the database's count
//   (ping_atom)                            -> ok_atom (can it write?)
//   (get_atom, job_id)                     -> job_record, with live progress
//                                          (processing) or why it waits
//                                          (queued)
//   (events_atom, job_id)                  -> vector<job_event>
//   (events_atom, job_id, after, limit)    -> vector<job_event>: those with
//                                          a sequence above `after`, at most
//                                          `limit` ([1, 10000]); node
//                                          protocol 3 on (a gateway node
//                                          asks an older coordinator for
//                                          the whole log instead)
//   (list_atom, job_query)                 -> vector<job_record>
//   (subscribe_atom, job_id, subscriber[, changed_atom]) -> ok_atom
//   (unsubscribe_atom, job_id, subscriber)
//   (describe_atom)                        -> tree_node
//   (nodes_atom)                           -> string (JSON)
//   (flow_atom, n)                         -> string (JSON)
//   (flow_atom, kind, key, spec)           -> string (JSON)
//
// Over the network (a gateway node's join) the handle travels as a plain
// caf::actor, as every handle in the cluster protocol does; the joining
// node types it on arrival (nodes/node_roles.cpp).

#include "runtime/atoms.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tree.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace drover {

using api_actor = caf::typed_actor<
    caf::replies_to<submit_atom, submit_request>::with<job_record>,
    caf::replies_to<submit_atom,
                    std::vector<submit_request>>::with<std::vector<job_record>>,
    caf::replies_to<cancel_atom, std::string>::with<ok_atom>,
    caf::replies_to<cancel_atom, std::string, std::string>::with<ok_atom>,
    caf::replies_to<redrive_atom, std::string>::with<ok_atom>,
    caf::replies_to<redrive_atom, all_atom>::with<uint32_t>,
    caf::replies_to<purge_atom, std::string>::with<ok_atom>,
    caf::replies_to<purge_atom, all_atom>::with<uint32_t>,
    caf::replies_to<stats_atom>::with<queue_stats>,
    caf::replies_to<partitions_atom>::with<std::string, int32_t>,
    caf::replies_to<flow_atom, std::string, std::string,
                    std::string>::with<std::string>,
    caf::replies_to<flow_atom, uint32_t>::with<std::string>,
    caf::replies_to<ping_atom>::with<ok_atom>,
    caf::replies_to<get_atom, std::string>::with<job_record>,
    caf::replies_to<events_atom, std::string>::with<std::vector<job_event>>,
    caf::replies_to<events_atom, std::string, uint64_t,
                    uint32_t>::with<std::vector<job_event>>,
    caf::replies_to<list_atom, job_query>::with<std::vector<job_record>>,
    caf::replies_to<subscribe_atom, std::string, caf::actor>::with<ok_atom>,
    caf::replies_to<subscribe_atom, std::string, caf::actor,
                    changed_atom>::with<ok_atom>,
    caf::reacts_to<unsubscribe_atom, std::string, caf::actor>,
    caf::replies_to<describe_atom>::with<tree_node>,
    caf::replies_to<nodes_atom>::with<std::string>>;

} // namespace drover
