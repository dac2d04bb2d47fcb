#pragma once

// Attempts a worker node keeps running after their coordinator handed
// their partition to another (docs/cluster.md, "Running attempts survive a
// hand-off"), shared by the node's agents (one per coordinator,
// --share-partitions).
//
// The agent whose coordinator handed the partition over (the lender)
// posts the attempt here: it keeps the attempt's worker (its slot stays
// taken there) and holds its reports. The node's other agents offer every
// attempt posted by another agent to their coordinators in each heartbeat
// (Heartbeat.offered); the one whose coordinator adopts it (it owns the
// partition now: CoordinatorReply.adopted) claims it here and tells the
// lender, which from then on hands the attempt's reports to it. An attempt
// nobody claims within its deadline is withdrawn by the lender, which
// stops it: the partition's new owner runs the job again after its
// adoption grace.
//
// An agent going home (actors/worker_agent.hpp) posts the attempts that
// still report to the coordinator it failed over to as moves: the node's
// agent joined there claims them and relays their reports; a move nobody
// claims runs on where it ran. An agent offers its own entries too once it
// is joined to another coordinator than the one it lent them from.
//
// Thread-safe: agents run on any of the scheduler's threads.

#include "actors/attempt_protocol.hpp"

#include <caf/actor_addr.hpp>
#include <caf/typed_actor.hpp>

#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace drover {

/// The lender's side: told who took its attempt over — the new owner of
/// the attempt's reports and the home its token takes go to.
using lender_actor
    = caf::typed_actor<caf::reacts_to<lent_atom, std::string, uint32_t,
                                      attempt_owner_actor, worker_home_actor>>;

class handover_board {
public:
  struct entry {
    std::string job_id;
    uint32_t attempt = 0;
    std::string resource_class;
    /// The worker running it (on the lender's slot); null once it ended.
    local_worker_actor worker;
    /// The job's rate-limit keys (what its token takes draw on).
    std::string rate_key;
    /// Its outcome, if it ended before anybody claimed it.
    std::optional<completion> done;
    /// The agent that lent it (its worker reports there).
    lender_actor lender;
    /// The lender's coordinator link when it posted the entry: the lender
    /// itself offers it to another coordinator it joins later (an agent
    /// failed over and gone home again).
    caf::actor_addr link;
    /// Posted by an agent going home for the coordinator it reports to
    /// (that coordinator owns the partition): an agent of the node joined
    /// there takes its reports over, and nobody taking it means it runs on
    /// where it ran (actors/worker_agent.hpp, "Going home").
    bool move = false;
    /// Offered by the node's other agents (a move its lender took back is
    /// not, but stays claimable: the coordinator may have moved it just
    /// then).
    bool offered = true;
  };

  /// The lender posts an attempt.
  void post(entry e);

  /// The lender takes back an attempt nobody claimed: the entry if it was
  /// here unclaimed, posted by `lender` (which stops it, or for a move
  /// takes its reports back), none if it was claimed (or unknown, or posted
  /// again by the agent that claimed it).
  std::optional<entry> withdraw(const std::string& job_id, uint32_t attempt,
                                const caf::actor_addr& lender);

  /// The lender takes back a move nobody claimed: no agent offers it any
  /// more, but one whose coordinator moved it meanwhile still claims it.
  /// False if it was claimed (or unknown).
  bool stop_offering(const std::string& job_id, uint32_t attempt,
                     const caf::actor_addr& lender);

  /// The lender's move (entry.move) becomes a hand-over: nobody claiming
  /// it means it is stopped. False if it was claimed (or unknown).
  bool as_hand_over(const std::string& job_id, uint32_t attempt,
                    const caf::actor_addr& lender);

  /// The lender's attempt ended before anybody claimed it: its outcome goes
  /// with the entry. False if it was claimed meanwhile (the lender hands
  /// the outcome to the claimant itself).
  bool finish(const std::string& job_id, uint32_t attempt,
              const caf::actor_addr& lender, completion c);

  /// The attempts posted by other agents than `agent`, and by `agent`
  /// itself on another link than `link` (its current one), unclaimed, with
  /// their resource classes: what `agent` offers its coordinator.
  std::vector<running_attempt> offers(const caf::actor_addr& agent,
                                      const caf::actor_addr& link) const;

  /// An agent whose coordinator (through `link`) adopted the attempt takes
  /// it: the entry if it was here unclaimed and `agent` may offer it (see
  /// offers; it is removed).
  std::optional<entry> claim(const std::string& job_id, uint32_t attempt,
                             const caf::actor_addr& agent,
                             const caf::actor_addr& link);

  /// How many attempts wait to be claimed.
  size_t size() const;

  /// How many entries were ever posted: an agent that sees it grow knows
  /// the node lends something (an away agent then looks home).
  uint64_t posts() const;

private:
  /// Applies `change` to the unclaimed entry of `job_id`/`attempt` posted
  /// by `lender`, under the lock: false if there is none.
  bool change_lent(const std::string& job_id, uint32_t attempt,
                   const caf::actor_addr& lender,
                   const std::function<void(entry&)>& change);

  mutable std::mutex mx_;
  /// By (job, attempt).
  std::map<std::pair<std::string, uint32_t>, entry> entries_;
  uint64_t posts_ = 0;
};

} // namespace drover
