#pragma once

// The client protocol (docs/client.md): what a program outside the node
// sends over CAF to a coordinator's admin port, where the client door
// (gateway/client_door.hpp) answers. Every request carries the client's API
// key, checked on every request against the same keys, tenants, scopes and
// rate limits as the HTTP API (gateway/auth.hpp); "" is the key of a node
// in development mode (no keys configured).
//
//   (client_atom, key, submit_atom, submit_request)    -> job_record
//   (client_atom, key, submit_atom, vector<submit_request>)
//                                                      -> vector<job_record>
//       one record per item, in order; a refused item has an empty job_id
//       and its error (as the queue answers batches)
//   (client_atom, key, get_atom, job_id)               -> job_record
//   (client_atom, key, events_atom, job_id)            -> vector<job_event>
//   (client_atom, key, events_atom, job_id, after, limit)
//                                                      -> vector<job_event>
//       the events after sequence `after`, at most `limit` (1 to 10,000);
//       a door older than this request answers unexpected_message
//   (client_atom, key, cancel_atom, job_id, reason)    -> job_record (after)
//   (client_atom, key, list_atom, job_query)           -> vector<job_record>
//   (client_atom, key, redrive_atom, job_id)           -> job_record (after)
//   (client_atom, key, purge_atom, job_id)             -> job_record (after)
//   (client_atom, key, purge_atom, all_atom)           -> uint32_t (admin)
//   (client_atom, key, redrive_atom, all_atom)         -> uint32_t (admin)
//   (client_atom, key, subscribe_atom, job_id, subscriber) -> job_record
//       the job now; the subscriber then gets (progress_atom,
//       progress_update) while it runs, (changed_atom, job_id) when its
//       history grew, and (final_atom, job_record) once it is terminal
//   (client_atom, key, unsubscribe_atom, job_id, subscriber)
//   (client_atom, key, stats_atom)                     -> queue_stats (admin)
//   (client_atom, key, describe_atom)                  -> tree_node (admin)
//   (client_atom, key, nodes_atom)                     -> string (admin)
//   (client_atom, key, partitions_atom)                -> (owned, count,
//       tenant): the partitions this coordinator owns ("0,5,17"), the
//       database's count and the tenant the key fixes ("" in development
//       mode: the request's own) — what a client needs to send a write to
//       its partition's owner among coordinators sharing a database
//
// Scopes as over HTTP: submit (exec jobs also need exec), read, admin;
// cancel, retry and purge of one job need submit. Another tenant's job is
// not_found. Errors: errc::unauthenticated (no or unknown key), forbidden
// (a scope is missing, or a request names another tenant), rate_limited,
// and the node's own (not_found, invalid_request, conflict, unavailable).

#include "runtime/atoms.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tree.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace drover {

using client_atom = caf::atom_constant<caf::atom("client")>;

/// The door as coordinators before the partitions request published it: a
/// client still connects to those (and routes nothing).
using client_door_base = caf::typed_actor<
    caf::replies_to<client_atom, std::string, submit_atom,
                    submit_request>::with<job_record>,
    caf::replies_to<client_atom, std::string, submit_atom,
                    std::vector<submit_request>>::with<std::vector<job_record>>,
    caf::replies_to<client_atom, std::string, get_atom,
                    std::string>::with<job_record>,
    caf::replies_to<client_atom, std::string, events_atom,
                    std::string>::with<std::vector<job_event>>,
    caf::replies_to<client_atom, std::string, cancel_atom, std::string,
                    std::string>::with<job_record>,
    caf::replies_to<client_atom, std::string, list_atom,
                    job_query>::with<std::vector<job_record>>,
    caf::replies_to<client_atom, std::string, redrive_atom,
                    std::string>::with<job_record>,
    caf::replies_to<client_atom, std::string, purge_atom,
                    std::string>::with<job_record>,
    caf::replies_to<client_atom, std::string, purge_atom,
                    all_atom>::with<uint32_t>,
    caf::replies_to<client_atom, std::string, redrive_atom,
                    all_atom>::with<uint32_t>,
    caf::replies_to<client_atom, std::string, subscribe_atom, std::string,
                    caf::actor>::with<job_record>,
    caf::reacts_to<client_atom, std::string, unsubscribe_atom, std::string,
                   caf::actor>,
    caf::replies_to<client_atom, std::string, stats_atom>::with<queue_stats>,
    caf::replies_to<client_atom, std::string, describe_atom>::with<tree_node>,
    caf::replies_to<client_atom, std::string, nodes_atom>::with<std::string>>;

/// The door now: the partitions request (routing among coordinators
/// sharing a database) and a page of a job's log. A client takes a door
/// with client_door_base's interface and asks an older one only for what
/// it has (a request it lacks answers unexpected_message).
using client_door_actor = client_door_base::extend<
    caf::replies_to<client_atom, std::string,
                    partitions_atom>::with<std::string, int32_t, std::string>,
    caf::replies_to<client_atom, std::string, events_atom, std::string,
                    uint64_t, uint32_t>::with<std::vector<job_event>>>;

/// Connects to the client door at host:port, giving up after `timeout`:
/// the middleman's connect request with a deadline (middleman::remote_actor
/// waits forever on a node that accepts and then says nothing, a SIGSTOPped
/// one), the published interface checked before the handle is typed, as
/// remote_actor checks it. errc::unavailable (no answer, refused, nothing
/// published) or errc::forbidden (another protocol on that port).
/// `tls`: through CAF's OpenSSL module (the actor system loaded it,
/// runtime/tls.hpp), for an admin port of a node with TLS.
caf::expected<client_door_actor>
connect_client_door(caf::actor_system& sys, const std::string& host,
                    uint16_t port, std::chrono::milliseconds timeout,
                    bool tls = false);

} // namespace drover
