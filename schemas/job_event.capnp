@0x9a9708df81b98024;
# The audit log: one JobEvent per state transition (and per progress or
# checkpoint commit, and per webhook delivery attempt). A job's events are
# numbered 1, 2, ... without gaps; replaying them reproduces its JobRecord.
# Events are never updated or deleted.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");
using Json = import "/capnp/compat/json.capnp";
using JobSpec = import "job_spec.capnp".JobSpec;
using ErrorInfo = import "job_record.capnp".ErrorInfo;
using ProgressUpdate = import "progress.capnp".ProgressUpdate;

enum EventKind {
  # What happened. Each kind names the `details` member it carries.

  submitted @0;
  # Accepted and durable; status -> queued, or scheduled if the spec's
  # runAtMs is in the future. Details: spec.

  scheduled @1;
  # The job's run time was (re)set, e.g. delayed by an operator;
  # status -> scheduled. Details: runAtMs.

  queued @2;
  # A scheduled job's run time, or a retrying job's backoff, elapsed;
  # status -> queued. Details: none.

  started @3;
  # A worker began attempt `attempt`; status -> processing. Details: lease.

  progressed @4;
  # Progress of the running attempt was committed (at a bounded rate, not
  # every report). Details: progress.

  checkpointed @5;
  # A checkpoint of the running attempt was committed. Details: checkpoint.

  retryScheduled @6;
  # The attempt failed and another is allowed; status -> retrying.
  # Details: retry.

  completed @7;
  # The attempt succeeded; status -> completed (terminal). Details: result.

  failed @8;
  # The job failed for good: a non-retryable error, or no attempts left;
  # status -> failed (terminal unless redriven). Details: error, whose
  # message says why no retry follows.

  deadLettered @9;
  # The failed job entered the dead-letter queue. Written right after
  # `failed`, in the same commit, exactly once per failure; status stays
  # failed. Details: error (the same as `failed`'s).

  cancelRequested @10;
  # Cancellation of a processing job was requested; the worker is told to
  # stop and status stays processing until it confirms. Details: reason.

  cancelled @11;
  # The job was cancelled; status -> cancelled (terminal). Details: reason.

  redriven @12;
  # A failed job was taken out of the dead-letter queue; status -> queued
  # with a fresh attempt budget (attempt numbers keep increasing).
  # Details: reason.

  leaseExpired @13;
  # The attempt's lease lapsed without a heartbeat; the attempt is
  # abandoned (status unchanged) and the events that follow in the same
  # commit (retryScheduled, or failed + deadLettered) set the status.
  # Details: lease (the expired lease).

  workerLost @14;
  # The node running the attempt went down (CAF monitor); handled like
  # leaseExpired, only sooner. Details: lease (the lost lease).

  purged @15;
  # A failed job was removed from the dead-letter queue without a redrive;
  # status stays failed, for good. Details: reason.

  webhookAttempted @16;
  # One delivery attempt of the job's webhook (its callbackUrl, notified of
  # a terminal status) ended, or a delivery was given up without a request
  # (attemptNumber 0). Legal in every status once the job exists (a
  # delivery may still be running when a failed job is redriven); changes
  # neither the status nor whether the job is terminal. A final outcome
  # (delivered, failed, disabled) for the terminal event the record still
  # owes a webhook (JobRecord.webhookPendingSequence) clears that debt.
  # Recorded with `attempt` = the job's attempt at the terminal event.
  # Details: webhook.

  reportRejected @17;
  # A report from a superseded attempt (a worker that woke up after its
  # lease lapsed and the job was leased again) was refused: its progress,
  # checkpoint or outcome was never applied. Legal in every status; changes
  # nothing. `attempt` is the superseded attempt. Details: reason.
}

enum WebhookOutcome {
  # What a webhook delivery attempt led to.

  delivered @0;
  # The endpoint answered 2xx: done (final).

  retrying @1;
  # The attempt failed (no answer, timeout, a redirect, an answer other
  # than 2xx or 410, a body over the size limit); another attempt follows
  # at nextAttemptAtMs.

  failed @2;
  # Given up (final): the retry period is over, or the URL was refused
  # (unparseable, or it resolves to an address the policy forbids).

  disabled @3;
  # The endpoint answered 410 Gone, or an earlier delivery to the same URL
  # did: the endpoint is disabled and not attempted again (final).
}

struct WebhookAttempt {
  # One webhook delivery attempt (gateway/webhook.hpp, docs/webhooks.md).

  url @0 :Text;
  # The callback URL, as submitted.

  webhookId @1 :Text;
  # The `webhook-id` header: "<jobId>.<terminalSequence>", the same for
  # every attempt of one delivery.

  attemptNumber @2 :UInt32;
  # 1 for the first attempt of this delivery, 2 for the second, ...; 0 =
  # no request was sent (e.g. the endpoint was already disabled).

  statusCode @3 :UInt16;
  # HTTP status of the answer; 0 = no answer (refused URL, connection or
  # TLS failure, timeout). Otherwise within [100, 599].

  error @4 :Text;
  # Why the attempt did not deliver; empty when delivered.

  outcome @5 :WebhookOutcome;
  # What the attempt led to.

  atMs @6 :Int64;
  # When the attempt started, Unix ms (its webhook-timestamp, in ms).

  nextAttemptAtMs @7 :Int64;
  # For retrying: when the next attempt starts, Unix ms; else 0.

  terminalSequence @8 :UInt64;
  # Sequence of the terminal event (completed, failed or cancelled) this
  # delivery reports.
}

struct LeaseInfo {
  # Who holds (or held) an attempt.

  workerId @0 :Text;
  # The worker running the attempt.

  leaseExpiryMs @1 :Int64;
  # When the lease lapses (or lapsed) unless renewed, Unix ms.
}

struct RetryInfo {
  # Why an attempt failed and when the next one starts.

  error @0 :ErrorInfo;
  # The failed attempt's error.

  nextAttemptAtMs @1 :Int64;
  # When the next attempt becomes ready, Unix ms (now + backoff).
}

struct JobEvent {
  # One audit-log entry.

  jobId @0 :Text;
  # The job.

  sequence @1 :UInt64;
  # Position in the job's event log, from 1, without gaps.

  attempt @2 :UInt32;
  # The job's attempt number when the event happened (0 before the first
  # start).

  atMs @3 :Int64;
  # When the event was recorded by the coordinator, Unix ms.

  kind @4 :EventKind;
  # What happened; decides which `details` member is set.

  details :union {
    # Kind-specific data. Decoders reject an event whose member does not
    # match its kind.

    none @5 :Void;
    # For queued.

    spec @6 :JobSpec;
    # For submitted: the accepted specification.

    runAtMs @7 :Int64;
    # For scheduled: the new run time, Unix ms.

    lease @8 :LeaseInfo;
    # For started, leaseExpired and workerLost.

    progress @9 :ProgressUpdate;
    # For progressed: the committed progress.

    checkpoint @10 :Data $Json.base64;
    # For checkpointed: the committed checkpoint (opaque).

    retry @11 :RetryInfo;
    # For retryScheduled.

    result @12 :Text;
    # For completed: the job's output, JSON text (embedded as JSON by the
    # JSON codec); empty = no output.

    error @13 :ErrorInfo;
    # For failed and deadLettered: the final error.

    reason @14 :Text;
    # For cancelRequested, cancelled, redriven and purged: who asked and why
    # (free text); may be empty.

    webhook @15 :WebhookAttempt;
    # For webhookAttempted.
  }
}
