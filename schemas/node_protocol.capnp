@0xbd6fe44fb2daeb6e;
# Coordinator <-> worker node protocol. Workers register their capacity,
# coordinators push leases (credit-based: never more than the free slots),
# workers send heartbeats, progress and completions back, in batches.
# Everything a worker sends carries the attempt number it was leased, so
# messages from superseded attempts are rejected.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");
using Json = import "/capnp/compat/json.capnp";
using JobSpec = import "job_spec.capnp".JobSpec;
using ResourceRequest = import "job_spec.capnp".ResourceRequest;
using ErrorInfo = import "job_record.capnp".ErrorInfo;
using ProgressUpdate = import "progress.capnp".ProgressUpdate;

struct ResourceCapacity {
  # Slots a worker offers for one resource class.

  resourceClass @0 :Text;
  # Resource class name (matches ResourceRequest.name in job specs).

  slots @1 :UInt32;
  # Attempts of this class the worker runs at once.
}

struct RegisterWorker {
  # Sent by a worker when it connects (and again after reconnecting).

  nodeId @0 :Text;
  # The worker's node.

  workerId @1 :Text;
  # The worker (pool) on that node; unique within the cluster.

  capacity @2 :List(ResourceCapacity);
  # What it can run at once, per resource class.

  jobTypes @3 :List(Text);
  # Job types it has handlers for.

  role @4 :Text;
  # What the connecting node joins as: "worker" or "gateway".

  protocolMin @5 :UInt32;
  protocolMax @6 :UInt32;
  # The node-protocol versions the sender speaks (inclusive range).

  proof @7 :Data $Json.base64;
  # HMAC-SHA256 over the coordinator's challenge (see docs/cluster.md);
  # empty in the hello that asks for the challenge.

  running @8 :List(RunningAttempt);
  # Attempts the worker is running when it (re)joins: a coordinator that
  # still holds their leases keeps them; the others are superseded.

  draining @9 :Bool;
  # The worker takes no new leases (it is shutting down).

  prefetch @10 :UInt32;
  # Leases per resource class the worker buffers beyond its slots, so the
  # next attempt starts without a round trip (0 = none).

  resources @11 :List(ResourceRequest);
  # Resource pools its attempts draw from (--resources), sorted by name:
  # a job's resources after its slot class. Empty = none.

  elastic @12 :List(ResourceCapacity);
  # Elastic mode (--elastic-slots): per class, the slots it starts at; the
  # coordinator offers more, up to `capacity`, while jobs wait for them.

  elasticIdleMs @13 :UInt32;
  # How long an elastic slot stays unused before it is withdrawn.

  lent @14 :List(RunningAttempt);
  # Attempts this coordinator handed over (CoordinatorReply.handedOver)
  # that still run on the node's slots of its share, with their resource
  # class (as in Heartbeat.lent): a coordinator that restarted meanwhile
  # keeps those slots taken until they are no longer listed, instead of
  # booking jobs onto them.
}

struct Lease {
  # One attempt handed to a worker.

  jobId @0 :Text;
  # The job.

  attempt @1 :UInt32;
  # The attempt number: the fencing token the worker echoes back.

  spec @2 :JobSpec;
  # What to run.

  checkpoint @3 :Data $Json.base64;
  # Last committed checkpoint to resume from; empty = start fresh.

  leaseExpiryMs @4 :Int64;
  # When the lease lapses unless a heartbeat renews it, Unix ms.

  partitionEpoch @5 :Int64;
  # The epoch at which the sending coordinator holds the job's partition
  # lease; a worker node refuses a lease of a partition older than one it
  # was sent before (a deposed coordinator's). 0 = none (no partition
  # leases, or a coordinator from before this field).
}

struct LeaseBatch {
  # Leases pushed to one worker in one message.

  leases @0 :List(Lease);
  # The leases, oldest first.
}

struct RunningAttempt {
  # An attempt a worker is running.

  jobId @0 :Text;
  # The job.

  attempt @1 :UInt32;
  # Its attempt number.

  resourceClass @2 :Text;
  # The slot class it occupies (in joins; empty elsewhere).
}

struct Heartbeat {
  # Sent periodically by each worker node; renews the leases it lists.

  nodeId @0 :Text;
  # The sending node.

  atMs @1 :Int64;
  # Sender's clock, Unix ms (diagnostics only; expiry uses the
  # coordinator's clock).

  running @2 :List(RunningAttempt);
  # Attempts it is running right now.

  draining @3 :Bool;
  # The worker takes no new leases (SIGTERM: it is draining).

  unacknowledged @4 :List(RunningAttempt);
  # Completions still in the worker's outbox (sent, not yet acknowledged).

  lent @5 :List(RunningAttempt);
  # Attempts this coordinator handed over (CoordinatorReply.handedOver)
  # that still run on the node's slots: their slots stay taken here until
  # they are no longer listed.

  offered @6 :List(RunningAttempt);
  # Attempts another coordinator of the node handed over, still running
  # here and not yet taken by anyone (with their resource class): the
  # coordinator that owns their partition adopts them
  # (CoordinatorReply.adopted); the others ignore them.

  refused @7 :List(RunningAttempt);
  # Leases from this coordinator the node refused since its last
  # heartbeat, for their stale partition epoch (the partition was leased
  # there at a newer epoch: this coordinator has been deposed). Not run:
  # their slots are free again and the attempts lost.
}

struct CoordinatorReply {
  # The coordinator's answer to a hello, a join, a heartbeat or a report.

  protocol @0 :UInt32;
  # The node-protocol version both sides use (hello, join).

  challenge @1 :Data $Json.base64;
  # Hello: the one-time nonce the join must prove knowledge of the secret
  # over.

  coordinatorId @2 :Text;
  # The coordinator's node id.

  leaseTtlMs @3 :Int64;
  # How long an attempt's lease lasts without a heartbeat.

  heartbeatIntervalMs @4 :Int64;
  # How often the worker sends a heartbeat.

  superseded @5 :List(RunningAttempt);
  # Attempts the worker must stop: their leases lapsed and the jobs were
  # leased again (or they are unknown to the coordinator).

  settled @6 :List(RunningAttempt);
  # Completions whose outcome is committed (or refused for good): the
  # worker drops them from its outbox.

  handedOver @7 :List(RunningAttempt);
  # Attempts whose partition this coordinator handed to another: the
  # worker keeps running them, reports nothing more of them here, and
  # offers them to its other coordinators (Heartbeat.offered).

  adopted @8 :List(RunningAttempt);
  # Offered attempts this coordinator took over: the worker reports them
  # here from now on.

  ownedElsewhere @9 :List(RunningAttempt);
  # Running attempts the worker reported here after its coordinator died
  # whose partitions another coordinator took: like handedOver (kept
  # running, offered to the worker's other coordinators), but stopped if
  # nobody claims them within a few heartbeats, because their new owner
  # has been waiting for them since it took the partition.
}

struct ProgressBatch {
  # Progress reports coalesced by a worker node (newest per attempt).

  updates @0 :List(ProgressUpdate);
  # The updates.
}

enum CompletionOutcome {
  # How an attempt ended, as the worker saw it.

  succeeded @0;
  # The handler returned a result.

  failedRetryable @1;
  # The handler failed; another attempt may succeed.

  failedPermanent @2;
  # The handler failed; retrying is pointless.

  cancelled @3;
  # The attempt stopped because cancellation was requested.

  timedOut @4;
  # The attempt exceeded JobSpec.timeoutMs and was stopped (retryable).
}

struct Completion {
  # The end of one attempt.

  jobId @0 :Text;
  # The job.

  attempt @1 :UInt32;
  # The attempt (fencing token).

  outcome @2 :CompletionOutcome;
  # How it ended.

  result @3 :Text;
  # For succeeded: the output, JSON text (embedded as JSON by the JSON
  # codec); empty = no output.

  error @4 :ErrorInfo;
  # For the failure outcomes: what went wrong; absent otherwise.
}

struct CompletionBatch {
  # Completions sent by a worker node in one message.

  completions @0 :List(Completion);
  # The completions.
}
