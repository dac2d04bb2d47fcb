#pragma once

// The queue actor's state and the functions its behaviour (actors/queue.cpp)
// is made of, spread over actors/queue_dispatch.cpp (ready jobs to idle
// workers), actors/queue_dispatch_workers.cpp (workers and their nodes'
// pools), actors/queue_flow.cpp (concurrency keys, rate limits
// and breakers), actors/queue_control_log.cpp (their control log: state
// changes, run-time settings, following other coordinators),
// actors/queue_lifecycle.cpp (timers, recovery, settling
// attempts, adoption) and actors/queue_admin.cpp (cancel, the dead-letter
// queue, figures). Internal: the contract is actors/queue.hpp.

#include "actors/queue.hpp"

#include "actors/detail/queue_entries.hpp"
#include "actors/detail/ready_queue.hpp"
#include "actors/job_supervisor.hpp"
#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/resources.hpp"
#include "runtime/retry.hpp"
#include "runtime/scaling.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace drover::queue_detail {

using due_atom = caf::atom_constant<caf::atom("q_due")>;
using reconcile_atom = caf::atom_constant<caf::atom("q_recon")>;
using fence_atom = caf::atom_constant<caf::atom("q_fence")>;
using flow_timer_atom = caf::atom_constant<caf::atom("q_flow")>;
using flow_load_atom = caf::atom_constant<caf::atom("q_fload")>;
using settings_atom = caf::atom_constant<caf::atom("q_setng")>;

// Store requests carry no timeout: the store answers every request (its
// I/O has its own deadline) and the queue monitors the store for the one
// case that leaves requests unanswered, the store's death (see
// actors/detail/job_supervisor_state.hpp). One clock entry per request
// was the largest part of CAF's clock-thread cost in a drain.
constexpr auto store_timeout = caf::infinite;

/// Backoff of reconcile() and of recovery while the store can't answer.
const backoff_schedule reconcile_backoff{
    std::chrono::milliseconds{100}, std::chrono::milliseconds{5000}, 2.0, 0.5};

struct queue_state {
  queue_deps deps;
  queue_options opts;
  std::map<std::string, class_queues> classes;
  std::set<delayed_entry> delayed;
  /// Due time the timer is armed for (0 = none) and its guard.
  int64_t armed_due_ms = 0;
  uint64_t timer_generation = 0;
  std::unordered_map<std::string, running_entry> running;
  /// Job supervisor address -> job id, to resolve a crashed one.
  std::map<caf::actor_addr, std::string> supervisor_jobs;
  struct worker_info {
    std::string resource_class;
    std::string worker_id;
    /// Job types it runs, sorted; empty = every type.
    std::vector<std::string> types;
    /// Its node (node_of).
    std::string node;

    /// Whether it can run a job of class `cls` and type `type`.
    bool runs(const std::string& cls, const std::string& type) const {
      return resource_class == cls
             && (types.empty()
                 || std::binary_search(types.begin(), types.end(), type));
    }
  };
  /// Attempts remote workers ran when this coordinator started: adopted
  /// when their worker comes back (adopt_atom), settled as lost after
  /// opts.adopt_grace.
  std::map<std::string, job_record> awaiting_adoption;
  /// When each of them is given up (flow_now's monotonic ms, so that a step
  /// of the wall clock neither cuts a grace short nor stretches it; 0 or
  /// less: when its recovery ends, after the adoption grace (0) or after
  /// -value ms).
  std::map<std::string, int64_t> adopt_due;
  /// Cancels requested (`cancel_requested`, being written or written) of
  /// attempts without a job supervisor here, and their reasons, until the
  /// attempt is adopted or settled: an adoption hands the cancel to its
  /// supervisor (which may have read the job before the write), and a
  /// settle ends the job `cancelled` whatever record it holds (one a
  /// recovery page read before the write) (actors/queue_admin.cpp,
  /// request_cancel).
  std::unordered_map<std::string, std::string> cancels_requested;
  /// A `cancel_requested` write in flight per job, and the cancels waiting
  /// for it: a cancel asked meanwhile joins it (one write, one outcome).
  std::unordered_map<std::string,
                     std::vector<caf::typed_response_promise<ok_atom>>>
      cancel_writes;
  /// Jobs whose `cancelled` write (a waiting job's cancel) is in flight,
  /// counted: nothing queues them meanwhile (push_ready, push_delayed:
  /// not a recovery page, a reconcile or a settle's retry; an attempt
  /// dispatched before the write commits would run on for a cancelled
  /// job); a write that fails reconciles the job.
  std::unordered_map<std::string, uint32_t> cancelling;
  bool recovered = false;
  /// The run-time settings and breaker states were read back (load_flow):
  /// recovery starts after, and settings and unknown keys wait for it.
  bool flow_loaded = false;
  /// The run-time setting applied here of each key ("<kind>\n<key>" ->
  /// its spec), from the control log or a PUT here: what a poll of the log
  /// (queue_options::settings_poll) compares with.
  std::map<std::string, std::string> applied_settings;
  /// Settings made here (set_flow), numbered: a poll of the log sent before
  /// one (its answer may have been read before the write) leaves that key
  /// alone ("<kind>\n<key>" -> the number of its last setting here).
  uint64_t settings_made = 0;
  std::map<std::string, uint64_t> made_here;
  /// The control log's sequence up to which its settings and breaker
  /// openings were followed (follow_settings), or were there before they
  /// were read back (load_flow); -1: not read (a queue without
  /// settings_poll).
  int64_t follow_after = -1;
  /// follow_after at each of the last follow_window polls that read the
  /// log, oldest first: a read starts after the oldest, so an entry whose
  /// COMMIT came up to that many polls after a later entry was read is
  /// still followed, however many sequences were taken meanwhile.
  std::deque<int64_t> follow_marks;
  /// The openings read so far after the oldest mark: read again, they are
  /// not followed again.
  std::set<int64_t> openings_read;
  /// The control log's last sequence at the last poll, and the polls since
  /// it last moved: the log is read while it moves and for follow_window
  /// polls after.
  int64_t follow_last = -1;
  uint32_t follow_quiet = 0;
  /// The sequence of the run-time setting applied here of each key
  /// ("<kind>\n<key>"; absent: read back at start, or set here): an entry
  /// with a lower one is older and never undoes it.
  std::map<std::string, int64_t> applied_sequence;
  /// Polls until the next read of every key's last setting over the whole
  /// log (the net under the incremental reads).
  uint32_t polls_to_full_read = 0;
  /// Breaker openings whose control-log write failed, written again at the
  /// next settings poll while their cooldown is not over (write_change);
  /// at most 1,000.
  std::vector<flow_change> unrecorded_openings;
  /// A dispatch runs; classes to dispatch once it is through.
  bool dispatching = false;
  std::set<std::string> dispatch_pending;
  /// Recovery reads the store's live jobs a partition at a time, a page at
  /// a time: the partitions still to read (the first is being read), the
  /// last job id of its pages queued so far ("" = none yet), where a retry
  /// resumes, and whether a read is on its way.
  std::deque<int32_t> to_recover;
  std::string recovered_up_to;
  bool recover_in_flight = false;
  /// Moves on when the partitions to recover change: a page read before
  /// is not continued (nor its cursor used for another partition).
  uint64_t recover_generation = 0;
  /// While a page is queued (its jobs are not "entered early").
  bool queuing_page = false;
  /// Jobs that entered the queue by another way (a submit, a DLQ retry)
  /// while recovery still ran: a later page may hold them too (the store
  /// committed them before it read the page) and skips them.
  std::unordered_set<std::string> entered_early;
  /// Self-fencing (queue_options::may_dispatch): a re-check is armed, and
  /// whether dispatch is held (logged once per hold).
  bool fence_check_armed = false;
  bool fenced = false;
  /// Counts of the recovery so far, logged when it ends.
  size_t recovered_jobs = 0;
  size_t recovered_interrupted = 0;
  /// Adoption requests that came before recovery finished.
  std::vector<std::function<void()>> after_recovery;
  /// Adoption requests for partitions not owned (opts.adopt_wait), by
  /// partition: run again once it is taken (after its recovery), refused
  /// when `due` (flow_now's ms) passes first.
  struct waiting_adoption {
    int64_t due = 0;
    std::function<void()> run;
    std::function<void()> refuse;
  };
  std::map<int32_t, std::vector<waiting_adoption>> adopt_waiting;
  /// The adoption timer (adopt_atom), one for adopt_due and
  /// adopt_waiting together: when the armed one fires (flow_now's ms; 0 =
  /// none armed) and its generation (a firing of an older one is not it).
  int64_t adopt_timer_at = 0;
  uint64_t adopt_timer_generation = 0;
  /// Workers we monitor.
  std::map<caf::actor_addr, worker_info> workers;
  queue_stats stats;
  /// Per (resource class, job type): attempts dispatched and jobs
  /// completed since the queue started, and the scaling signals
  /// (runtime/scaling.hpp).
  struct type_signals {
    uint64_t dispatched = 0;
    uint64_t completed = 0;
    decaying_rate arrivals;
    decaying_rate completions;
    run_time_mean run_time;
  };
  std::map<std::pair<std::string, std::string>, type_signals> type_counts;
  /// Entries of `delayed` per (resource class, job type): kept as they
  /// come and go, so that the figures need not walk the timer's set.
  std::map<std::pair<std::string, std::string>, uint64_t> delayed_by_type;
  std::mt19937_64 rng;
  job_id_generator ids{1};
  partition_picker partitions;
  /// What may be submitted (runtime/admission.hpp): counts every waiting
  /// entry and every submission in flight to the store.
  admission_control admission;
  /// Concurrency limits: slots per key, and the ready jobs parked behind a
  /// key without a free slot (they still count as waiting).
  concurrency_slots concurrency;
  std::unordered_map<std::string, std::deque<parked_entry>> parked;
  /// Permits of the types' keys across coordinators, by key, and when a
  /// failure to get them was last logged (Unix ms).
  std::unordered_map<std::string, permit_line> permits;
  int64_t permit_failure_logged_ms = 0;
  /// The last armed ask's generation (permit_line::armed), queue-wide: a
  /// line dropped and made again never takes an older ask for its own.
  uint64_t permit_generation = 0;
  /// Changes with the partitions (forget_grants): a permit a ready entry
  /// keeps (ready_entry::permits) of an older generation may have lapsed.
  uint32_t grants_generation = 1;
  /// The worker nodes' resource pools and what attempts hold of them, and
  /// the text each node last declared.
  resource_ledger resources;
  std::map<std::string, std::string> declared_pools;
  /// What each worker holds of its node's pools, from the lease until the
  /// worker lets go of the attempt (it offers itself again, or dies): an
  /// attempt the queue gave up on may still run there.
  struct pool_hold {
    std::string node;
    shape_ref shape;
  };
  std::map<caf::actor_addr, pool_hold> pool_holds;
  /// Rate limiters and circuit breakers, and the ready jobs parked behind
  /// one of them (by flow_wait::gate; they still count as waiting). The
  /// flow timer is armed for the earliest time a gate may open (0 = none).
  flow_control flow;
  std::map<std::string, std::deque<parked_entry>> flow_parked;
  int64_t flow_armed_ms = 0;
  uint64_t flow_generation = 0;
  /// When a refusal was last logged (Unix ms).
  int64_t refusal_logged_ms = 0;
  /// What a local worker runs (worker_info::types): every type, unless
  /// the handlers declare remote types; then the types with a function.
  std::vector<std::string> local_types;
  /// Backoff of the recovery retries.
  backoff_counter recover_backoff{reconcile_backoff};

  static inline const char* name = "drover.queue";
};

/// The queue's own interface: the queue protocol (actors/queue.hpp) plus
/// what its job supervisors (retry_atom, finished_atom; they hold it as a
/// supervisor_queue_actor, actors/job_supervisor.hpp) and its own timers
/// send it. Only spawn_queue sees it; everyone else holds a queue_actor.
using queue_impl_actor = queue_actor::extend<
    caf::reacts_to<retry_atom, job_record>,
    caf::reacts_to<finished_atom, std::string, job_status, std::string>,
    caf::reacts_to<recover_atom>, caf::reacts_to<flow_load_atom>,
    caf::reacts_to<settings_atom>,
    caf::reacts_to<reconcile_atom, std::string, int64_t, std::string,
                   std::string>,
    caf::reacts_to<due_atom, uint64_t>,
    caf::reacts_to<flow_timer_atom, uint64_t>, caf::reacts_to<fence_atom>,
    caf::reacts_to<permit_atom, std::string, uint64_t>>;

using self_ptr = queue_impl_actor::stateful_pointer<queue_state>;

inline int64_t now_ms(self_ptr self) {
  return self->state.opts.clock_ms();
}

inline int64_t aging_ms(self_ptr self) {
  return self->state.opts.aging_interval.count();
}

inline size_t prio_index(priority p) {
  auto i = static_cast<size_t>(p);
  return i < 3 ? i : 2;
}

inline void log_failure(const std::string& what, const caf::error& err,
                        std::string_view job_id = {},
                        log::level lv = log::level::error) {
  log::write(lv, "queue", job_id, what, {{"error", describe(err)}});
}

/// A jitter draw from the queue's seeded generator.
inline double draw(self_ptr self) {
  std::uniform_real_distribution<double> u{0.0, 1.0};
  return u(self->state.rng);
}

/// A dead-letter-queue operation on one job (redrive_one, purge_one).
using dlq_op
    = void (*)(self_ptr, const std::string&, std::function<void(caf::error)>);

// -- queue_dispatch.cpp
// --------------------------------------------------------
double weight_of(const queue_state& st, uint32_t t);
void note_entry(queue_state& st, const std::string& job_id);
uint64_t extra_bytes(const own_key_ref& own);
void left_queue(queue_state& st, uint32_t tenant, const std::string& job_id,
                const own_key_ref& own);
void push_ready(self_ptr self, std::string job_id, priority prio,
                const std::string& cls, const std::string& type,
                uint32_t tenant, uint32_t flow, const shape_ref& shape,
                own_key_ref own, int64_t ready_since_ms = 0);
own_key_ref own_key_for(const job_spec& spec);
uint32_t flow_of(queue_state& st, const job_spec& spec);
std::optional<flow_wait> flow_gate(self_ptr self, ready_entry& e);
void keep_tokens_before(self_ptr self, ready_entry& e, const flow_wait& wait);
slot_keys slot_keys_of(const queue_state& st, const std::string& type,
                       const ready_entry& entry);
slot_keys slot_keys_of(const queue_state& st, const job_spec& spec);
shape_ref shape_of(queue_state& st, const job_spec& spec);
void push_ready(self_ptr self, const job_record& rec,
                int64_t ready_since_ms = 0);
bool pop_next(const resource_ledger& pools, class_queues& q,
              const std::vector<std::string>& types, const std::string& node,
              ready_entry& out, size_t& prio_out, const std::string*& lane_out);
void back_to_ready(queue_state& st, parked_entry pe,
                   std::vector<std::string>& classes);
void wake_parked(self_ptr self, const std::string& key);
caf::expected<admission_control::ticket>
admit(self_ptr self, const job_spec& spec, int32_t partition);
caf::expected<shape_ref> hold_shape(queue_state& st, const job_spec& spec);
queued_job_actor start_supervisor(self_ptr self, const std::string& job_id,
                                  const worker_actor& worker,
                                  const std::string& worker_id,
                                  uint32_t adopt_attempt);
bool may_dispatch(self_ptr self);
void dispatch(self_ptr self, const std::string& cls);
void dispatch_class(self_ptr self, const std::string& cls);

// -- queue_dispatch_workers.cpp
// ---------------------------------------------------------------

std::string unserved_reason(const queue_state& st, const std::string& cls,
                            const std::string& type, const shape_ref& shape);
bool served(const queue_state& st, const std::string& cls,
            const std::string& type, const shape_ref& shape = nullptr);
void declare_pools(self_ptr self, const std::string& node,
                   const std::string& text);
void worker_ready(self_ptr self, const std::string& cls,
                  const std::string& worker_id, worker_actor worker,
                  std::vector<std::string> types);
bool remote_slot_ready(self_ptr self, const std::string& cls,
                       const std::string& worker_id, const worker_actor& worker,
                       std::vector<std::string> types,
                       const std::string& pools);

// -- queue_flow.cpp
// ------------------------------------------------------------
void release_slot(self_ptr self, const std::string& key);
void release_slots(self_ptr self, const slot_keys& keys,
                   size_t count = slot_keys::all);
bool take_slots(self_ptr self, parked_entry& pe, const slot_keys& keys);
void hold_pools(self_ptr self, const worker_actor& worker, std::string node,
                shape_ref shape, bool acquired = false);
void let_go_pools(self_ptr self, const caf::actor_addr& worker);
void release_pools(self_ptr self, const std::string& node,
                   const shape_ref& shape);
/// The queue's monotonic clock (ms): flow control and adoption graces.
int64_t flow_now(self_ptr self);
void arm_flow_timer(self_ptr self, int64_t at_ms);
bool runnable(const queue_state& st, const parked_entry& pe);
void rearm_flow(self_ptr self);

// -- queue_control_log.cpp
// ---------------------------------------------------
/// Sends the limiters' and breakers' state changes to the control log.
void record_flow_changes(self_ptr self);
/// Creates or changes a rate limit or breaker at run time (the admin
/// API): validated as the configuration's item, recorded in the control
/// log ("configured"), then applied; answered with flow_json.
caf::result<std::string> set_flow(self_ptr self, const std::string& kind,
                                  const std::string& key,
                                  const std::string& spec);
/// At start, before recovery: the run-time settings and the breakers'
/// last states from the control log (retried until read), then recovery.
void load_flow(self_ptr self);
/// Applies the run-time settings made at other coordinators (read from
/// the control log every queue_options::settings_poll), then reads again.
void follow_settings(self_ptr self);

// -- queue_permits.cpp
// ---------------------------------------------------------
/// Whether `key` (a slot key) needs a permit of the store before its slot.
bool needs_permit(const queue_state& st, const std::string& key);
/// Whether `e` holds a permit of `key` (its keys_of()[i]) it has not
/// started under: granted and not taken yet, or taken and given back.
bool holds_permit(const queue_state& st, const std::string& key,
                  const ready_entry& e, size_t i);
/// `e` leaves `key`'s line (keys_of()[i]) for a gate: a permit it was
/// granted goes with it.
void keep_permit(queue_state& st, const std::string& key, ready_entry& e,
                 size_t i);
/// Takes a slot of `key` (keys_of()[i]) for `e`: the permit it holds first
/// when the key needs one (none: asks, answers false).
bool take_slot(self_ptr self, const std::string& key, uint32_t limit,
               ready_entry& e, size_t i);
/// `pe` is parked behind `key`: its (class, type) is one the key's asks
/// count workers for.
void note_parked(queue_state& st, const std::string& key,
                 const parked_entry& pe);
/// Jobs wait behind `key` without a permit: asks (after the refused delay).
void want_permits(self_ptr self, const std::string& key);
/// One of this queue's attempts of `key` ended (before its jobs are woken).
void slot_freed(self_ptr self, const std::string& key);
/// The armed ask of `key` (permit_atom) of `generation` fired: asks for
/// its waiting jobs unless another ask was armed since.
void ask_permits(self_ptr self, const std::string& key, uint64_t generation);
/// Drops `key`'s line once nothing waits, is granted or asked.
void forget_idle(self_ptr self, const std::string& key);
/// The partitions changed: grants are asked again (they may have lapsed).
void forget_grants(self_ptr self);
void left_gate(self_ptr self, ready_entry& e);
void wake_gate(self_ptr self, const std::string& gate,
               std::vector<std::string>& classes);
void park_at_gate(queue_state& st, const std::string& gate, parked_entry pe);
void on_flow_timer(self_ptr self);
/// The limiters, breakers and pools as (flow_atom) answers them.
std::string flow_json(self_ptr self);
/// What holds a queued job of `spec` back (concurrency, breaker, rate
/// limit), for its status; "" = none of them.
std::string hold_reason(self_ptr self, const job_spec& spec);
/// flow_control::check, but a key unknown while the settings are being
/// read back is errc::unavailable (it may be one set at run time).
caf::error check_flow_keys(self_ptr self, const job_spec& spec);
void flow_outcome(self_ptr self, const running_entry& entry, bool success,
                  const std::string& code);

// -- queue_lifecycle.cpp
// -------------------------------------------------------
void arm_timer(self_ptr self);
void push_delayed(self_ptr self, delayed_entry entry);
void erase_delayed(queue_state& st, std::set<delayed_entry>::iterator i);
void on_due(self_ptr self);
delayed_entry delayed_of(self_ptr self, const job_record& rec, int64_t due_ms);
void enqueue(self_ptr self, const job_record& rec);
bool remove_waiting(self_ptr self, const std::string& job_id);
void explain_refusal(self_ptr self, const std::string& job_id,
                     std::string needs, caf::error err,
                     std::function<void(caf::error)> done);
/// Reads `job_id` and hands it to the publisher as final (if
/// `terminal_only`, only a terminal one).
void publish_final(self_ptr self, const std::string& job_id,
                   bool terminal_only);
void settle_interrupted(self_ptr self, const job_record& rec, error_info err,
                        uint32_t failures = 0);
/// Whether recovery has yet to read `job_id` (its partition is still to be
/// read, or is being read and its pages have not reached the job).
bool still_to_recover(const queue_state& st, const std::string& job_id);
void reconcile(self_ptr self, const std::string& job_id, uint32_t failures,
               error_info why);
void reconcile_later(self_ptr self, const std::string& job_id,
                     uint32_t failures, error_info why);
void resolve_orphan(self_ptr self, const std::string& job_id,
                    running_entry entry, const caf::error& reason);
void recover_job(self_ptr self, job_record& rec);
void end_recovery(self_ptr self);
void recover(self_ptr self);
void forget_ready(self_ptr self, const std::string& type, ready_entry& e);

// -- queue_partitions.cpp
// ------------------------------------------------------
void own_partitions(self_ptr self, std::vector<int32_t> owned);
bool owns(const queue_state& st, const std::string& job_id);
caf::error check_owned(const queue_state& st, int32_t partition);
/// Sets the rate limits' share to the partitions owned of all of them
/// (runtime/flow_control.hpp: sharing coordinators together keep each
/// rate).
void share_rate_limits(self_ptr self);
/// Parks an adoption of a job in a partition not owned (opts.adopt_wait):
/// false if it must be refused now.
bool wait_for_partition(self_ptr self, const std::string& job_id,
                        std::function<void()> run,
                        std::function<void()> refuse);
/// Refuses parked adoptions whose wait is over; the next due (0 = none).
int64_t expire_waiting_adoptions(self_ptr self, int64_t now);
/// Has adopt_atom delivered at `due` (Unix ms) unless a timer fires
/// earlier anyway (each firing looks at every due and arms the next).
void arm_adopt_timer(self_ptr self, int64_t due);
void adopt(self_ptr self, caf::typed_response_promise<job_supervisor_actor> rp,
           const std::string& job_id, uint32_t attempt,
           const std::string& worker_id, worker_actor slot, int64_t deadline_ms,
           bool wait_for_owner);

// -- queue_admin.cpp
// -----------------------------------------------------------
caf::result<ok_atom> cancel_job(self_ptr self, const std::string& job_id,
                                std::string reason);
/// Ends a job that waits (ready, held back, in the timer) `cancelled`;
/// `done`: the write's outcome (errc::conflict: the job has finished).
void cancel_waiting(self_ptr self, const std::string& job_id,
                    std::string reason, std::function<void(caf::error)> done);
/// A retry of `job_id` waits here although its cancel is recorded (its
/// attempt ended in a retry while the request was written, or right
/// before it was told): it ends `cancelled` now, not at its backoff.
void cancel_retry(self_ptr self, const std::string& job_id);
void redrive_one(self_ptr self, const std::string& job_id,
                 std::function<void(caf::error)> done);
void for_all_dead_letters(
    self_ptr self, caf::typed_response_promise<uint32_t> rp,
    std::function<void(const std::string&, std::function<void(caf::error)>)>
        one);
void purge_one(self_ptr self, const std::string& job_id,
               std::function<void(caf::error)> done);
caf::typed_response_promise<ok_atom>
dlq_one(self_ptr self, const std::string& job_id, dlq_op op);
caf::typed_response_promise<uint32_t> dlq_all(self_ptr self, dlq_op op);
std::vector<type_figures> figures_by_type(self_ptr self);
std::vector<partition_figures> figures_by_partition(const queue_state& st);

} // namespace drover::queue_detail
