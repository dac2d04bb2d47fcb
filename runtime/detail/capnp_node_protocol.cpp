// The Cap'n Proto codec of the coordinator <-> worker protocol
// (schemas/node_protocol.capnp, declared in capnp_model.hpp): registration,
// leases, heartbeats, progress and completion batches and the coordinator's
// reply. The job model they carry is in capnp_model.cpp.

#include "runtime/detail/capnp_model.hpp"

#include "runtime/detail/capnp_common.hpp"

#include <string>

namespace drover::detail {

// -- node_protocol.capnp ------------------------------------------------------

void write(schema::ResourceCapacity::Builder out, const resource_capacity& x) {
  if (!x.resource_class.empty())
    out.setResourceClass(as_text(x.resource_class));
  out.setSlots(x.slots);
}

caf::error read(schema::ResourceCapacity::Reader in, resource_capacity& x,
                read_context&) {
  x.resource_class = to_std(in.getResourceClass());
  x.slots = in.getSlots();
  return {};
}

void write(schema::RegisterWorker::Builder out, const register_worker& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  if (!x.worker_id.empty())
    out.setWorkerId(as_text(x.worker_id));
  if (!x.capacity.empty())
    write_list(out.initCapacity(x.capacity.size()), x.capacity);
  if (!x.job_types.empty()) {
    auto types = out.initJobTypes(x.job_types.size());
    for (unsigned i = 0; i < x.job_types.size(); ++i)
      types.set(i, as_text(x.job_types[i]));
  }
  if (!x.role.empty())
    out.setRole(as_text(x.role));
  out.setProtocolMin(x.protocol_min);
  out.setProtocolMax(x.protocol_max);
  if (!x.proof.empty())
    out.setProof(as_data(x.proof));
  if (!x.running.empty())
    write_list(out.initRunning(x.running.size()), x.running);
  out.setDraining(x.draining);
  out.setPrefetch(x.prefetch);
  if (!x.resources.empty())
    write_list(out.initResources(x.resources.size()), x.resources);
  if (!x.elastic.empty())
    write_list(out.initElastic(x.elastic.size()), x.elastic);
  out.setElasticIdleMs(x.elastic_idle_ms);
  if (!x.lent.empty())
    write_list(out.initLent(x.lent.size()), x.lent);
}

caf::error read(schema::RegisterWorker::Reader in, register_worker& x,
                read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.worker_id = to_std(in.getWorkerId());
  DROVER_TRY(
      read_list(in.getCapacity(), x.capacity, "RegisterWorker.capacity", ctx));
  auto types = in.getJobTypes();
  DROVER_TRY(ctx.charge(types.size(), "RegisterWorker.jobTypes"));
  x.job_types.reserve(types.size());
  for (auto type : types)
    x.job_types.push_back(to_std(type));
  x.role = to_std(in.getRole());
  x.protocol_min = in.getProtocolMin();
  x.protocol_max = in.getProtocolMax();
  x.proof = to_std(in.getProof());
  x.draining = in.getDraining();
  x.prefetch = in.getPrefetch();
  DROVER_TRY(read_list(in.getResources(), x.resources,
                       "RegisterWorker.resources", ctx));
  DROVER_TRY(
      read_list(in.getElastic(), x.elastic, "RegisterWorker.elastic", ctx));
  x.elastic_idle_ms = in.getElasticIdleMs();
  DROVER_TRY(read_list(in.getLent(), x.lent, "RegisterWorker.lent", ctx));
  return read_list(in.getRunning(), x.running, "RegisterWorker.running", ctx);
}

void write(schema::Lease::Builder out, const lease& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  write(out.initSpec(), x.spec);
  if (!x.checkpoint.empty())
    out.setCheckpoint(as_data(x.checkpoint));
  out.setLeaseExpiryMs(x.lease_expiry_ms);
  out.setPartitionEpoch(x.partition_epoch);
}

caf::error read(schema::Lease::Reader in, lease& x, read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  DROVER_TRY(read(in.getSpec(), x.spec, ctx));
  x.checkpoint = to_std(in.getCheckpoint());
  x.lease_expiry_ms = in.getLeaseExpiryMs();
  x.partition_epoch = in.getPartitionEpoch();
  return {};
}

void write(schema::LeaseBatch::Builder out, const lease_batch& x) {
  if (!x.leases.empty())
    write_list(out.initLeases(x.leases.size()), x.leases);
}

caf::error read(schema::LeaseBatch::Reader in, lease_batch& x,
                read_context& ctx) {
  return read_list(in.getLeases(), x.leases, "LeaseBatch.leases", ctx);
}

void write(schema::RunningAttempt::Builder out, const running_attempt& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  if (!x.resource_class.empty())
    out.setResourceClass(as_text(x.resource_class));
}

caf::error read(schema::RunningAttempt::Reader in, running_attempt& x,
                read_context&) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  x.resource_class = to_std(in.getResourceClass());
  return {};
}

void write(schema::Heartbeat::Builder out, const heartbeat& x) {
  if (!x.node_id.empty())
    out.setNodeId(as_text(x.node_id));
  out.setAtMs(x.at_ms);
  if (!x.running.empty())
    write_list(out.initRunning(x.running.size()), x.running);
  out.setDraining(x.draining);
  if (!x.unacknowledged.empty())
    write_list(out.initUnacknowledged(x.unacknowledged.size()),
               x.unacknowledged);
  if (!x.lent.empty())
    write_list(out.initLent(x.lent.size()), x.lent);
  if (!x.offered.empty())
    write_list(out.initOffered(x.offered.size()), x.offered);
  if (!x.refused.empty())
    write_list(out.initRefused(x.refused.size()), x.refused);
}

caf::error read(schema::Heartbeat::Reader in, heartbeat& x, read_context& ctx) {
  x.node_id = to_std(in.getNodeId());
  x.at_ms = in.getAtMs();
  x.draining = in.getDraining();
  DROVER_TRY(read_list(in.getUnacknowledged(), x.unacknowledged,
                       "Heartbeat.unacknowledged", ctx));
  DROVER_TRY(read_list(in.getLent(), x.lent, "Heartbeat.lent", ctx));
  DROVER_TRY(read_list(in.getOffered(), x.offered, "Heartbeat.offered", ctx));
  DROVER_TRY(read_list(in.getRefused(), x.refused, "Heartbeat.refused", ctx));
  return read_list(in.getRunning(), x.running, "Heartbeat.running", ctx);
}

void write(schema::ProgressBatch::Builder out, const progress_batch& x) {
  if (!x.updates.empty())
    write_list(out.initUpdates(x.updates.size()), x.updates);
}

caf::error read(schema::ProgressBatch::Reader in, progress_batch& x,
                read_context& ctx) {
  return read_list(in.getUpdates(), x.updates, "ProgressBatch.updates", ctx);
}

void write(schema::Completion::Builder out, const completion& x) {
  if (!x.job_id.empty())
    out.setJobId(as_text(x.job_id));
  out.setAttempt(x.attempt);
  out.setOutcome(to_wire<schema::CompletionOutcome>(x.outcome));
  if (!x.result.empty())
    out.setResult(as_text(x.result));
  if (x.error != error_info{})
    write(out.initError(), x.error);
}

caf::error read(schema::Completion::Reader in, completion& x,
                read_context& ctx) {
  x.job_id = to_std(in.getJobId());
  x.attempt = in.getAttempt();
  DROVER_TRY(read_enum(in.getOutcome(), x.outcome, "Completion.outcome"));
  x.result = to_std(in.getResult());
  return read(in.getError(), x.error, ctx);
}

void write(schema::CompletionBatch::Builder out, const completion_batch& x) {
  if (!x.completions.empty())
    write_list(out.initCompletions(x.completions.size()), x.completions);
}

caf::error read(schema::CompletionBatch::Reader in, completion_batch& x,
                read_context& ctx) {
  return read_list(in.getCompletions(), x.completions,
                   "CompletionBatch.completions", ctx);
}

void write(schema::CoordinatorReply::Builder out, const coordinator_reply& x) {
  out.setProtocol(x.protocol);
  if (!x.challenge.empty())
    out.setChallenge(as_data(x.challenge));
  if (!x.coordinator_id.empty())
    out.setCoordinatorId(as_text(x.coordinator_id));
  out.setLeaseTtlMs(x.lease_ttl_ms);
  out.setHeartbeatIntervalMs(x.heartbeat_interval_ms);
  if (!x.superseded.empty())
    write_list(out.initSuperseded(x.superseded.size()), x.superseded);
  if (!x.settled.empty())
    write_list(out.initSettled(x.settled.size()), x.settled);
  if (!x.handed_over.empty())
    write_list(out.initHandedOver(x.handed_over.size()), x.handed_over);
  if (!x.adopted.empty())
    write_list(out.initAdopted(x.adopted.size()), x.adopted);
  if (!x.owned_elsewhere.empty())
    write_list(out.initOwnedElsewhere(x.owned_elsewhere.size()),
               x.owned_elsewhere);
}

caf::error read(schema::CoordinatorReply::Reader in, coordinator_reply& x,
                read_context& ctx) {
  x.protocol = in.getProtocol();
  x.challenge = to_std(in.getChallenge());
  x.coordinator_id = to_std(in.getCoordinatorId());
  x.lease_ttl_ms = in.getLeaseTtlMs();
  x.heartbeat_interval_ms = in.getHeartbeatIntervalMs();
  DROVER_TRY(read_list(in.getSuperseded(), x.superseded,
                       "CoordinatorReply.superseded", ctx));
  DROVER_TRY(read_list(in.getHandedOver(), x.handed_over,
                       "CoordinatorReply.handedOver", ctx));
  DROVER_TRY(
      read_list(in.getAdopted(), x.adopted, "CoordinatorReply.adopted", ctx));
  DROVER_TRY(read_list(in.getOwnedElsewhere(), x.owned_elsewhere,
                       "CoordinatorReply.ownedElsewhere", ctx));
  return read_list(in.getSettled(), x.settled, "CoordinatorReply.settled", ctx);
}

} // namespace drover::detail
