#pragma once

// The store: durable truth about jobs. Every state transition reaches it as
// an event; it validates each event against the job's current state
// (runtime/job_state: sequence, legal transition, fencing), appends it to
// the job's history and updates the job's current record. Implementations:
// memory (this file's spawn_memory_store; for experiments and unit tests)
// and PostgreSQL (durable; drops in behind the same interface).
//
// Protocol:
//   (submit_atom, job_event)                       -> job_record
//       Creates a job from its `submitted` event (sequence is assigned by
//       the store). If the spec carries an idempotency key already used by
//       the same tenant: the same spec returns the existing job's record and
//       creates nothing; a different spec fails with `errc::conflict`.
//   (submit_atom, std::vector<job_event>)          -> std::vector<job_record>
//       Creates several jobs in one durable commit (the PostgreSQL store:
//       one transaction, whatever its group-commit batch size). One answer
//       per event, in order: the job's record (for an idempotent duplicate,
//       the existing job's), or a record with an empty job_id whose `error`
//       says why that item was refused (code = the errc name, e.g.
//       "conflict"). An error for the whole request (unavailable) means
//       nothing was created.
//   (append_atom, std::vector<job_event>)          -> ok_atom
//       Appends events (sequence 0 = assigned by the store). The batch is
//       all-or-nothing: one illegal event rejects the whole batch with the
//       state machine's error, and nothing is written.
//   (get_atom, job_id)                             -> job_record
//   (events_atom, job_id)                          -> std::vector<job_event>
//       The job's full history in sequence order.
//   (events_atom, job_id, after, limit)            -> std::vector<job_event>
//       Its events with a sequence above `after`, in order, at most `limit`
//       (within [1, 10000], else invalid_request); none is an empty list,
//       whether or not the job exists (a stream or wait reading on).
//   (list_atom, job_query)                         -> std::vector<job_record>
//       Jobs matching the query, in job-id (= submission) order, paged by
//       `after` and `limit`.
//   (recover_atom, int32_t partition, after, limit) -> std::vector<job_record>
//       The jobs of `partition` (partition_of_id, runtime/partition.hpp;
//       within [0, max_partitions), else errc::invalid_request) that are
//       not terminal, in job-id order after the job id `after` ("" = from
//       the start), at most `limit` (within [1, 100000], else
//       errc::invalid_request): the pages a queue rebuilds its ready
//       queues, timers and running attempts from, one partition it owns
//       after another. Any partition may be read, owned or not; nothing
//       read is cached. The PostgreSQL store reads it from an index of the
//       partition's live jobs (schema version 7).
//   (webhooks_atom, after, limit)                  -> std::vector<job_record>
//       Jobs that still owe a webhook (record.webhook_pending_sequence !=
//       0: terminal, with a callback URL, no final delivery outcome
//       recorded), in job-id order after the job id `after` ("" = from
//       the start), at most `limit` (within [1, 10000], else
//       errc::invalid_request): what a webhook dispatcher resumes from.
//       A store with partitions (the PostgreSQL store with a fence) lists
//       the jobs of the partitions it writes only.
//   (partitions_atom, partitions, epochs)          -> ok_atom
//       The partitions this store writes from now on, at the epochs of
//       their leases (partitions strictly ascending within [0,
//       max_partitions), epochs parallel and not negative, else
//       errc::invalid_request); the PostgreSQL store's write fence becomes
//       that set (same instance). Every write received before this
//       message is written (or fails) under the previous fence; every
//       write received after it is checked against the new one: a job of
//       a partition not in it is refused with errc::not_owner, and nothing
//       of it is written (the other items of a batch submit are). The
//       answer comes once nothing received before is still being written
//       (in flight, waiting to be, or being re-checked after a lost
//       connection): from then on nothing more is written for the
//       partitions dropped, and their leases may be released. Records of
//       jobs of partitions the store does not write are never cached:
//       reading such a job always reads PostgreSQL. Retention, fenced like
//       job writes, purges only in the partitions written. A store
//       spawned without a fence, and the memory store, have no partitions:
//       errc::invalid_request.
//   (ping_atom)                                    -> ok_atom
//       Answers once the store can write: the PostgreSQL store refuses with
//       `errc::unavailable` while it reconnects and otherwise does a round
//       trip on its write connection. What `/readyz` asks.
//   (nodes_atom)                                   -> std::string
//       The coordinators of the database as a JSON array
//       (pg::members_json: active and standbys, with their heartbeats);
//       the memory store has none to show: errc::not_found.
//   (control_atom, at_ms, kind, key, state, detail) -> ok_atom
//       Appends one state change of a rate limiter or circuit breaker to
//       the control log (runtime/flow_control.hpp; never in a job's
//       history). The PostgreSQL store fences it by the lease of the key's
//       partition and records that epoch: a deposed coordinator's change,
//       or a setting ("configured") of a partition the store does not
//       write, is refused (errc::not_owner); a state change of such a key
//       is fenced by a partition the store writes (pg::session::
//       append_control).
//   (control_atom, kind)                           -> vector<string>
//       The last state of every key of `kind` ("breaker", "rate_limit") in
//       the control log and, apart from it, its last run-time setting
//       (state "configured", the item in the detail), as (key, state,
//       Unix ms, detail) quadruples, flattened.
//   (control_atom, get_atom)                       -> int64_t
//       The control log's last sequence (0: empty): a poll for settings
//       made elsewhere reads the log only when it moved.
//   (control_atom, follow_atom, after)             -> vector<string>
//       What a coordinator sharing the partitions follows: the control
//       log's run-time settings (state "configured", of either kind) and
//       breaker openings (kind "breaker", state "open") after sequence
//       `after`, whoever wrote them, in sequence order, at most
//       max_follow_read: (sequence, kind, key, state, Unix ms, detail)
//       sextuples, flattened. A range of the log's primary key: its cost
//       grows with what was written since `after`, not with the log.
//   (control_atom, configured_atom)                -> vector<string>
//       The last run-time setting of every key (either kind) over the
//       whole log, as the sextuples above, one per key: the net under the
//       incremental reads (a whole-log scan: every few minutes).
//   (control_atom, limit)                          -> std::string
//       The newest `limit` (within [1, 1000]) control-log entries, newest
//       first, as a JSON array of {"sequence", "at", "kind", "key",
//       "state", "detail", "partition", "epoch"}.
//   (permit_atom, key, limit, most_new, job_ids)  -> vector<string>
//       Permits of a job type's concurrency key (concurrency_slots::key_of:
//       the type, or the type, a NUL and the tenant) for coordinators
//       sharing the partitions: grants permits to the first of `job_ids`
//       (waiting jobs, in the order they wait; at most 10,000), at most
//       `most_new`, while fewer than `limit` (within [1, 1000000]) count
//       across all coordinators, and answers the ids that hold one now
//       (granted, or held already). None while another coordinator is
//       granting the key. A permit
//       counts while its job runs, or, not started since the grant, while
//       its partition's lease is at the epoch of the grant
//       (runtime/pg_permits.cpp). Jobs of partitions the store does not
//       write get none. The memory store, and a PostgreSQL store without a
//       fence, have no permits: errc::invalid_request.
// Reads answer with committed state only: a record is never shown in a
// state whose events are not durable yet.
// Unknown job ids fail with `errc::not_found`.

#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/events_page.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/partition.hpp"
#include "runtime/type_ids.hpp"

#include <caf/error.hpp>
#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <string>
#include <vector>

namespace drover {

using store_actor = caf::typed_actor<
    caf::replies_to<submit_atom, job_event>::with<job_record>,
    caf::replies_to<submit_atom,
                    std::vector<job_event>>::with<std::vector<job_record>>,
    caf::replies_to<append_atom, std::vector<job_event>>::with<ok_atom>,
    caf::replies_to<get_atom, std::string>::with<job_record>,
    caf::replies_to<events_atom, std::string>::with<std::vector<job_event>>,
    caf::replies_to<events_atom, std::string, uint64_t,
                    uint32_t>::with<std::vector<job_event>>,
    caf::replies_to<list_atom, job_query>::with<std::vector<job_record>>,
    caf::replies_to<recover_atom, int32_t, std::string,
                    uint32_t>::with<std::vector<job_record>>,
    caf::replies_to<ping_atom>::with<ok_atom>,
    caf::replies_to<partitions_atom, std::vector<int32_t>,
                    std::vector<int64_t>>::with<ok_atom>,
    caf::replies_to<webhooks_atom, std::string,
                    uint32_t>::with<std::vector<job_record>>,
    caf::replies_to<nodes_atom>::with<std::string>,
    caf::replies_to<control_atom, int64_t, std::string, std::string,
                    std::string, std::string>::with<ok_atom>,
    caf::replies_to<control_atom, uint32_t>::with<std::string>,
    caf::replies_to<control_atom, std::string>::with<std::vector<std::string>>,
    caf::replies_to<control_atom, get_atom>::with<int64_t>,
    caf::replies_to<control_atom, follow_atom,
                    int64_t>::with<std::vector<std::string>>,
    caf::replies_to<control_atom,
                    configured_atom>::with<std::vector<std::string>>,
    caf::replies_to<permit_atom, std::string, uint32_t, uint32_t,
                    std::vector<std::string>>::with<std::vector<std::string>>>;

/// The most entries one (control_atom, follow_atom, after) answers.
constexpr uint32_t max_follow_read = 1000;

/// The largest recovery page a store serves.
constexpr uint32_t max_recovery_page = 100000;

/// A recovery page's `limit` as both stores check it.
inline caf::error check_recovery_limit(uint32_t limit) {
  return check_page_limit(limit, max_recovery_page, "recovery page");
}

/// A recovery page's `partition` as both stores check it: within [0,
/// max_partitions), else errc::invalid_request.
inline caf::error check_recovery_partition(int32_t partition) {
  if (partition < 0 || partition >= max_partitions)
    return make_error(errc::invalid_request,
                      "partition " + std::to_string(partition)
                          + " is outside [0, " + std::to_string(max_partitions)
                          + ")");
  return caf::none;
}

/// An in-memory store: every guarantee except durability.
store_actor spawn_memory_store(caf::actor_system& sys);

} // namespace drover
