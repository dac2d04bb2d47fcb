#pragma once

// Encoding of Drover's model (runtime/model.hpp, runtime/tree.hpp) and of
// the job API's requests and answers (runtime/submit.hpp,
// runtime/job_api.hpp) as Cap'n Proto bytes (schemas/*.capnp) and as JSON
// derived from the same schemas.
//
// Contract:
// - Encoding never fails on valid model values: `to_bytes` and `to_json`
//   encode the value as it is (they do not validate it).
// - Decoding never throws. Input is untrusted: it is checked against
//   `decode_limits` first, read with explicit Cap'n Proto reader limits, and
//   validated (enum values, ranges, event details); any problem is a
//   `caf::error` in the "drover" category:
//     too_large      input above max_bytes, traversal limit exceeded, or
//                    lists claiming more elements than the input can hold
//     truncated      input shorter than the message it announces (bytes),
//                    or JSON text that ends early
//     malformed      not a valid message, bytes past the message's end,
//                    not valid JSON, a JSON value of the wrong type
//     too_deep       nesting beyond nesting_limit / max_json_depth
//     invalid_value  unknown enum value, a number out of its type's or its
//                    field's range, event details not matching the kind
//   The error's context names the cause (for Cap'n Proto and JSON problems,
//   the library's own description).
// - Bytes are a flat, unpacked Cap'n Proto message (segment table included,
//   as `capnp::messageToFlatArray` writes it). The root struct is the schema
//   struct of the same name: job_spec <-> JobSpec, tree_node <-> TreeNode...
// - JSON uses the schema's camelCase field and enumerant names. Enums are
//   names only (a number is a type error). As with any Cap'n Proto JSON,
//   64-bit integers are written as strings ("1700000000000") and read from
//   strings or numbers; Float64 NaN/Infinity are strings. JSON payload
//   fields (input, result) are embedded as JSON values, not quoted, and JSON
//   null means "no payload" (empty string); numbers inside payloads pass
//   through doubles, so integers beyond 2^53 lose precision in JSON (never
//   in bytes, which hold the payload text verbatim). Opaque bytes
//   (checkpoints) are base64 strings. Unknown fields are ignored (newer
//   clients may send fields this version does not know).
// - JSON string escapes are decoded correctly, \uXXXX included: Cap'n Proto
//   0.9.2 misreads escapes with hex letters, so every input is repaired
//   first (runtime/json_text.hpp). A surrogate pair becomes its code point;
//   an unpaired surrogate becomes U+FFFD (never an error).
// - Optional members (schemas/job_api.capnp: a group holding
//   `union { unset :Void; value :T; }`, as in SubmitRequest and JobQuery)
//   are plain fields in JSON: `"priority": "high"` when set, left out when
//   unset; an absent field or JSON null reads as unset. This applies to the
//   members of the encoded struct itself, which is how the API uses them.
// - submit_request.priority and job_query.status are int32 in C++ and
//   enums on the wire: a value outside the enum (other than job_query's -1,
//   "any") is encoded as one the enum doesn't have, so decoding it is
//   invalid_value (bytes) rather than a silently different value; in JSON
//   it is written as a number, which, as for every enum, reads as malformed.
//
// Cap'n Proto and KJ stay out of this header on purpose: most translation
// units only need the signatures.

#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/submit.hpp"
#include "runtime/tree.hpp"

#include <caf/expected.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace drover {

/// Limits applied to untrusted input. The defaults suit messages between
/// nodes and HTTP request bodies; raise them explicitly where more is needed.
struct decode_limits {
  /// Largest accepted input in bytes, binary or JSON text: 16 MiB. Checked
  /// before anything else is done with the input.
  size_t max_bytes = size_t{16} << 20;

  /// Cap'n Proto traversal limit in 8-byte words: how much data one decode
  /// may visit, counting repeated visits (guards against amplification by
  /// overlapping pointers). 8 Mi words = 64 MiB = 4x max_bytes, so a valid
  /// message at max_bytes can always be read completely.
  uint64_t traversal_limit_words = uint64_t{8} << 20;

  /// Cap'n Proto pointer nesting limit (the library default). A tree_node
  /// level costs two (the node and its children list), so trees up to ~30
  /// levels deep decode.
  int nesting_limit = 64;

  /// Deepest JSON nesting of objects and arrays, embedded payloads (job
  /// input, result) included.
  size_t max_json_depth = 64;
};

// -- encoding -----------------------------------------------------------------

#define DROVER_CODEC_ENCODE(type)                                              \
  std::vector<char> to_bytes(const type& x);                                   \
  std::string to_json(const type& x);                                          \
  /** Renders `x` as JSON; lets caf::deep_to_string print messages. */         \
  std::string to_string(const type& x);

DROVER_CODEC_ENCODE(backoff_policy)
DROVER_CODEC_ENCODE(resource_request)
DROVER_CODEC_ENCODE(job_spec)
DROVER_CODEC_ENCODE(stage)
DROVER_CODEC_ENCODE(progress_update)
DROVER_CODEC_ENCODE(error_info)
DROVER_CODEC_ENCODE(job_record)
DROVER_CODEC_ENCODE(webhook_attempt)
DROVER_CODEC_ENCODE(job_event)
DROVER_CODEC_ENCODE(resource_capacity)
DROVER_CODEC_ENCODE(register_worker)
DROVER_CODEC_ENCODE(lease)
DROVER_CODEC_ENCODE(lease_batch)
DROVER_CODEC_ENCODE(running_attempt)
DROVER_CODEC_ENCODE(heartbeat)
DROVER_CODEC_ENCODE(progress_batch)
DROVER_CODEC_ENCODE(completion)
DROVER_CODEC_ENCODE(completion_batch)
DROVER_CODEC_ENCODE(coordinator_reply)
DROVER_CODEC_ENCODE(tree_node)
DROVER_CODEC_ENCODE(tree_snapshot)
DROVER_CODEC_ENCODE(submit_request)
DROVER_CODEC_ENCODE(job_query)
DROVER_CODEC_ENCODE(queue_stats)

#undef DROVER_CODEC_ENCODE

// -- decoding -----------------------------------------------------------------

/// Decodes a `T` from `size` bytes at `data` (no alignment required; the
/// bytes are copied). Defined for every type that has `to_bytes`.
template <class T>
caf::expected<T> from_bytes(const char* data, size_t size,
                            const decode_limits& limits = {});

template <class T>
caf::expected<T> from_bytes(const std::vector<char>& bytes,
                            const decode_limits& limits = {}) {
  return from_bytes<T>(bytes.data(), bytes.size(), limits);
}

/// Decodes a `T` from JSON text. Defined for every type that has `to_json`.
template <class T>
caf::expected<T> from_json(std::string_view text,
                           const decode_limits& limits = {});

#define DROVER_CODEC_DECODE(type)                                              \
  extern template caf::expected<type> from_bytes<type>(const char*, size_t,    \
                                                       const decode_limits&);  \
  extern template caf::expected<type> from_json<type>(std::string_view,        \
                                                      const decode_limits&);

DROVER_CODEC_DECODE(backoff_policy)
DROVER_CODEC_DECODE(resource_request)
DROVER_CODEC_DECODE(job_spec)
DROVER_CODEC_DECODE(stage)
DROVER_CODEC_DECODE(progress_update)
DROVER_CODEC_DECODE(error_info)
DROVER_CODEC_DECODE(job_record)
DROVER_CODEC_DECODE(webhook_attempt)
DROVER_CODEC_DECODE(job_event)
DROVER_CODEC_DECODE(resource_capacity)
DROVER_CODEC_DECODE(register_worker)
DROVER_CODEC_DECODE(lease)
DROVER_CODEC_DECODE(lease_batch)
DROVER_CODEC_DECODE(running_attempt)
DROVER_CODEC_DECODE(heartbeat)
DROVER_CODEC_DECODE(progress_batch)
DROVER_CODEC_DECODE(completion)
DROVER_CODEC_DECODE(completion_batch)
DROVER_CODEC_DECODE(coordinator_reply)
DROVER_CODEC_DECODE(tree_node)
DROVER_CODEC_DECODE(tree_snapshot)
DROVER_CODEC_DECODE(submit_request)
DROVER_CODEC_DECODE(job_query)
DROVER_CODEC_DECODE(queue_stats)

#undef DROVER_CODEC_DECODE

/// Checks that `text` is exactly one JSON value within `limits` (size and
/// depth), e.g. a job input arriving through the binary API before it is
/// accepted. Returns an empty error if so.
caf::error validate_json(std::string_view text,
                         const decode_limits& limits = {});

} // namespace drover
