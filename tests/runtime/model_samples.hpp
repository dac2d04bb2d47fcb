#pragma once

// Sample values for the codec and type-ID tests: every field set to a
// non-default value, so a field the codec forgets shows up as a mismatch.

#include "runtime/model.hpp"
#include "runtime/tree.hpp"

#include <string>
#include <vector>

namespace drover::samples {

inline backoff_policy backoff() {
  backoff_policy x;
  x.initial_delay_ms = 250;
  x.max_delay_ms = 60000;
  x.multiplier = 1.5;
  x.jitter = 0.5;
  return x;
}

inline resource_request resource(std::string name, uint32_t amount) {
  resource_request x;
  x.name = std::move(name);
  x.amount = amount;
  return x;
}

/// Binary-safe bytes, NULs and high bytes included.
inline std::string checkpoint_bytes() {
  return std::string{"ck\0\x01\xff\x80 end", 10};
}

inline job_spec spec() {
  job_spec x;
  x.type = "video.transcode";
  x.input = R"({"file":"in.mp4","sizes":[720,1080],"hdr":true,"meta":null})";
  x.tenant = "acme";
  x.idempotency_key = "order-4711";
  x.callback_url = "https://example.com/hooks/drover";
  x.rate_limit_key = "s3";
  x.extra_rate_limit_keys = {"s3-tenant"};
  x.breaker_key = "encoder-svc";
  x.concurrency_key = "user:42";
  x.concurrency_limit = 2;
  x.resources = {resource("gpu", 1), resource("cpu", 4)};
  x.backoff = backoff();
  x.run_at_ms = 1700000000000;
  x.timeout_ms = 3600000;
  x.max_attempts = 7;
  x.prio = priority::high;
  return x;
}

inline stage make_stage(std::string name, stage_state state, double percent) {
  stage x;
  x.name = std::move(name);
  x.state = state;
  x.percent = percent;
  return x;
}

inline std::vector<stage> stages() {
  return {make_stage("download", stage_state::done, 100),
          make_stage("transcode", stage_state::running, 42.5),
          make_stage("upload", stage_state::pending, 0)};
}

inline progress_update progress() {
  progress_update x;
  x.job_id = "job-1";
  x.stage = "transcode";
  x.message = "frame 1200 of 2800";
  x.stages = stages();
  x.checkpoint = checkpoint_bytes();
  x.percent = 47.25;
  x.at_ms = 1700000001234;
  x.eta_ms = 95000;
  x.attempt = 2;
  return x;
}

inline error_info error() {
  error_info x;
  x.code = "http_503";
  x.message = "encoder unavailable";
  x.retryable = true;
  return x;
}

inline job_record record() {
  job_record x;
  x.job_id = "job-1";
  x.spec = spec();
  x.worker_id = "node-a/worker-3";
  x.result = R"({"url":"s3://out/1.mp4","bytes":123456})";
  x.error = error();
  x.stages = stages();
  x.checkpoint = checkpoint_bytes();
  x.progress = 47.25;
  x.created_at_ms = 1700000000123;
  x.started_at_ms = 1700000000456;
  x.completed_at_ms = 1700000009999;
  x.retry_at_ms = 1700000005000;
  x.lease_expiry_ms = 1700000030000;
  x.eta_ms = 95000;
  x.sequence = 18446744073709551615ull; // UInt64 max survives JSON too
  x.attempt = 3;
  x.retry_count = 2;
  x.checkpoint_attempt = 2;
  x.status = job_status::retrying;
  x.cancel_requested = true;
  x.dead_lettered = true;
  x.webhook_pending_sequence = 17;
  x.lost_count = 2;
  x.last_lost_attempt = 3;
  x.waiting_for = "no connected worker runs job type 'video.transcode'";
  return x;
}

inline webhook_attempt webhook(webhook_outcome outcome) {
  webhook_attempt x;
  x.url = "https://example.com/hooks/drover?tenant=acme";
  x.webhook_id = "job-1.17";
  x.error = outcome == webhook_outcome::delivered ? "" : "HTTP 503: busy";
  x.at_ms = 1700000003000;
  x.next_attempt_at_ms
      = outcome == webhook_outcome::retrying ? 1700000004000 : 0;
  x.terminal_sequence = 17;
  x.attempt_number = 2;
  x.status_code = outcome == webhook_outcome::delivered ? 204 : 503;
  x.outcome = outcome;
  return x;
}

/// An event of kind `kind` with its header and the details it carries set.
inline job_event event(event_kind kind) {
  job_event x;
  x.job_id = "job-1";
  x.sequence = 42;
  x.at_ms = 1700000002000;
  x.attempt = 3;
  x.kind = kind;
  switch (kind) {
    case event_kind::submitted:
      x.spec = spec();
      break;
    case event_kind::scheduled:
      x.run_at_ms = 1700000900000;
      break;
    case event_kind::queued:
      break;
    case event_kind::started:
    case event_kind::lease_expired:
    case event_kind::worker_lost:
      x.worker_id = "node-b/worker-1";
      x.lease_expiry_ms = 1700000060000;
      break;
    case event_kind::progressed:
      x.progress = progress();
      break;
    case event_kind::checkpointed:
      x.checkpoint = checkpoint_bytes();
      break;
    case event_kind::retry_scheduled:
      x.error = error();
      x.next_attempt_at_ms = 1700000004000;
      break;
    case event_kind::completed:
      x.result = R"({"ok":true,"n":[1,2,3]})";
      break;
    case event_kind::failed:
    case event_kind::dead_lettered:
      x.error = error();
      break;
    case event_kind::cancel_requested:
    case event_kind::cancelled:
    case event_kind::redriven:
    case event_kind::purged:
    case event_kind::report_rejected:
      x.reason = "operator alice: customer asked";
      break;
    case event_kind::webhook_attempted:
      x.webhook = webhook(webhook_outcome::retrying);
      break;
  }
  return x;
}

inline constexpr event_kind all_event_kinds[] = {
    event_kind::submitted,
    event_kind::scheduled,
    event_kind::queued,
    event_kind::started,
    event_kind::progressed,
    event_kind::checkpointed,
    event_kind::retry_scheduled,
    event_kind::completed,
    event_kind::failed,
    event_kind::dead_lettered,
    event_kind::cancel_requested,
    event_kind::cancelled,
    event_kind::redriven,
    event_kind::lease_expired,
    event_kind::worker_lost,
    event_kind::purged,
    event_kind::webhook_attempted,
    event_kind::report_rejected,
};

inline constexpr webhook_outcome all_webhook_outcomes[] = {
    webhook_outcome::delivered,
    webhook_outcome::retrying,
    webhook_outcome::failed,
    webhook_outcome::disabled,
};

inline resource_capacity capacity(std::string resource_class, uint32_t slots) {
  resource_capacity x;
  x.resource_class = std::move(resource_class);
  x.slots = slots;
  return x;
}

inline register_worker registration() {
  register_worker x;
  x.node_id = "node-b";
  x.worker_id = "node-b/pool";
  x.capacity = {capacity("cpu", 8), capacity("gpu", 2)};
  x.job_types = {"video.transcode", "report.export"};
  x.role = "worker";
  x.proof = std::string(32, '\x5a');
  x.protocol_min = 1;
  x.protocol_max = 2;
  x.draining = true;
  x.prefetch = 4;
  x.running = {running_attempt{"job-1", 3, "gpu"}};
  x.resources = {{"memory_gb", 64}, {"scratch_gb", 500}};
  x.elastic = {capacity("cpu", 2)};
  x.elastic_idle_ms = 30000;
  x.lent = {running_attempt{"job-2", 1, "cpu"}};
  return x;
}

inline lease make_lease(std::string job_id, uint32_t attempt) {
  lease x;
  x.job_id = std::move(job_id);
  x.spec = spec();
  x.checkpoint = checkpoint_bytes();
  x.lease_expiry_ms = 1700000060000;
  x.attempt = attempt;
  x.partition_epoch = 7;
  return x;
}

inline lease_batch leases() {
  lease_batch x;
  x.leases = {make_lease("job-1", 3), make_lease("job-2", 1)};
  return x;
}

inline running_attempt running(std::string job_id, uint32_t attempt) {
  running_attempt x;
  x.job_id = std::move(job_id);
  x.attempt = attempt;
  return x;
}

inline heartbeat beat() {
  heartbeat x;
  x.node_id = "node-b";
  x.at_ms = 1700000003000;
  x.running = {running("job-1", 3), running("job-2", 1)};
  x.unacknowledged = {running("job-3", 2)};
  x.lent = {running("job-4", 1)};
  x.offered = {running("job-5", 2), running("job-6", 7)};
  x.offered[0].resource_class = "gpu";
  x.refused = {running("job-7", 1)};
  x.draining = true;
  return x;
}

inline coordinator_reply reply() {
  coordinator_reply x;
  x.coordinator_id = "node-a";
  x.challenge = std::string(32, '\x01');
  x.superseded = {running("job-1", 3)};
  x.settled = {running("job-3", 2)};
  x.handed_over = {running("job-4", 1)};
  x.adopted = {running("job-5", 2), running("job-6", 7)};
  x.owned_elsewhere = {running("job-8", 4)};
  x.lease_ttl_ms = 2000;
  x.heartbeat_interval_ms = 500;
  x.protocol = 1;
  return x;
}

inline progress_batch progress_updates() {
  progress_batch x;
  auto second = progress();
  second.job_id = "job-2";
  second.percent = 5;
  x.updates = {progress(), second};
  return x;
}

inline completion done(completion_outcome outcome) {
  completion x;
  x.job_id = "job-1";
  x.attempt = 3;
  x.outcome = outcome;
  if (outcome == completion_outcome::succeeded)
    x.result = R"({"url":"s3://out/1.mp4"})";
  else
    x.error = error();
  return x;
}

inline completion_batch completions() {
  completion_batch x;
  x.completions = {done(completion_outcome::succeeded),
                   done(completion_outcome::failed_retryable),
                   done(completion_outcome::failed_permanent),
                   done(completion_outcome::cancelled),
                   done(completion_outcome::timed_out)};
  return x;
}

inline tree_node leaf(std::string name) {
  tree_node x;
  x.name = std::move(name);
  x.kind = child_kind::worker;
  x.state = child_state::restarting;
  x.restart = restart_type::transient;
  x.strat = strategy::one_for_all;
  x.restarts = 4;
  x.uptime_ms = 1234;
  x.last_exit = "error(drover: unavailable)";
  return x;
}

/// Three levels: root supervisor -> two supervisors -> leaves.
inline tree_node tree() {
  tree_node root = leaf("root");
  root.kind = child_kind::supervisor;
  root.state = child_state::running;
  root.restart = restart_type::permanent;
  root.strat = strategy::one_for_one;
  root.restarts = 1;
  root.uptime_ms = 99000;
  for (auto name : {"queue", "workers"}) {
    tree_node mid = leaf(name);
    mid.kind = child_kind::supervisor;
    mid.state = child_state::stopping;
    mid.restart = restart_type::temporary;
    mid.children
        = {leaf(std::string{name} + "-1"), leaf(std::string{name} + "-2")};
    root.children.push_back(std::move(mid));
  }
  return root;
}

/// A chain of `depth` nodes (the root counts as 1).
inline tree_node chain(int depth) {
  tree_node root = leaf("level-0");
  tree_node* current = &root;
  for (int i = 1; i < depth; ++i) {
    current->children.push_back(leaf("level-" + std::to_string(i)));
    current = &current->children.back();
  }
  return root;
}

inline tree_snapshot snapshot() {
  tree_snapshot x;
  x.node_id = "node-a";
  x.taken_at_ms = 1700000004000;
  x.root = tree();
  return x;
}

} // namespace drover::samples
