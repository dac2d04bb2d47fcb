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

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

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
};

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
           x.tokens_granted);
}

} // namespace drover
