#pragma once

// Drover's error codes. Errors are values (caf::error) carrying one of these
// codes in the "drover" category plus a human-readable context string; they
// cross actor and node boundaries like any CAF error. Register the category
// with `register_error_category(cfg)` so `actor_system::render` prints them.

#include <caf/error.hpp>
#include <caf/make_message.hpp>

#include <cstdint>
#include <string>

namespace caf {
class actor_system_config;
} // namespace caf

namespace drover {

/// Stable numeric values: they travel between nodes. Append only.
enum class errc : uint8_t {
  none = 0,
  /// Decoding: the input ended before the message did.
  truncated = 1,
  /// Decoding: the input exceeds the configured size limit.
  too_large = 2,
  /// Decoding: the bytes or the JSON text are not a valid message.
  malformed = 3,
  /// Decoding: nesting deeper than the configured limit.
  too_deep = 4,
  /// A field holds a value outside its allowed range.
  invalid_value = 5,
  /// Supervision: a child restarted more often than its intensity allows.
  restart_intensity_exceeded = 6,
  /// Supervision: a supervisor gave up and escalated to its parent.
  escalated = 7,
  /// Supervision: a child did not stop within its shutdown timeout.
  shutdown_timeout = 8,
  /// A named entity (child, job, ...) does not exist.
  not_found = 9,
  /// A request arrived in a state that cannot serve it (e.g. shutting down).
  unavailable = 10,
  /// Configuration is invalid.
  bad_config = 11,
  /// Idempotency: the key is taken by a job with a different spec.
  conflict = 12,
  /// A submission or command failed validation; the context says why.
  invalid_request = 13,
  /// A finished or superseded attempt tried to report (fencing).
  stale_attempt = 14,
  /// Fencing of the store: this node no longer owns the partition leases
  /// its writes need (another coordinator took them over); nothing was
  /// written.
  not_owner = 15,
  /// Cluster: a node may not join (wrong join secret, incompatible
  /// protocol, a registration that does not add up).
  forbidden = 16,
  /// A client presented no API key, or one the node does not know.
  unauthenticated = 17,
  /// A client's key made more requests than its rate allows.
  rate_limited = 18,
  /// A submission's deadline passed after it was sent and before it was
  /// answered: it may or may not exist. Submitting again with the same
  /// idempotency key (the context names it) tells.
  outcome_unknown = 19,
  /// Admission control: the node cannot take more work now (its bound on
  /// queued work, a partition's cap, the store's backlog). Nothing was
  /// done; try again later.
  overloaded = 20,
};

/// The error category atom for `errc`.
constexpr caf::atom_value errc_category = caf::atom("drover");

const char* to_string(errc x);

inline caf::error make_error(errc x) {
  return caf::error{static_cast<uint8_t>(x), errc_category};
}

inline caf::error make_error(errc x, std::string context) {
  return caf::error{static_cast<uint8_t>(x), errc_category,
                    caf::make_message(std::move(context))};
}

/// True if `err` is the Drover error `x` (false for no error: CAF 0.17's
/// category() of an empty error dereferences nothing).
inline bool is(const caf::error& err, errc x) {
  return err && err.category() == errc_category
         && err.code() == static_cast<uint8_t>(x);
}

/// The code of a Drover error as the APIs name it (to_string of its errc);
/// `other` for an error of another category (or none).
std::string code_text(const caf::error& err, const char* other = "unavailable");

/// Renders any Drover error as "drover: <code> (<context>)" without needing
/// an actor system; other categories fall back to CAF's to_string.
std::string describe(const caf::error& err);

/// Lets `actor_system::render` print Drover errors.
void register_error_category(caf::actor_system_config& cfg);

} // namespace drover
