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
