#pragma once

// Webhooks, the blocking half: what one delivery attempt sends and how it
// is sent. The dispatcher actor (gateway/webhook_dispatcher.hpp) decides
// when; docs/webhooks.md is the user's view.
//
// One attempt (`webhook_client::post`):
//   1. parse the URL strictly (runtime/url.hpp);
//   2. resolve the host (a literal IP address is taken as it is) and check
//      EVERY resolved address against the address policy: loopback,
//      private, link-local (cloud metadata), unspecified, multicast,
//      carrier-grade NAT and the other special-purpose ranges
//      (runtime/ip_address.hpp) are refused unless an allow-listed network
//      contains them; an IPv4-mapped IPv6 address counts as its IPv4
//      address. A refusal is final (`refused`): nothing is sent;
//   3. connect to the checked addresses only (in resolver order; the name
//      is never resolved again, so DNS rebinding can't swap in another
//      address), TLS for https (certificate verified against the system
//      store plus `extra_ca_file`, host name checked, SNI sent, TLS 1.2+);
//   4. POST the body with `content-type: application/json`, `user-agent:
//      drover-webhook/0.1`, `webhook-id`, `webhook-timestamp` (Unix seconds
//      of this attempt) and, with a key, `webhook-signature: v1,<base64
//      HMAC-SHA256(key, id "." timestamp "." body)>` (Standard Webhooks);
//   5. read the answer: at most 16 KiB of header and `max_response_bytes`
//      of body (more fails the attempt). Redirects are not followed.
// The whole attempt (resolve, connect, TLS, write, read) has one deadline,
// `timeout`; name resolution uses the system resolver, which can't be
// interrupted, so a resolver slower than the deadline ends the attempt only
// once it answers (its own timeouts apply: resolv.conf).
//
// Outcomes: 2xx delivered; 410 Gone disables the endpoint; everything else
// (3xx included) is a failed attempt to retry. Nothing here throws.

#include "runtime/ip_address.hpp"
#include "runtime/model.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace drover {

struct node_config;

// -- signing and payload ------------------------------------------------------

/// The `webhook-signature` value for one attempt: "v1," + base64 of
/// HMAC-SHA256(key, id + "." + timestamp + "." + body), `key` being the
/// secret's decoded bytes.
std::string webhook_signature(std::string_view key, std::string_view id,
                              int64_t timestamp_s, std::string_view body);

/// The `webhook-id` of the delivery that reports the terminal event
/// `terminal_sequence` of `job_id`: "<job_id>.<terminal_sequence>", the
/// same for every attempt (receivers deduplicate on it).
std::string webhook_id(const std::string& job_id, uint64_t terminal_sequence);

/// The JSON body for a job's final record: {"type": "job.<status>",
/// "timestamp": <finished_at>, "data": <the job as GET /api/jobs/{id} shows
/// it, plus "result": the output of a completed job, else null>}. Identical
/// for every attempt of a delivery.
std::string webhook_body(const job_record& rec);

// -- address policy -----------------------------------------------------------

/// Which addresses a webhook may connect to (see the top of this file).
class address_policy {
public:
  address_policy() = default;
  explicit address_policy(std::vector<ip_network> allow);

  /// Empty if `x` may be reached; else errc::invalid_request naming the
  /// address and why it is refused.
  caf::error check(const ip_address& x) const;

  const std::vector<ip_network>& allow() const {
    return allow_;
  }

private:
  std::vector<ip_network> allow_;
};

// -- options ------------------------------------------------------------------

struct webhook_options {
  /// HMAC key: the secret's decoded bytes; empty = unsigned deliveries.
  std::string key;
  /// Networks reachable despite the address policy.
  std::vector<ip_network> allow;
  /// A delivery is retried until this long after the job ended, then
  /// marked failed. 0 = one attempt.
  std::chrono::milliseconds retry_period{24LL * 3600 * 1000};
  /// Backoff: base(n) = min(max, initial * 2^(n-1)) after the n-th failed
  /// attempt; the delay is drawn from [base/2, base] (equal jitter).
  std::chrono::milliseconds initial_backoff{1000};
  std::chrono::milliseconds max_backoff{3600 * 1000};
  /// Deadline of one attempt.
  std::chrono::milliseconds timeout{10000};
  /// Largest response body read; more fails the attempt.
  size_t max_response_bytes = 64 * 1024;
  /// Delivery threads: attempts that may run at once.
  size_t concurrency = 4;
  /// PEM file of CA certificates trusted besides the system store; empty =
  /// none (tests use it for a local TLS receiver).
  std::string extra_ca_file;
};

/// Options from the node's configuration (decodes the secret, parses the
/// allow-list). errc::bad_config on a bad value.
caf::expected<webhook_options> webhook_options_from(const node_config& cfg);

/// Delay after the `failed_attempts`-th failed attempt (1 = after the
/// first); `uniform01` in [0, 1).
std::chrono::milliseconds webhook_backoff(const webhook_options& opts,
                                          uint32_t failed_attempts,
                                          double uniform01);

// -- one attempt --------------------------------------------------------------

struct webhook_request {
  std::string url;
  std::string webhook_id;
  std::string body;
  /// Start of the attempt, Unix ms; `webhook-timestamp` is its seconds.
  int64_t at_ms = 0;
};

struct webhook_response {
  /// HTTP status; 0 = no answer.
  uint16_t status_code = 0;
  /// Why the attempt did not deliver; empty for 2xx.
  std::string error;
  /// The URL or its addresses were refused: don't retry.
  bool refused = false;
};

/// Sends webhook requests; blocking. Safe to share between threads (each
/// call has its own sockets; the TLS context is read-only after
/// construction).
class webhook_client {
public:
  explicit webhook_client(webhook_options opts);
  ~webhook_client();

  webhook_client(const webhook_client&) = delete;
  webhook_client& operator=(const webhook_client&) = delete;

  /// One attempt (see the top of this file). Blocks up to the timeout
  /// (plus whatever the system resolver takes beyond it); never call it on
  /// a CAF scheduler thread. Never throws.
  webhook_response post(const webhook_request& req) const;

  const webhook_options& options() const {
    return opts_;
  }

private:
  struct impl;
  webhook_options opts_;
  address_policy policy_;
  std::unique_ptr<impl> impl_;
};

} // namespace drover
