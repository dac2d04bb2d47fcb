#pragma once

// The cluster part of the node configuration (runtime/config.hpp): its
// command-line options, how their raw values become node_config fields,
// and the checks of roles against what a node must know to serve them.

#include "runtime/config.hpp"

#include <boost/program_options/options_description.hpp>

#include <caf/error.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace drover::detail {

/// Raw option values, before checking.
struct cluster_raw {
  std::vector<std::string> coordinator;
  std::string cluster_host = "127.0.0.1";
  int64_t cluster_port = -1;
  int64_t attempt_lease_ttl = 2000;
  int64_t worker_heartbeat = 500;
  int64_t drain_timeout = 30000;
  int64_t prefetch = 16;
  std::vector<std::string> job_types;
  std::vector<std::string> remote_job_types;
  std::vector<std::string> ttl_by_type;
  std::string resources;
  std::string elastic_slots;
  int64_t elastic_idle_ms = 30000;
  int64_t metrics_port = 0;
  /// "" = not given.
  std::string metrics_host;
  std::vector<std::string> metrics_allowed_hosts;
};

boost::program_options::options_description cluster_options(cluster_raw& raw,
                                                            node_config& cfg);

/// errc::bad_config naming the option.
caf::error apply_cluster_options(const cluster_raw& raw, node_config& cfg);

} // namespace drover::detail

namespace drover {

/// Roles against cluster settings: a node refuses what it cannot serve.
caf::error validate_cluster(const node_config& cfg);

} // namespace drover
