#pragma once

// The webhook dispatcher's state and the functions its behaviour
// (gateway/webhook_dispatcher.cpp: deliveries, their attempts and their
// records) is made of, with gateway/webhook_resume.cpp (watching the
// progress publisher, finding the webhooks still owed in the store).
// Internal: the contract is gateway/webhook_dispatcher.hpp.

#include "gateway/webhook_dispatcher.hpp"

#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <caf/allowed_unsafe_message_type.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

// Local-only messages between the dispatcher and its delivery threads.
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::webhook_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(drover::webhook_response)

namespace drover::webhook_detail {

// Private messages: the dispatcher to itself and to its delivery threads.
using post_atom = caf::atom_constant<caf::atom("wh_post")>;
using connect_atom = caf::atom_constant<caf::atom("wh_connect")>;
using scan_atom = caf::atom_constant<caf::atom("wh_scan")>;
using due_atom = caf::atom_constant<caf::atom("wh_due")>;
using record_atom = caf::atom_constant<caf::atom("wh_record")>;

constexpr auto store_timeout = std::chrono::seconds{30};
constexpr uint32_t scan_page = 200;
/// Webhook ids settled recently, remembered so a resumption scan that read
/// the store just before the final outcome was committed does not deliver
/// again.
constexpr size_t settled_memory = 10000;

/// Retries of recording an attempt in the job's history.
const backoff_schedule record_backoff{
    std::chrono::milliseconds{100}, std::chrono::milliseconds{5000}, 2.0, 0.5};
/// Scans for pending deliveries after a failed one.
const backoff_schedule rescan_backoff{
    std::chrono::milliseconds{500}, std::chrono::milliseconds{30000}, 2.0, 0.5};
/// Registering with the progress publisher (absent while the job system
/// restarts).
const backoff_schedule connect_backoff{
    std::chrono::milliseconds{50}, std::chrono::milliseconds{2000}, 2.0, 0.5};

/// A delivery thread: one blocking POST at a time.
using webhook_sender_actor = caf::typed_actor<
    caf::replies_to<post_atom, webhook_request>::with<webhook_response>>;

/// The dispatcher's own interface: webhook_dispatcher_actor plus its
/// timers. Only spawn_webhook_dispatcher sees it.
using dispatcher_impl_actor = webhook_dispatcher_actor::extend<
    caf::reacts_to<connect_atom>,
    caf::reacts_to<scan_atom, uint64_t, std::string, uint32_t>,
    caf::reacts_to<due_atom, std::string, uint64_t>,
    caf::reacts_to<record_atom, job_event, uint32_t>>;

enum class phase : uint8_t {
  /// Waiting for its timer.
  waiting,
  /// In the ready queue.
  ready,
  /// An attempt is running on a delivery thread.
  running,
  /// Its last attempt is being written to the store.
  recording,
};

struct delivery {
  std::string job_id;
  std::string url;
  std::string webhook_id;
  std::string body;
  uint64_t terminal_sequence = 0;
  /// The job's attempt at its terminal event: the events' `attempt`.
  uint32_t job_attempt = 0;
  /// After this, no new attempt starts (end of job + retry period).
  int64_t give_up_at_ms = 0;
  /// Requests made so far, earlier runs of the node included.
  uint32_t attempts = 0;
  /// Bumped whenever a timer is armed; stale timers are ignored.
  uint64_t generation = 0;
  phase state = phase::waiting;
};

struct dispatcher_state {
  webhook_dispatcher_config cfg;
  std::vector<webhook_sender_actor> idle_senders;
  /// Keyed by job id: one delivery per job at a time (a newer terminal
  /// event, after a redrive, replaces an older delivery).
  std::map<std::string, delivery> deliveries;
  std::deque<std::string> ready;
  std::set<std::string> disabled_urls;
  std::set<std::string> settled;
  std::deque<std::string> settled_order;
  progress_actor publisher;
  /// The publisher that went down last: its handle may linger in
  /// job_system_handles until the job system restarted.
  caf::actor_addr dead_publisher;
  /// Bumped per (re)connection; a scan of an older epoch stops.
  uint64_t scan_epoch = 0;
  /// The current scan page's jobs not resumed yet, and where the next page
  /// starts if there is one.
  std::deque<job_record> resuming;
  std::string scan_next;
  bool scan_more = false;
  backoff_counter connect_retries{connect_backoff};
  uint64_t next_generation = 1;
  std::mt19937_64 rng;

  static inline const char* name = "drover.webhook_dispatcher";
};

using self_ptr = dispatcher_impl_actor::stateful_pointer<dispatcher_state>;

// -- gateway/webhook_dispatcher.cpp -------------------------------------------

int64_t now_ms(self_ptr self);

/// Starts (or continues, with `prior_attempts` made before and the next
/// one not before `not_before_ms`) the delivery of `rec`'s webhook.
void admit(self_ptr self, const job_record& rec, uint32_t prior_attempts,
           int64_t not_before_ms);

// -- gateway/webhook_resume.cpp -----------------------------------------------

/// Pages through the store's jobs that owe a webhook.
void scan(self_ptr self, uint64_t epoch, std::string after, uint32_t failures);

/// Registers with the current progress publisher, then scans the store.
void connect(self_ptr self);

} // namespace drover::webhook_detail
