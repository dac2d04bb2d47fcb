#pragma once

// The node link's state, shared by its behaviour (actors/node_link.cpp),
// its joining side (actors/node_link_join.cpp), its slots and leases
// (actors/node_link_slots.cpp) and its admin views and slot actors
// (actors/node_link_views.cpp). Internal.

#include "actors/node_link.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace drover::detail {

struct slot_info {
  std::string resource_class;
  /// Its number within its class (real slots first).
  uint32_t ordinal = 0;
  std::string worker_id;
  /// Its slot actor (slot_impl); null while retired.
  worker_actor actor;
  /// Job of the attempt that occupies it; empty = free.
  std::string job_id;
  /// Offered to the queue and not yet taken: never offered twice.
  bool announced = false;
  /// A prefetch credit (a lease the node buffers), offered only while
  /// every real slot of its class is taken, so that jobs spread over idle
  /// nodes before any waits in a buffer.
  bool buffer = false;
  /// Asked the queue to forget it (withdraw_atom), no answer yet.
  bool withdrawing = false;
  /// Not one of the node's slots for this coordinator: an attempt another
  /// coordinator handed over runs on it (the node runs it on a slot of
  /// that coordinator's share). Never offered; also a `buffer` slot, so
  /// that no count of the class's real slots sees it.
  bool borrowed = false;
};

struct attempt_info {
  uint32_t attempt = 0;
  uint32_t slot = 0;
  job_supervisor_actor js;
  int64_t expiry_ms = 0;
  /// When its lease went to the node.
  int64_t leased_ms = 0;
  /// A slot of its class was free on the node when it was leased, so it
  /// started at once: lease-to-outcome is its run time (plus a round
  /// trip), which the buffer gate measures. False for attempts that waited
  /// in the node's buffer and for adopted ones.
  bool measured = false;
  /// Its lease's TTL (per job type).
  int64_t ttl_ms = 0;
  /// The outcome went to the job supervisor; settled once it finishes.
  bool completing = false;
  /// The lease lapsed: superseded, waiting for the worker to let go.
  bool expired = false;
  /// The job supervisor finished without the worker's outcome.
  bool js_gone = false;
  /// ...because it abandoned the attempt (superseded): a late outcome is
  /// settled and dropped. Otherwise (it died with the store) an outcome is
  /// held for the queue that adopts the attempt.
  bool abandoned = false;
  /// Waiting for the queue to adopt it (after a coordinator restart); an
  /// outcome that arrives meanwhile is held until then.
  bool adopting = false;
  /// The queue the pending adoption was asked of: a reply from another
  /// (a queue that restarted meanwhile, asked again) is stale, and a queue
  /// that restarts is asked again (follow_queue).
  caf::actor_addr asked;
  /// The queue whose job supervisor has it (the one watched when it was
  /// leased, the one that adopted it): its supervisor dying after the link
  /// moved on to a new queue is asked of that one at once (adopt_again).
  caf::actor_addr queue;
  /// Offered by the node (another coordinator handed it over): a refused
  /// adoption only forgets it (the node keeps offering it elsewhere), or,
  /// on one of this share's slots (handed over from here and offered
  /// back), puts it back in `lent`, its slot still taken. Cleared once the
  /// node claims it (lists it as running).
  bool offered = false;
  /// The node lists it as lent while it reports here: it lets its reports
  /// go to another of its agents (the queue was told: tell_let_go).
  bool let_go = false;
  std::optional<completion> held;
};

struct link_state {
  node_link_config cfg;
  /// The node's resource pools as text (runtime/resources.hpp), sent with
  /// each offer.
  std::string pools;
  node_link_local::pointer self_ptr = nullptr;
  std::vector<slot_info> slots;
  /// By job id: the job's current attempt on this node.
  std::map<std::string, attempt_info> attempts;
  /// Superseded attempts displaced by a new lease of the same job to this
  /// node, by (job, attempt): their slots stay taken until the node lets go
  /// of them.
  std::map<std::pair<std::string, uint32_t>, uint32_t> zombies;
  /// Attempts of partitions handed to another coordinator that the node
  /// still runs, by (job, attempt): their slots stay taken until the node
  /// no longer lists them (Heartbeat.lent), and nothing of them counts
  /// here.
  std::map<std::pair<std::string, uint32_t>, uint32_t> lent;
  /// Those of `lent` that were re-reported here and are another
  /// coordinator's (said as ownedElsewhere, not handedOver).
  std::set<std::pair<std::string, uint32_t>> lent_elsewhere;
  /// No heartbeat for two intervals: its free credits are withdrawn, so
  /// that retries go to nodes that answer.
  bool suspect = false;
  /// When the link learnt the node drains (0 = it does not).
  int64_t drain_started_ms = 0;
  /// The queue this link's slots were offered to (see follow_queue).
  caf::actor_addr watched_queue;
  std::vector<lease> pending;
  bool flush_armed = false;
  bool connected = true;
  bool draining = false;
  int64_t joined_ms = 0;
  int64_t last_heartbeat_ms = 0;
  int64_t disconnected_ms = 0;
  std::vector<running_attempt> settled;
  std::vector<running_attempt> superseded;
  /// Reply lists: attempts handed over (keep running, offer elsewhere) and
  /// offered attempts adopted here.
  std::vector<running_attempt> handed_over;
  /// Attempts re-reported here that another coordinator owns now
  /// (CoordinatorReply.ownedElsewhere).
  std::vector<running_attempt> owned_elsewhere;
  std::vector<running_attempt> adopted;
  /// (job, attempt) whose rejection is recorded already.
  std::set<std::pair<std::string, uint32_t>> recorded;
  uint64_t leases_sent = 0;
  uint64_t batches_sent = 0;
  uint64_t rejected = 0;
  uint64_t reports = 0;
  uint64_t heartbeats = 0;
  uint64_t expired = 0;
  /// Per resource class: how long this node's attempts took, lease sent
  /// to outcome received (exponentially weighted; absent = none yet).
  /// Buffer credits open only while it is short (see short_jobs).
  std::map<std::string, double> run_ms;
  /// Classes whose buffer credits are open: entered when run_ms drops
  /// under prefetch_short_job_ms, left when it exceeds twice that or a
  /// measured attempt has run that long (hysteresis: no flapping).
  std::set<std::string> short_classes;
  /// Elastic mode (register_worker::elastic): per class, the slots offered
  /// now and the bounds; classes not listed offer all their slots.
  struct elastic_class {
    uint32_t active = 0;
    uint32_t min = 0;
    uint32_t max = 0;
    /// The current idle window: when it began, and the most slots of the
    /// class busy at once in it.
    int64_t window_ms = 0;
    uint32_t peak = 0;
  };
  std::map<std::string, elastic_class> elastic;
  uint64_t elastic_grown = 0;
  uint64_t elastic_shrunk = 0;

  static inline const char* name = "drover.node_link";
};

using link_actor = node_link_local::stateful_pointer<link_state>;

inline int64_t now_ms(link_actor self) {
  return self->state.cfg.clock_ms();
}

/// Buffer (prefetch) credits are offered for a class only while its
/// attempts on the node take less than this: a buffered job then waits at
/// most about this long behind a busy slot, and the buffer hides the round
/// trip to the coordinator where it matters (short jobs). Long jobs are
/// never buffered behind one another.
constexpr double prefetch_short_job_ms = 100.0;
constexpr double prefetch_long_job_ms = 2 * prefetch_short_job_ms;

// -- slots and leases (actors/node_link_slots.cpp) --------------------------

/// Tells the queue a free slot of the node is there (while the node takes
/// leases); a buffer credit only while every real slot of its class is
/// taken and the class's jobs are short.
void offer(link_actor self, uint32_t index);

/// Withdraws the free slots from the queue (disconnected, draining,
/// suspect), asking the queue: a slot it already handed a job keeps it.
void withdraw_free_slots(link_actor self);

/// Elastic mode: the queue handed slot `index` a job the moment it was
/// offered (jobs were waiting for its class): one more slot of the class
/// is offered, up to its capacity.
void elastic_grow(link_actor self, uint32_t index);

/// Elastic mode, on each tick: after an idle window (elastic_idle_ms) in
/// which fewer slots of a class were busy at once than it offers, its
/// highest offered slot is withdrawn, down to the minimum.
void elastic_review(link_actor self);

/// Offers the class's buffer credits if every real slot is taken and its
/// jobs are short; withdraws the free ones when they are not.
void review_buffers(link_actor self, const std::string& cls);

/// Folds a measured attempt's run time (lease sent to outcome received)
/// into its class's average, opening the buffer credits under
/// prefetch_short_job_ms and closing them over prefetch_long_job_ms.
void note_run_time(link_actor self, const std::string& cls, int64_t ms);

/// True when a slot of `cls` is free on the node itself: attempts of the
/// class that have not reported their outcome are fewer than its slots.
bool slot_free_on_node(link_actor self, const std::string& cls);

/// Frees a slot and offers it again.
void free_slot(link_actor self, uint32_t index);

/// Forgets an attempt, freeing its slot.
void drop_attempt(link_actor self, const std::string& job_id);

/// Records once, in the job's history, that a superseded attempt's report
/// was refused (`what`: "an outcome", "progress", ...); a repeat of an
/// outcome the store shows committed is only logged.
void record_rejection(link_actor self, const std::string& job_id,
                      uint32_t attempt, const std::string& what);

/// Tells the node, in its next reply, to stop the attempt.
void supersede(link_actor self, const std::string& job_id, uint32_t attempt);

/// The attempt `a` of `job_id` ran out (its lease expired, the node handed
/// it back or refused it): marked expired, counted, and its job supervisor
/// told (it settles the attempt lost; the job runs again). The caller logs
/// why.
void expire(link_actor self, const std::string& job_id, attempt_info& a);

/// Marks the node suspect after two missed heartbeats, reclaims lapsed
/// leases, and ends the link once a gone node holds nothing.
void check_leases(link_actor self);

// -- joining and adoption (actors/node_link_join.cpp) -----------------------

/// A reply with this coordinator's id, protocol, lease TTL and heartbeat
/// interval.
coordinator_reply base_reply(link_actor self);

/// The node-protocol version this link and its node agreed on.
uint32_t agreed_protocol(const link_state& st);

/// base_reply with the settled completions and superseded attempts taken
/// out of the state: every reply carries them.
coordinator_reply take_reply(link_actor self);

/// A (re)join of the node: refused if another process with its id is
/// heartbeating or its slots changed; its running attempts are kept (in
/// time), adopted (unknown here: this coordinator restarted or took their
/// partitions) or superseded; its free slots offered.
caf::result<coordinator_reply> on_join(link_actor self, register_worker& reg,
                                       worker_agent_actor& agent);

/// The job's partition went to another coordinator (its supervisor handed
/// the attempt over): the node keeps running it and offers it to its other
/// coordinators; its slot stays taken here while the node lists it as lent.
/// A node older than lending_protocol is not told: abandoned.
void hand_over(link_actor self, uint32_t index, const std::string& job_id,
               uint32_t attempt);

/// A lent attempt the node still reports as its own (it has not heard):
/// said again, in the reply list it was first said in.
void say_lent_again(link_actor self, const std::string& job_id,
                    uint32_t attempt);

/// A heartbeat's lists of attempts handed over: the lent ones keep their
/// slots (freed once no longer listed anywhere in `held`), the offered
/// ones are adopted if this coordinator owns their partitions.
void on_handover_lists(link_actor self, const heartbeat& hb,
                       const std::set<std::pair<std::string, uint32_t>>& held);

/// After the queue restarted (one_for_all): offers the slots to the new
/// queue and has it adopt the attempts whose supervisors died with it.
void follow_queue(link_actor self);
/// Asks the queue to adopt `job_id`'s attempt again if its job supervisor
/// died without abandoning it (the queue restarted); true if asked.
bool adopt_again(link_actor self, const std::string& job_id);

/// One slot of a worker node as the queue sees it: the link announces it
/// to the queue (as the worker of (ready_atom, ...)); it hands what the
/// queue's job supervisors send it to its link, tagged with its index.
/// Dies with its link.
worker_actor::behavior_type slot_impl(worker_actor::pointer self,
                                      node_link_local link, uint32_t index);

/// The node as the node list shows it (JSON object).
std::string node_json(link_actor self);

/// The node's subtree: its slots and the attempts on them.
tree_node describe_node(link_actor self);

} // namespace drover::detail
