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
// Thread-safe: agents run on any of the scheduler's threads.

#include "actors/attempt_protocol.hpp"

#include <caf/actor_addr.hpp>
#include <caf/typed_actor.hpp>

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
  };

  /// The lender posts an attempt.
  void post(entry e);

  /// The lender takes back an attempt nobody claimed: true if it was here
  /// unclaimed, posted by `lender` (which stops it), false if it was
  /// claimed (or unknown, or posted again by the agent that claimed it).
  bool withdraw(const std::string& job_id, uint32_t attempt,
                const caf::actor_addr& lender);

  /// The lender's attempt ended before anybody claimed it: its outcome goes
  /// with the entry. False if it was claimed meanwhile (the lender hands
  /// the outcome to the claimant itself).
  bool finish(const std::string& job_id, uint32_t attempt,
              const caf::actor_addr& lender, completion c);

  /// The attempts posted by other agents than `agent`, unclaimed, with
  /// their resource classes: what `agent` offers its coordinator.
  std::vector<running_attempt> offers(const caf::actor_addr& agent) const;

  /// An agent whose coordinator adopted the attempt takes it: the entry if
  /// it was here unclaimed and not posted by `agent` itself (it is removed).
  std::optional<entry> claim(const std::string& job_id, uint32_t attempt,
                             const caf::actor_addr& agent);

  /// How many attempts wait to be claimed.
  size_t size() const;

private:
  mutable std::mutex mx_;
  /// By (job, attempt).
  std::map<std::pair<std::string, uint32_t>, entry> entries_;
};

} // namespace drover
