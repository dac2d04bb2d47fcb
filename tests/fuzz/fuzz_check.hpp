#pragma once

// What the fuzz targets share: a property check that stops the run, and the
// list of message kinds the codec decodes.
//
// A fuzz target states properties of the code under test ("what decodes
// re-encodes to the same bytes"); FUZZ_CHECK aborts when one is violated,
// so libFuzzer keeps the input as a crash artifact exactly as it does for
// a sanitizer finding.

#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                 \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "fuzz property violated at %s:%d: %s\n  (%s)\n",    \
                   __FILE__, __LINE__, what, #cond);                           \
      std::abort();                                                            \
    }                                                                          \
  } while (false)

/// Every type runtime/codec.hpp decodes, in a fixed order: the first input
/// byte of the codec targets picks one (byte % count), so a seed file's
/// first byte says which kind it holds. Append only: reordering would make
/// the committed seeds mean other kinds.
#define DROVER_FUZZ_CODEC_KINDS(X)                                             \
  X(backoff_policy)                                                            \
  X(resource_request)                                                          \
  X(job_spec)                                                                  \
  X(stage)                                                                     \
  X(progress_update)                                                           \
  X(error_info)                                                                \
  X(job_record)                                                                \
  X(webhook_attempt)                                                           \
  X(job_event)                                                                 \
  X(resource_capacity)                                                         \
  X(register_worker)                                                           \
  X(lease)                                                                     \
  X(lease_batch)                                                               \
  X(running_attempt)                                                           \
  X(heartbeat)                                                                 \
  X(progress_batch)                                                            \
  X(completion)                                                                \
  X(completion_batch)                                                          \
  X(tree_node)                                                                 \
  X(tree_snapshot)                                                             \
  X(submit_request)                                                            \
  X(job_query)                                                                 \
  X(queue_stats)

#define DROVER_FUZZ_COUNT_ONE(type) +1
constexpr unsigned drover_fuzz_codec_kind_count
    = 0 DROVER_FUZZ_CODEC_KINDS(DROVER_FUZZ_COUNT_ONE);
#undef DROVER_FUZZ_COUNT_ONE
