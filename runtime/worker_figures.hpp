#pragma once

// What a worker node's agent (actors/worker_agent.hpp) tells about itself:
// its answer to (stats_atom), which its metrics endpoint turns into the
// Prometheus text (gateway/metrics.hpp; docs/operations.md, "Metrics of a
// worker node").
//
// The figures never leave the node: they are not in the type-ID block
// (runtime/type_ids.hpp), whose types all cross nodes as Cap'n Proto
// bytes. `inspect` is CAF's plain field-by-field one (for logging).

#include <caf/meta/type_name.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace drover {

/// One resource class of the node.
struct worker_class_figures {
  /// Local workers of the class (--slots): the most attempts it runs.
  uint32_t slots = 0;
  /// Elastic classes (--elastic-slots, at least 1): the slots offered at
  /// least; 0 = not elastic. The coordinator's link decides how many
  /// between that and `slots` it offers now, so this node does not know it.
  uint32_t elastic_min = 0;
  /// Workers holding an attempt: running, finishing, or abandoned while
  /// their handler has not returned yet.
  uint32_t busy = 0;
  /// Attempts running on the class's workers.
  uint32_t running = 0;
  /// Leases received and waiting for a free worker (prefetch).
  uint32_t buffered = 0;
  /// Attempts started since the process started.
  uint64_t started = 0;
};

/// The counters of a worker node since its process started: kept outside
/// the agent so that a restarted agent goes on counting. Written by the
/// one agent that runs at a time, read by it too (relaxed atomics: only
/// the values matter, not their order). `started_by_class` has its keys
/// (the slot classes) from the start and never gains one.
struct worker_counters {
  std::atomic<uint64_t> leases_received{0};
  std::atomic<uint64_t> attempts_finished{0};
  std::atomic<uint64_t> joins{0};
  std::atomic<uint64_t> connection_failures{0};
  std::atomic<uint64_t> heartbeats_unanswered{0};
  std::atomic<uint64_t> tokens_granted{0};
  std::atomic<uint64_t> stale_leases_refused{0};
  std::map<std::string, std::atomic<uint64_t>> started_by_class;

  /// With a key per slot class.
  explicit worker_counters(const std::map<std::string, uint32_t>& slots) {
    for (const auto& entry : slots)
      started_by_class[entry.first];
  }
};

struct worker_figures {
  std::map<std::string, worker_class_figures> classes;
  /// Outcomes held until the coordinator says they are settled.
  uint64_t unsettled_outcomes = 0;
  bool connected = false;
  bool draining = false;
  /// Milliseconds since the coordinator last answered a heartbeat (or the
  /// join); -1 before its first answer.
  int64_t since_answer_ms = -1;
  /// Mid-attempt token takes waiting or in flight (runtime/token_relay.hpp).
  uint64_t token_takes_waiting = 0;
  // Counters since the process started (worker_counters).
  uint64_t leases_received = 0;
  uint64_t attempts_finished = 0;
  /// Joins after the first one.
  uint64_t reconnects = 0;
  /// Connection attempts and handshakes that failed.
  uint64_t connection_failures = 0;
  uint64_t heartbeats_unanswered = 0;
  /// Tokens the coordinator granted to this node's running attempts.
  uint64_t tokens_granted = 0;
  /// Leases refused for an epoch older than one seen before for their
  /// partition (a deposed coordinator's; runtime/partition_epochs.hpp).
  uint64_t stale_leases_refused = 0;
};

/// The figures of a node with several agents (--share-partitions: one per
/// coordinator, each with its share of the slots) as one: counts and
/// counters added up; connected only if every agent is, draining if one
/// is; since_answer_ms the oldest (-1 if one never had an answer).
inline worker_figures merge(const std::vector<worker_figures>& parts) {
  worker_figures out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const auto& p = parts[i];
    for (const auto& [cls, c] : p.classes) {
      auto& o = out.classes[cls];
      o.slots += c.slots;
      o.elastic_min += c.elastic_min;
      o.busy += c.busy;
      o.running += c.running;
      o.buffered += c.buffered;
      o.started += c.started;
    }
    out.unsettled_outcomes += p.unsettled_outcomes;
    out.connected = (i == 0 || out.connected) && p.connected;
    out.draining = out.draining || p.draining;
    if (i == 0)
      out.since_answer_ms = p.since_answer_ms;
    else if (out.since_answer_ms < 0 || p.since_answer_ms < 0)
      out.since_answer_ms = -1;
    else
      out.since_answer_ms = std::max(out.since_answer_ms, p.since_answer_ms);
    out.token_takes_waiting += p.token_takes_waiting;
    out.leases_received += p.leases_received;
    out.attempts_finished += p.attempts_finished;
    out.reconnects += p.reconnects;
    out.connection_failures += p.connection_failures;
    out.heartbeats_unanswered += p.heartbeats_unanswered;
    out.tokens_granted += p.tokens_granted;
    out.stale_leases_refused += p.stale_leases_refused;
  }
  return out;
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_class_figures& x) {
  return f(caf::meta::type_name("worker_class_figures"), x.slots, x.elastic_min,
           x.busy, x.running, x.buffered, x.started);
}

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, worker_figures& x) {
  return f(caf::meta::type_name("worker_figures"), x.classes,
           x.unsettled_outcomes, x.connected, x.draining, x.since_answer_ms,
           x.token_takes_waiting, x.leases_received, x.attempts_finished,
           x.reconnects, x.connection_failures, x.heartbeats_unanswered,
           x.tokens_granted, x.stale_leases_refused);
}

} // namespace drover
