#pragma once

// Node configuration: parsed once by Boost.Program_options (command line
// first, then the config file, so the command line wins), validated, and
// passed down explicitly. No globals.

#include <caf/fwd.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace drover {

struct node_config {
  /// Stable name of this node in trees, logs and (later) leases.
  std::string node_id;
  /// Roles this node plays; "all" is the zero-setup default.
  std::vector<std::string> roles{"all"};
  /// Where the admin endpoint (the root supervisor, over CAF's network
  /// layer) listens. Port 0 picks a free port; the node prints it.
  std::string admin_host = "127.0.0.1";
  uint16_t admin_port = 7411;
  /// CAF scheduler threads. 1-2 per process measured fastest here.
  uint32_t scheduler_threads = 2;
  /// CAF middleman heartbeat and connection timeout: without them a hung
  /// peer is never detected.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds connection_timeout{10000};
  /// How long an orderly shutdown may take before the node gives up.
  std::chrono::milliseconds shutdown_timeout{30000};
  /// Folder for local state (PostgreSQL data directory, later).
  std::string state_dir = ".drover";
  /// Worker slots per resource class ("cpu=4,gpu=1").
  std::map<std::string, uint32_t> slots{{"cpu", 2}};
  /// Priority aging: see actors/queue.hpp.
  std::chrono::milliseconds aging_interval{10000};
  /// Largest accepted job input (JSON text).
  size_t max_input_bytes = 1024 * 1024;
  /// exec jobs: SIGTERM-to-SIGKILL grace on cancel or timeout.
  std::chrono::milliseconds exec_kill_grace{5000};
  /// "postgres" (durable) or "memory" (experiments; nothing survives).
  std::string store = "memory";
  /// libpq connection string for store=postgres.
  std::string pg_url;
  /// Purge finished jobs older than this many days (0 = keep forever).
  uint32_t retention_days = 0;
};

/// Parses "cpu=4,gpu=1"; errc::bad_config naming the bad part.
caf::expected<std::map<std::string, uint32_t>>
parse_slots(const std::string& text);

/// Outcome of parsing: either a config to run with, or a request to print
/// help/version and exit successfully.
struct parse_outcome {
  node_config config;
  bool exit_now = false;
};

/// Parses `argv` (and the file named by --config, if any). Unknown options,
/// malformed values and out-of-range settings are `errc::bad_config` errors
/// naming the option. Help text goes to `out`.
caf::expected<parse_outcome> parse_node_config(int argc, const char* const* argv,
                                               std::ostream& out);

/// Checks the ranges and combinations of an already filled config.
caf::error validate(const node_config& cfg);

/// Copies the CAF-relevant settings into an actor system config.
void apply(const node_config& cfg, caf::actor_system_config& caf_cfg);

} // namespace drover
