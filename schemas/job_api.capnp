@0xe7f141cded434ccd;
# Requests and answers of the job API that are not part of the job model:
# submissions, list queries and queue statistics. Mirrors
# drover::submit_request (runtime/submit.hpp), drover::job_query and
# drover::queue_stats (runtime/job_api.hpp). The JSON forms of SubmitRequest
# and JobQuery are the HTTP API's request bodies.
#
# Optional values ("unset = the default") are groups of the form
#
#   name :union {
#     unset @n :Void;     # discriminant 0, what a zeroed message reads as
#     value @m :T;
#   }
#
# rather than a `hasName :Bool` flag beside a plain field, because
# - presence and value can't disagree (a flag can be false while a value is
#   set, and a reader then has to guess which one wins), and unset needs no
#   sentinel value, for pointer types too (empty runAt text is a value);
# - it is the Cap'n Proto idiom for "optional", and a newer writer may add a
#   third member later;
# - in JSON the codec (runtime/codec.hpp) writes such a group as the plain
#   field `"name": <value>` when set and leaves it out when unset, and reads
#   an absent field or `null` as unset. So the HTTP body of a submission is
#   just `{"type":"exec","priority":"high"}`, with no `hasPriority` beside
#   it, and a client that omits a field gets the job type's default.
# Ordinals are append-only (see job_spec.capnp for the evolution rules).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");
using Priority = import "job_spec.capnp".Priority;
using BackoffPolicy = import "job_spec.capnp".BackoffPolicy;
using ResourceRequest = import "job_spec.capnp".ResourceRequest;
using JobStatus = import "job_record.capnp".JobStatus;

struct SubmitRequest {
  # What a client asks for. The node validates it against the registered job
  # types and its limits (runtime/submit.hpp: prepare_spec), fills in the
  # type's defaults for unset members and stores the resulting JobSpec. The
  # codec checks types and enum values only; range and consistency checks
  # (maxAttempts >= 1, runAt xor delayMs, key lengths...) are prepare_spec's,
  # which answers with a specific error.

  type @0 :Text;
  # Required: a registered job type, e.g. "exec".

  input @1 :Text;
  # The handler's input: JSON text (any JSON value), embedded as a JSON value
  # in the JSON form, as JobSpec.input. Empty (JSON: absent or null) = no
  # input.

  priority :union {
    # Dispatch class. JSON: the enumerant name, "high", "normal" or "low".

    unset @2 :Void;
    # Not given: the job type's default (normal).

    value @3 :Priority;
    # The requested class. The C++ struct holds it as an int32; one outside
    # high..low is written as a value Priority doesn't have, so reading it
    # back fails (invalid_value) instead of changing it.
  }

  runAt :union {
    # Earliest start as an RFC 3339 time ("2026-12-01T10:00:00Z"; fractional
    # seconds and numeric offsets accepted). Mutually exclusive with delayMs.

    unset @4 :Void;
    # Not given: no start time (see delayMs).

    value @5 :Text;
    # The time as the client wrote it; parsed by the node.
  }

  delayMs :union {
    # Earliest start relative to submission. Mutually exclusive with runAt.

    unset @6 :Void;
    # Not given: as soon as possible (unless runAt is set).

    value @7 :Int64;
    # Milliseconds after submission; must be >= 0. JSON: a number or a
    # decimal string.
  }

  maxAttempts :union {
    # Total attempts allowed, the first one included.

    unset @8 :Void;
    # Not given: the job type's retry policy.

    value @9 :Int32;
    # Must be >= 1 and within the node's limit.
  }

  timeoutMs :union {
    # Per-attempt time limit.

    unset @10 :Void;
    # Not given: the job type's timeout.

    value @11 :Int64;
    # Milliseconds; must be > 0 and within the node's limit. JSON: a number
    # or a decimal string.
  }

  idempotencyKey @12 :Text;
  # Client-chosen deduplication key, as JobSpec.idempotencyKey. Empty = none.

  tenant @13 :Text;
  # Owning tenant, as JobSpec.tenant.

  callbackUrl @14 :Text;
  # http(s) URL notified when the job reaches a terminal status. Empty = none.

  resources @15 :List(ResourceRequest);
  # Overrides the job type's resource class; at most one entry for now.
  # Empty = the type's class.

  backoff :union {
    # Delays between attempts.

    unset @16 :Void;
    # Not given: the job type's retry policy.

    value @17 :BackoffPolicy;
    # The requested policy (its members have the BackoffPolicy defaults when
    # left out).
  }

  rateLimitKey @18 :Text;
  # Jobs sharing this key share one rate limiter. Empty = not rate limited.

  breakerKey @19 :Text;
  # Jobs sharing this key share one circuit breaker. Empty = no breaker.

  concurrencyKey @20 :Text;
  # The job's own concurrency key within its tenant. Empty = none.

  concurrencyLimit :union {
    # With concurrencyKey: attempts of the key running at once (1 to
    # 1,000,000). Carried as given (Int64) so that prepare_spec refuses a
    # wrong value by its value.

    unset @21 :Void;
    # Not given: 1 with a key.

    value @22 :Int64;
  }

  rateLimitKeys @23 :List(Text);
  # Instead of rateLimitKey: up to four rate limiters, a token of each.
}

struct JobQuery {
  # Filter and page for listing jobs. The store checks the page size.

  status :union {
    # Only jobs in this status. JSON: the enumerant name, e.g. "failed".

    unset @0 :Void;
    # Not given: any status (-1 in the C++ struct).

    value @1 :JobStatus;
    # The status. The C++ struct holds it as an int32; one that is neither
    # -1 nor a JobStatus is written as a value JobStatus doesn't have, so
    # reading it back fails (invalid_value).
  }

  deadLettered @2 :Bool;
  # Only jobs currently in the dead-letter queue.

  tenant @3 :Text;
  # Only this tenant's jobs. Empty = all tenants.

  type @4 :Text;
  # Only this job type. Empty = all types.

  after @5 :Text;
  # Page: jobs with an id greater than this. Empty = from the start.

  limit @6 :UInt32 = 100;
  # Page size; the store accepts [1, 10000].
}

struct PriorityCounts {
  # A counter per dispatch class (Priority).

  high @0 :UInt64;
  # For high-priority jobs.

  normal @1 :UInt64;
  # For normal-priority jobs.

  low @2 :UInt64;
  # For low-priority jobs.
}

struct PriorityAges {
  # A duration per dispatch class (Priority), in milliseconds, each >= 0.

  high @0 :Int64;
  # For high-priority jobs.

  normal @1 :Int64;
  # For normal-priority jobs.

  low @2 :Int64;
  # For low-priority jobs.
}

struct QueueStats {
  # A node's queue figures at one moment. Counters run since the queue
  # started.

  depth @0 :PriorityCounts;
  # Jobs ready to run, per priority. Absent = all 0.

  oldestAgeMs @1 :PriorityAges;
  # Age of the oldest ready job per priority; 0 when there is none. Absent
  # = all 0.

  dispatched @2 :PriorityCounts;
  # Jobs started (leased to a worker) per priority. Absent = all 0.

  delayed @3 :UInt64;
  # Scheduled jobs and retries waiting for their time.

  running @4 :UInt64;
  # Attempts currently leased to workers.

  idleWorkers @5 :UInt64;
  # Workers waiting for work.

  completed @6 :UInt64;
  # Jobs that completed successfully.

  failed @7 :UInt64;
  # Jobs that failed for good (moved to the dead-letter queue).

  cancelled @8 :UInt64;
  # Jobs cancelled.

  retried @9 :UInt64;
  # Retries scheduled after failed attempts.

  sinceMs @10 :Int64;
  # Unix ms when the counters above (dispatched, completed, failed,
  # cancelled, retried) started: the queue's start. They restart from 0
  # when the queue restarts (node restart, or a restart of its job system),
  # as Prometheus counters do; totals over all time come from the store.

  admissionInFlight @11 :UInt64;
  # Submissions sent to the store and not answered yet (admission control,
  # docs/jobs.md).

  admissionMemoryBytes @12 :UInt64;
  # Estimated memory of queued work: waiting jobs and submissions in flight.

  admissionMemoryLimitBytes @13 :UInt64;
  # The node's bound on it; 0 = none.

  admissionRefused @14 :UInt64;
  # Submissions refused by admission control since the queue started.

  startLatency @15 :Histogram;
  # How long jobs waited ready before an attempt started.

  runTime @16 :Histogram;
  # How long attempts ran until their outcome was recorded.

  byType @17 :List(TypeFigures);
  # Per resource class and job type (at most 10,000 entries).

  byPartition @18 :List(PartitionFigures);
  # Per partition with a job waiting or running, by partition.
}

struct Histogram {
  # Observations of a duration: one count per bucket (not cumulative), the
  # buckets' upper bounds in ms being runtime/job_api.hpp's
  # latency_bounds_ms and +Inf last; empty = none yet.
  counts @0 :List(UInt64);
  sumMs @1 :UInt64;
}

struct PartitionFigures {
  partition @0 :Int32;
  waiting @1 :UInt64;
  # Jobs waiting and submissions in flight.
  running @2 :UInt64;
}

struct TypeFigures {
  resourceClass @0 :Text;
  jobType @1 :Text;
  ready @2 :UInt64;
  delayed @3 :UInt64;
  running @4 :UInt64;
  oldestAgeMs @5 :Int64;
  dispatched @6 :UInt64;
  completed @7 :UInt64;
  arrivalsPerSecond @8 :Float64;
  completionsPerSecond @9 :Float64;
  meanRunMs @10 :Float64;
  # Scaling signals (runtime/scaling.hpp).
  recommendedSlots @11 :UInt64;
}
