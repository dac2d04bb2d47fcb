#pragma once

// The flow-control part of the node configuration (runtime/config.hpp):
// admission control (runtime/admission.hpp) and concurrency limits
// (runtime/concurrency.hpp), their command-line options and how their raw
// values become node_config::admission and node_config::concurrency.
// Coordinators only.

#include "runtime/config.hpp"

#include <boost/program_options/options_description.hpp>

#include <caf/error.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace drover::detail {

/// Raw option values, before checking.
struct admission_raw {
  /// "Not given": the default of node_config::admission stays.
  static constexpr int64_t unset = std::numeric_limits<int64_t>::min();
  int64_t memory_mb = unset;
  int64_t store_backlog = unset;
  int64_t tenant_waiting = unset;
  int64_t partition_waiting = unset;
  std::vector<std::string> tenant_caps;
  std::vector<std::string> concurrency;
  std::vector<std::string> rate_limits;
  std::vector<std::string> breakers;
  std::vector<std::string> tenant_weights;
};

boost::program_options::options_description
admission_options(admission_raw& raw);

/// errc::bad_config naming the option; a node that is not a coordinator
/// refuses every admission and concurrency option (it has no queue to apply
/// them to).
caf::error apply_admission_options(const admission_raw& raw, node_config& cfg);

} // namespace drover::detail
