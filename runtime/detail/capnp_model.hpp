#pragma once

// Private to runtime/codec.cpp: conversions between the model structs and
// their Cap'n Proto builders/readers. Including this header pulls in every
// generated schema header; only the codec should need it. Defined in
// capnp_model.cpp (the job model), capnp_node_protocol.cpp (node protocol)
// and capnp_api.cpp (tree snapshots, the job API); what those share is in
// capnp_common.hpp.
//
// `write(builder, x)` encodes x as is. Pointer fields whose value is the
// default (empty text, empty list, all-default sub-struct) are left unset,
// which decodes to the same default.
//
// `read(reader, x, ctx)` fills a default-constructed x and validates: enum
// values and union members the schema does not know, out-of-range numbers
// and event details that do not match the event kind yield
// errc::invalid_value; list elements beyond the context's budget yield
// errc::too_large. It may throw kj::Exception (malformed input); the caller
// catches.

#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tree.hpp"

#include "schemas/admin.capnp.h"
#include "schemas/job_api.capnp.h"
#include "schemas/job_event.capnp.h"
#include "schemas/job_record.capnp.h"
#include "schemas/job_spec.capnp.h"
#include "schemas/node_protocol.capnp.h"
#include "schemas/progress.capnp.h"

#include <caf/error.hpp>

#include <cstdint>

namespace drover::detail {

/// Per-decode state shared by the read functions.
struct read_context {
  /// List elements the input may still hold. A valid message spends at
  /// least one word per list element (one byte per element in JSON text),
  /// so the budget starts at the input's size in those units; this stops a
  /// tiny message that declares a huge list of empty structs from
  /// allocating millions of default objects.
  uint64_t element_budget;

  /// Charges `n` elements of the list `where`.
  caf::error charge(uint64_t n, const char* where);
};

/// Maps a model type to the schema struct that encodes it.
template <class T>
struct schema_of;

#define DROVER_SCHEMA_OF(model_type, schema_type)                              \
  template <>                                                                  \
  struct schema_of<model_type> {                                               \
    using type = schema::schema_type;                                          \
  };                                                                           \
  void write(schema::schema_type::Builder out, const model_type& x);           \
  caf::error read(schema::schema_type::Reader in, model_type& x,               \
                  read_context& ctx);

DROVER_SCHEMA_OF(backoff_policy, BackoffPolicy)
DROVER_SCHEMA_OF(resource_request, ResourceRequest)
DROVER_SCHEMA_OF(job_spec, JobSpec)
DROVER_SCHEMA_OF(stage, Stage)
DROVER_SCHEMA_OF(progress_update, ProgressUpdate)
DROVER_SCHEMA_OF(error_info, ErrorInfo)
DROVER_SCHEMA_OF(job_record, JobRecord)
DROVER_SCHEMA_OF(webhook_attempt, WebhookAttempt)
DROVER_SCHEMA_OF(job_event, JobEvent)
DROVER_SCHEMA_OF(resource_capacity, ResourceCapacity)
DROVER_SCHEMA_OF(register_worker, RegisterWorker)
DROVER_SCHEMA_OF(lease, Lease)
DROVER_SCHEMA_OF(lease_batch, LeaseBatch)
DROVER_SCHEMA_OF(running_attempt, RunningAttempt)
DROVER_SCHEMA_OF(heartbeat, Heartbeat)
DROVER_SCHEMA_OF(progress_batch, ProgressBatch)
DROVER_SCHEMA_OF(completion, Completion)
DROVER_SCHEMA_OF(completion_batch, CompletionBatch)
DROVER_SCHEMA_OF(coordinator_reply, CoordinatorReply)
DROVER_SCHEMA_OF(tree_node, TreeNode)
DROVER_SCHEMA_OF(tree_snapshot, TreeSnapshot)
DROVER_SCHEMA_OF(submit_request, SubmitRequest)
DROVER_SCHEMA_OF(job_query, JobQuery)
DROVER_SCHEMA_OF(queue_stats, QueueStats)

#undef DROVER_SCHEMA_OF

/// The `details` member an event of kind `x` carries.
schema::JobEvent::Details::Which details_of(event_kind x);

} // namespace drover::detail
