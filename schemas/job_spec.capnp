@0xd06cbf6ea8417268;
# What a client submits: the job specification. Immutable once the job's
# `submitted` event is committed; a retry with the same (tenant, idempotency
# key) must carry an identical spec.
#
# Evolution rules for every Drover schema: ordinals are append-only, fields
# are never renamed in meaning or removed, and a default, once published,
# never changes (Cap'n Proto XORs stored values with it).

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("drover::schema");

enum Priority {
  # Dispatch class. Within a class, older jobs go first (with aging, so low
  # priority work is delayed, never starved).

  high @0;
  # Latency-sensitive work; leased before normal and low.

  normal @1;
  # The default.

  low @2;
  # Bulk or background work; leased when nothing more urgent is ready.
}

struct BackoffPolicy {
  # Delay before retry n (n = 1, 2, ...):
  #   nominal(n) = min(maxDelayMs, initialDelayMs * multiplier^(n-1))
  #   delay(n)   = nominal(n) * (1 - jitter * U[0,1))
  # Jitter only shortens a delay: every delay is at least
  # (1 - jitter) * nominal(n), which is the minimum tests may check.

  initialDelayMs @0 :Int64 = 1000;
  # Delay before the first retry, in milliseconds. Must be >= 0.

  maxDelayMs @1 :Int64 = 300000;
  # Upper bound on any single delay, in milliseconds. Must be >= 0.

  multiplier @2 :Float64 = 2.0;
  # Growth factor between consecutive delays. Finite and >= 1.0 (1.0 means a
  # constant delay).

  jitter @3 :Float64 = 0.2;
  # Fraction of each delay that is randomised away, in [0, 1]. 0 disables
  # jitter.
}

struct ResourceRequest {
  # One resource a job attempt needs while it runs, e.g. ("gpu", 1).

  name @0 :Text;
  # Resource class, matched against the classes workers advertise
  # (RegisterWorker.capacity.resourceClass).

  amount @1 :UInt32 = 1;
  # Slots of that class one attempt occupies.
}

struct JobSpec {
  # A job as submitted.

  type @0 :Text;
  # Job type; selects the handler a worker runs (e.g. "video.transcode").

  input @1 :Text;
  # The handler's input: JSON text (any JSON value), stored verbatim so
  # binary round trips are exact. Drover's JSON codec embeds it as a JSON
  # value (not a quoted string). Empty = no input.

  priority @2 :Priority = normal;
  # Dispatch class.

  runAtMs @3 :Int64;
  # Earliest start, Unix time in milliseconds. 0 (or any time in the past)
  # means as soon as possible; a future time makes the job `scheduled`.

  maxAttempts @4 :UInt32 = 3;
  # Total attempts allowed, the first one included. Must be >= 1.

  backoff @5 :BackoffPolicy;
  # Delays between attempts. Absent means the BackoffPolicy defaults.

  timeoutMs @6 :Int64;
  # Per-attempt time limit in milliseconds; an attempt running longer is
  # stopped and counts as a retryable failure. 0 = no limit (the lease still
  # guards against lost workers). Must be >= 0.

  idempotencyKey @7 :Text;
  # Client-chosen key; the same (tenant, key) and the same spec always yield
  # the same job id. Empty = no deduplication.

  tenant @8 :Text;
  # Owning tenant (account, user or API key scope). Jobs of other tenants
  # are invisible.

  resources @9 :List(ResourceRequest);
  # Resources one attempt occupies. Empty = one slot of the default class.

  callbackUrl @10 :Text;
  # Webhook notified when the job reaches a terminal status. Empty = none.

  rateLimitKey @11 :Text;
  # Jobs sharing this key share one rate limiter. Empty = not rate limited.

  breakerKey @12 :Text;
  # Jobs sharing this key share one circuit breaker (e.g. the downstream
  # service they call). Empty = no breaker.

  concurrencyKey @13 :Text;
  # The job's own concurrency key, within its tenant ("user:42"): at most
  # concurrencyLimit attempts of jobs naming it run at once, across the
  # cluster. Empty = none (its type's limit, if any, still holds).

  concurrencyLimit @14 :UInt32;
  # With concurrencyKey: 1 to 1,000,000. Without it: 0.

  extraRateLimitKeys @15 :List(Text);
  # Rate limiters after rateLimitKey (at most 3, none repeated): the job
  # takes a token of each. Empty without rateLimitKey.
}
