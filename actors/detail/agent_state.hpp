#pragma once

// The worker agent's state and the functions its behaviour
// (actors/worker_agent.cpp) is made of, spread over
// actors/worker_agent_link.cpp (connecting, the handshake, failing over
// and going home) and actors/worker_agent_run.cpp (running leases, the
// outbox, heartbeats, tokens, figures). Internal: the contract is
// actors/worker_agent.hpp.

#include "actors/worker_agent.hpp"

#include "runtime/token_relay.hpp"

#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>

namespace drover::agent_detail {

using connect_now_atom = agent_timers::connect_atom;
using agent_timers::beat_atom;
using agent_timers::deadline_atom;
using agent_timers::force_atom;
using agent_timers::home_atom;

struct run_info {
  uint32_t attempt = 0;
  std::string resource_class;
  local_worker_actor worker;
  bool superseded = false;
  /// The job's rate-limit key ("" = none): what its takes draw on.
  std::string rate_key;
  /// Lent (this agent's coordinator handed the partition over): its
  /// reports are held until another agent claims it, then go there.
  bool lent = false;
  attempt_owner_actor lent_to;
  worker_home_actor lent_home;
  std::optional<progress_update> held_progress;
  std::optional<progress_update> held_checkpoint;
  std::optional<completion> held_done;
  /// Claimed from another agent: it runs on that agent's worker, whose
  /// idle and stuck states stay there.
  bool borrowed = false;
  /// The agent it was claimed from (its reports arrive from there).
  caf::actor_addr borrowed_from;
  /// Lent by this agent going home, for the coordinator it reports to (the
  /// owner of the partition): listed as running there until an agent of
  /// the node joined to that coordinator claims it; nobody does: it runs
  /// on here (lent_deadline).
  bool moving = false;
  /// Lent: when its board entry's deadline is (an older timer of an entry
  /// posted again is not it).
  std::chrono::steady_clock::time_point lend_until{};
};

using attempt_key = std::pair<std::string, uint32_t>;

struct agent_state {
  worker_agent_config cfg;
  std::map<std::string, std::deque<local_worker_actor>> idle;
  std::map<caf::actor_addr, std::string> worker_ids;
  /// The slot class of each worker that said it is ready (for figures:
  /// a known worker that is not idle is busy).
  std::map<caf::actor_addr, std::string> worker_class;
  std::map<std::string, run_info> running;
  std::deque<lease> waiting;
  // outbox
  std::map<std::string, progress_update> progress;
  /// Newest checkpoint per job (only the last one matters for a resume).
  std::map<std::string, progress_update> checkpoints;
  std::map<attempt_key, completion> completions;
  /// The slot class of each outcome in the outbox (listed in a join, so
  /// that a restarted coordinator can adopt the attempt and take it).
  std::map<attempt_key, std::string> completion_class;
  /// Abandoned attempts whose worker is still busy (a handler that ignores
  /// its cancel): listed in heartbeats so their slots stay taken until the
  /// worker is free again.
  std::map<caf::actor_addr, running_attempt> stuck;
  std::set<attempt_key> sent;
  /// Leases refused for their stale partition epoch, told in the next
  /// heartbeat (their sender frees their slots).
  std::vector<running_attempt> refused;
  bool report_in_flight = false;
  bool beat_in_flight = false;
  // connection
  cluster_endpoint_actor endpoint;
  node_link_actor link;
  bool connecting = false;
  /// Counts handshakes (connect, hello, join); an answer of an older one
  /// (its coordinator went down mid-handshake and a new one began) is
  /// ignored.
  uint64_t handshake = 0;
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds lease_ttl{2000};
  /// Failed connection attempts in a row.
  uint32_t reconnect_failures = 0;
  /// Index (modulo their number) of the coordinator the next connection
  /// attempt goes to: moves on after a failed attempt.
  size_t coordinator_turn = 0;
  /// Index of the coordinator of the connection (0 = the first, its home).
  size_t joined_index = 0;
  /// When the connection to its first coordinator was lost (going home,
  /// --share-partitions): it is tried alone for a while (next_turn,
  /// actors/worker_agent_link.cpp).
  std::optional<std::chrono::steady_clock::time_point> home_lost_at;
  bool home_wait_told = false;
  /// Going home: the first coordinator answered; no new leases here.
  bool leaving = false;
  /// A heartbeat saying so was answered: every lease sent before it is here.
  bool leave_acknowledged = false;
  /// A home probe is armed or in flight.
  bool probing = false;
  /// The armed home probe timer's number (an older one is ignored).
  uint64_t probe_timer = 0;
  /// When a hand-over last made it probe home at once (look_home_now).
  std::chrono::steady_clock::time_point looked_home{};
  /// The board's posts() at the last heartbeat (more while away make it
  /// look home: look_home_now).
  uint64_t posts_seen = 0;
  /// Home probes that failed in a row (their interval doubles, to 1 min).
  uint32_t probe_failures = 0;
  /// Links this agent left to go home: a lease one of them still sends is
  /// not taken (it lapses there).
  std::set<caf::actor_addr> left_links;
  std::minstd_rand rng{std::random_device{}()};
  bool draining = false;
  bool drained = false;
  std::shared_ptr<worker_counters> counters;
  /// When the coordinator last answered a heartbeat or the join.
  std::optional<std::chrono::steady_clock::time_point> last_answer;
  /// The node protocol of the connection (2: tokens mid-attempt).
  uint32_t protocol = 0;
  token_relay tokens;

  static inline const char* name = "drover.worker_agent";
};

using agent_actor = worker_agent_local::stateful_pointer<agent_state>;

// actors/worker_agent_link.cpp
void connect(agent_actor self);
void on_link_lost(agent_actor self, const std::string& why);
void fatal(agent_actor self, const std::string& why);
/// Probes the first coordinator (home_atom timer) while joined elsewhere.
void probe_home(agent_actor self);
/// Going home once nothing runs or waits to settle here.
void check_left(agent_actor self);

/// The outcome of an attempt whose worker died under it.
inline completion worker_lost(const std::string& job_id, uint32_t attempt) {
  completion c;
  c.job_id = job_id;
  c.attempt = attempt;
  c.outcome = completion_outcome::failed_retryable;
  c.error = {"worker_lost", "the worker running the attempt died", true};
  return c;
}

// actors/worker_agent_handover.cpp
/// The coordinator handed these attempts over (or, `owned_elsewhere`,
/// could not adopt them after a failover because another coordinator took
/// their partitions): lend them (post them on the board).
void lend(agent_actor self, const std::vector<running_attempt>& attempts,
          bool owned_elsewhere = false);
/// The coordinator adopted these offered attempts: claim them.
void claim(agent_actor self, const std::vector<running_attempt>& attempts);
/// Another agent claimed the lent attempt: its reports go there now.
void on_lent(agent_actor self, const std::string& job_id, uint32_t attempt,
             attempt_owner_actor owner, worker_home_actor home);
/// The lent attempt's deadline: stopped if nobody claimed it (a move runs
/// on here).
void lent_deadline(agent_actor self, const std::string& job_id,
                   uint32_t attempt);
/// Going home: lends the attempts still reporting to the coordinator it
/// failed over to, to the node's agent joined there (a move).
void move_held(agent_actor self);
/// Lends out the running attempt `r` of `job_id`: its progress and
/// checkpoint not sent yet are held with it.
void hold_reports(agent_actor self, const std::string& job_id, run_info& r);
/// Arms the next home probe in `delay` (the one armed before is void).
void arm_probe(agent_actor self, std::chrono::milliseconds delay);
/// Away from its first coordinator and not leaving: probes it now, its
/// backoff reset (a hand-over on the node suggests it is back; probes may
/// be a minute apart after a long outage).
void look_home_now(agent_actor self);
/// A report of a lent attempt: held or passed on (true), or not lent.
bool pass_on_progress(agent_actor self, progress_update& u, bool checkpoint);
/// The outcome of a lent attempt: held or passed on (true), or not lent.
bool pass_on_done(agent_actor self, completion& c);
/// A monitored actor went down: the agent that took a lent attempt (it is
/// offered again) or the worker of a borrowed one (it ended). False if
/// neither.
bool handover_down(agent_actor self, const caf::actor_addr& who);
/// `worker` is idle again: a lent attempt it ran is over here.
void lent_worker_free(agent_actor self, const caf::actor_addr& worker);

// actors/worker_agent_run.cpp
void check_drained(agent_actor self);
void start_waiting(agent_actor self);

/// Logs and counts a lease not run for its stale partition epoch (a lease
/// of the partition at `newest` came lately: its sender was deposed).
void refuse_stale(agent_actor self, const lease& l, int64_t newest);
void abandon_running(agent_actor self,
                     std::map<std::string, run_info>::iterator i);
/// The attempt at `i` ended with `c` (its worker's outcome, or
/// worker_lost): it leaves `running` and, unless superseded, its outcome
/// goes to the outbox in place of its progress.
void end_attempt(agent_actor self, std::map<std::string, run_info>::iterator i,
                 completion c);
bool take_waiting(agent_actor self, const std::string& job_id,
                  uint32_t attempt);
void apply_reply(agent_actor self, coordinator_reply& r);
caf::result<uint32_t, int64_t> on_take(agent_actor self,
                                       const std::string& job_id,
                                       const worker_actor& worker,
                                       uint32_t wanted);
void maybe_report(agent_actor self);
void send_heartbeat(agent_actor self);
void beat(agent_actor self);
tree_node describe_agent(agent_actor self);
worker_figures figures_of(agent_actor self);

} // namespace drover::agent_detail
