@0xed83388e2540a83d;
# The current state of one job: what replaying its events produces, what
# the store returns and what the HTTP API shows.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");
using Json = import "/capnp/compat/json.capnp";
using JobSpec = import "job_spec.capnp".JobSpec;
using Stage = import "progress.capnp".Stage;

enum JobStatus {
  # queued -> processing -> completed; processing -> retrying -> queued;
  # processing -> failed (dead-letter queue, can be redriven);
  # any non-terminal status -> cancelled. Terminal: completed, failed,
  # cancelled (a failed job may only be redriven, which starts it anew).

  queued @0;
  # Ready to run, waiting for a worker slot.

  scheduled @1;
  # Waiting for its run time (JobSpec.runAtMs in the future).

  processing @2;
  # Leased to a worker; an attempt is running.

  retrying @3;
  # An attempt failed; waiting out the backoff until `retryAtMs`.

  completed @4;
  # Finished successfully; `result` holds the output. Terminal.

  failed @5;
  # Failed for good (non-retryable error or attempts exhausted); listed in
  # the dead-letter queue. Terminal unless redriven.

  cancelled @6;
  # Cancelled on request. Terminal.
}

struct ErrorInfo {
  # Why an attempt or a job failed.

  code @0 :Text;
  # Short machine-readable code, e.g. "timeout", "http_503", "lease_expired".

  message @1 :Text;
  # Human-readable description.

  retryable @2 :Bool;
  # True if another attempt may succeed.
}

struct JobRecord {
  # `tenant` and `type` live in `spec` (one copy of each).

  jobId @0 :Text;
  # Cluster-unique job id.

  status @1 :JobStatus;
  # Current status.

  spec @2 :JobSpec;
  # The submitted specification, input included.

  attempt @3 :UInt32;
  # Number of the current (or last) attempt; 0 = never started. Strictly
  # increasing over the job's life, redrives included: it is the fencing
  # token that rejects messages from superseded attempts.

  retryCount @4 :UInt32;
  # Retries scheduled since submission or the last redrive.

  progress @5 :Float64;
  # Overall completion of the current attempt, 0 to 100.

  createdAtMs @6 :Int64;
  # Submission time (commit of `submitted`), Unix ms.

  startedAtMs @7 :Int64;
  # Start of the current (or last) attempt, Unix ms; 0 = never started.

  completedAtMs @8 :Int64;
  # When the job reached a terminal status, Unix ms; 0 = not terminal.

  retryAtMs @9 :Int64;
  # While `retrying`: when the next attempt becomes ready, Unix ms; else 0.

  workerId @10 :Text;
  # Worker running (or that last ran) the job; empty = none yet.

  leaseExpiryMs @11 :Int64;
  # While `processing`: when the attempt's lease lapses unless renewed by a
  # heartbeat, Unix ms; else 0.

  result @12 :Text;
  # Output of a completed job: JSON text, embedded as JSON by the JSON
  # codec. Empty = none.

  error @13 :ErrorInfo;
  # Last error (of the last failed attempt); absent = none.

  stages @14 :List(Stage);
  # The job's named stages, as last reported.

  etaMs @15 :Int64 = -1;
  # Estimated time remaining, ms, as last reported; -1 = unknown.

  checkpoint @16 :Data $Json.base64;
  # Last committed checkpoint (opaque); empty = none.

  checkpointAttempt @17 :UInt32;
  # Attempt that wrote `checkpoint`; 0 = none.

  cancelRequested @18 :Bool;
  # True once cancellation of a `processing` job was requested and the
  # worker has not yet confirmed it.

  sequence @19 :UInt64;
  # Sequence number of the last event applied to this record (events of a
  # job are numbered 1, 2, ... without gaps).

  deadLettered @20 :Bool;
  # True while a failed job sits in the dead-letter queue (set by the
  # deadLettered event, cleared by redriven or purged).

  webhookPendingSequence @21 :UInt64;
  # The webhook the job still owes: the sequence of its terminal event
  # (completed, failed, cancelled) when the spec has a callbackUrl and no
  # webhookAttempted event with a final outcome (delivered, failed,
  # disabled) for that terminal event was recorded yet. 0 = none owed. A
  # redrive clears it (the next terminal event owes a new one). What a node
  # resumes webhook deliveries from after a restart.

  lostCount @22 :UInt32;
  # Attempts lost since submission or the last redrive: the worker died,
  # its lease lapsed, or its coordinator stopped. They do not count
  # against maxAttempts; a separate cap stops a job that loses every
  # worker it touches.

  lastLostAttempt @23 :UInt32;
  # The last attempt that was lost (0 = none): a retryScheduled for this
  # attempt does not count against maxAttempts.

  waitingFor @24 :Text;
  # In answers only (never stored, not part of the history): why a queued
  # job does not run, e.g. no connected worker runs its resource class and
  # job type. Empty = nothing in its way but the queue ahead of it.
}
