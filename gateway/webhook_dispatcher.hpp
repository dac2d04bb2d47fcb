#pragma once

// The webhook dispatcher: delivers each finished job's webhook (its
// callback URL) at least once, or marks it failed after its schedule, and
// records every attempt in the job's history. gateway/webhook.hpp sends one
// attempt; docs/webhooks.md is the user's view.
//
// Protocol:
//   (final_atom, job_record)   a job reached a terminal state. The
//        dispatcher registers with the progress publisher for every job's
//        final record (watch_finals_atom) and also accepts them from
//        anyone. A record whose webhook_pending_sequence is 0 owes no
//        webhook (no callback URL, or settled) and is ignored; a record
//        already being delivered is not delivered twice.
//
// Deliveries: one per (job, terminal event), identified by its webhook id
// "<job_id>.<terminal sequence>". Attempts run on `options.concurrency`
// delivery threads (detached actors), never on CAF's scheduler threads;
// the dispatcher itself never blocks. After each attempt a
// webhookAttempted event is appended to the job's history (store protocol,
// sequence assigned by the store), and only once it is committed does the
// delivery go on: 2xx -> delivered; 410 Gone -> disabled (the URL is
// remembered and later deliveries to it are not attempted: they are
// recorded as disabled with attempt number 0); a refused URL or address ->
// failed; anything else -> retrying after the backoff
// (webhook_backoff), or failed once the next attempt would start after
// `retry_period` from the job's end. An append that fails is retried
// (100 ms doubling to 5 s) while the store is unavailable; a job that no
// longer exists (retention) drops its delivery.
//
// At least once across restarts: on start, and again whenever the
// progress publisher or the store was restarted, the dispatcher pages
// through the store's jobs that still owe a webhook (webhooks_atom), reads
// each one's history to continue its attempt numbering and its backoff,
// and resumes it. A delivery whose schedule ran out while the node was
// down gets one attempt before it is marked failed. A crash between an
// attempt and its record means that attempt is repeated (receivers
// deduplicate on webhook-id). The set of disabled URLs lives in memory
// only: after a restart the first delivery to such a URL learns it again.
//
// Handles to the store and the publisher come from `job_system_handles`
// (the job system may restart under the node's root supervisor and get new
// ones); the dispatcher polls for them at start and after the publisher
// goes down.

#include "actors/job_system.hpp"
#include "gateway/webhook.hpp"
#include "runtime/atoms.hpp"
#include "runtime/model.hpp"
#include "runtime/supervisor.hpp"

#include <caf/fwd.hpp>
#include <caf/replies_to.hpp>
#include <caf/typed_actor.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

namespace drover {

/// final_atom: a job ended (from the progress publisher). partitions_atom:
/// the node took partitions (--share-partitions): look again for the
/// webhooks owed by jobs of this node's partitions (their last owner may
/// have left them undelivered).
using webhook_dispatcher_actor
    = caf::typed_actor<caf::reacts_to<final_atom, job_record>,
                       caf::reacts_to<partitions_atom>>;

/// The node's running dispatcher (webhook_child sets it at every start),
/// for whoever must tell it something from outside the tree.
class webhook_dispatcher_slot {
public:
  void set(webhook_dispatcher_actor d);
  /// Null until the first start.
  webhook_dispatcher_actor get() const;

private:
  mutable std::mutex mx_;
  webhook_dispatcher_actor current_;
};

struct webhook_dispatcher_config {
  webhook_options options;
  /// Where the current store and progress publisher are found.
  std::shared_ptr<job_system_handles> handles;
  /// Unix ms now; default: the system clock. Backoff timers run on CAF's
  /// clock, so a substitute only shifts what is recorded and compared.
  std::function<int64_t()> clock_ms;
  /// Seed of the jitter RNG; 0 = random.
  uint64_t seed = 0;
  /// Called with each webhookAttempted event once the store committed it
  /// (tests, metrics). Runs on the dispatcher's thread; must not block.
  std::function<void(const job_event&)> on_recorded;
  /// webhook_child records each dispatcher it starts here (optional).
  std::shared_ptr<webhook_dispatcher_slot> running;
};

/// Spawns a dispatcher and its delivery threads (linked: they end with
/// it). It warns on stderr when deliveries go out unsigned.
webhook_dispatcher_actor
spawn_webhook_dispatcher(caf::actor_system& sys, webhook_dispatcher_config cfg);

/// The dispatcher as a child ("webhooks") of the node's root supervisor,
/// next to the job system whose handles it uses. Permanent; a restart
/// resumes the pending deliveries from the store.
child_spec webhook_child(webhook_dispatcher_config cfg);

} // namespace drover
