#pragma once

// The client API (docs/client.md): a program's connection to a Drover
// cluster over CAF, to the coordinators' admin ports, where the client door
// checks the API key of every request (the same keys, tenants and scopes
// as the HTTP API). Link Drover::client.
//
//   drover::client_options opts;
//   opts.nodes = {"coord-a:7411", "coord-b:7411"};
//   opts.api_key = std::getenv("DROVER_API_KEY");
//   auto c = drover::client::make(opts);
//   drover::submit_request req;
//   req.type = "thumbnail";
//   req.input = R"({"url": "..."})";
//   auto sub = (*c)->submit(req);            // job + its idempotency key
//   auto done = (*c)->wait(sub->job.job_id, std::chrono::minutes{5},
//       [](const drover::progress_update& u) { ... });
//
// Every call blocks at most `timeout` in all. Errors are values
// (runtime/errors.hpp): not_found, invalid_request, conflict,
// unauthenticated, forbidden, rate_limited; overloaded when admission
// control refused the work (nothing was created); unavailable when no node
// answered; outcome_unknown when a submission may have been made but its
// answer never came (submit again with the same idempotency key to learn
// its fate). A lost connection, a node whose store is reconnecting, a
// spent rate and an overloaded node are retried with jittered backoff (a
// lost connection on the next address) within the call's time. Thread-safe:
// calls may come from several threads at once.
//
// In-process code (a program that embeds a node's job system: examples,
// tests, tools) uses the same class: gateway/local_client.hpp makes one
// attached to a client door of its own in the same actor system, with the
// same key checks and no network.

#include "runtime/client_protocol.hpp"
#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tls.hpp"

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace drover {

struct client_options {
  /// The coordinators' admin ports as "host:port", tried in turn: the
  /// active one and its standbys (a standby opens its port only once it
  /// has taken over). Not empty.
  std::vector<std::string> nodes;
  /// The API key; "" for a node in development mode (no keys).
  std::string api_key;
  /// How long one call may take in all, reconnecting included.
  std::chrono::milliseconds timeout{30000};
  /// Reconnection backoff: first delay and cap (jittered, runtime/backoff).
  std::chrono::milliseconds reconnect_initial{100};
  std::chrono::milliseconds reconnect_max{5000};
  /// The cluster's TLS (coordinators started with --tls-*): this client's
  /// certificate and key, signed by the cluster's CA, and that CA. All
  /// three or none (none: plain TCP, which a TLS admin port refuses).
  tls_files tls;
};

/// What a submission made (or found again: a retry with the same key).
struct submitted {
  job_record job;
  /// The key the job was submitted with: the request's, or one the client
  /// generated for a request without one.
  std::string idempotency_key;
};

/// A page of jobs; `next_cursor` is "" on the last page.
struct job_page {
  std::vector<job_record> jobs;
  std::string next_cursor;
};

class client {
public:
  /// Checks the options (errc::bad_config); connects on first use.
  static caf::expected<std::unique_ptr<client>> make(client_options opts);

  /// A client of `door`, a client door in this process and in `sys`
  /// (gateway/local_client.hpp spawns one): the same calls, no network, no
  /// other address (`opts.nodes` and `opts.tls` must be empty;
  /// errc::bad_config). `on_close` runs when the client is destroyed, or
  /// at once if attach refuses (it stops the door). Destroy the client
  /// before `sys`: an actor system waits for its actors, and only
  /// `on_close` stops these.
  static caf::expected<std::unique_ptr<client>>
  attach(caf::actor_system& sys, client_door_actor door, client_options opts,
         std::function<void()> on_close = {});

  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// Submits one job. A request without an idempotency key gets one, so
  /// the client can send it again after a lost connection without making
  /// a second job.
  caf::expected<submitted> submit(submit_request req);

  /// Submits up to 1,000 jobs at once (one transaction on the node). One
  /// answer per item, in order; a refused item's record has an empty
  /// job_id and its error (code = the errc name) in `job.error`.
  caf::expected<std::vector<submitted>>
  submit(std::vector<submit_request> reqs);

  caf::expected<job_record> get(const std::string& job_id);

  /// The result JSON of a completed job; errc::conflict while it is not.
  caf::expected<std::string> result(const std::string& job_id);

  /// The job's history (audit log), oldest first.
  caf::expected<std::vector<job_event>> events(const std::string& job_id);

  /// A page of the job's history, oldest first: its events after sequence
  /// `after` (0: from the start), at most `limit` (1 to 10,000; else
  /// errc::invalid_request). The next page starts after the last event's
  /// sequence; a page shorter than `limit` is the last one for now. From a
  /// node older than this request, the page is cut from the whole log.
  caf::expected<std::vector<job_event>> events(const std::string& job_id,
                                               uint64_t after, uint32_t limit);

  /// Asks for cancellation; the job as it is afterwards (running ones stop
  /// cooperatively, then by force). errc::conflict if it already ended --
  /// unless an earlier attempt of this call may have acted unanswered and
  /// the job is now cancelled: then the job is the answer.
  caf::expected<job_record> cancel(const std::string& job_id,
                                   const std::string& reason = {});

  /// Jobs matching `q` (status, type, dead-lettered), `q.limit` per page
  /// (1 to 1000) after `q.after`.
  caf::expected<job_page> list(job_query q);

  /// The dead-letter queue, a page at a time.
  caf::expected<job_page> dead_letters(uint32_t limit = 100,
                                       const std::string& after = {});
  /// Runs a dead-lettered job again; errc::conflict if it is not in the
  /// dead-letter queue (unless an earlier attempt of this call may have
  /// acted unanswered and the job has left it: then the job).
  caf::expected<job_record> retry(const std::string& job_id);
  /// Removes a job from the dead-letter queue for good (its history stays).
  caf::expected<job_record> purge(const std::string& job_id);

  /// Follows a job until it is terminal and returns its final record.
  /// `on_event` gets each audit-log event with a sequence above
  /// `after_sequence`, in order, once (also across reconnections: a
  /// watcher that stored the last sequence it saw resumes from there);
  /// `on_progress` gets live progress (coalesced, not in the log). Both
  /// run on the calling thread. Past `deadline`, caf::sec::request_timeout:
  /// the job goes on.
  caf::expected<job_record>
  wait(const std::string& job_id, std::chrono::milliseconds deadline,
       std::function<void(const progress_update&)> on_progress = {},
       std::function<void(const job_event&)> on_event = {},
       uint64_t after_sequence = 0);

private:
  struct impl;
  explicit client(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace drover
