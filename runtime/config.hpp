#pragma once

// Node configuration: parsed once by Boost.Program_options (command line
// first, then the config file, so the command line wins), validated, and
// passed down explicitly. No globals.

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include "runtime/admission.hpp"
#include "runtime/concurrency.hpp"
#include "runtime/flow_control.hpp"
#include "runtime/log.hpp"
#include "runtime/tls.hpp"

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>
#include <vector>

namespace drover {

/// A coordinator's cluster port as worker and gateway nodes name it.
struct coordinator_address {
  std::string host;
  uint16_t port = 0;

  /// "host:port" ("[v6]:port" for an IPv6 address).
  std::string text() const;
};

/// Reads "host:port" ("[v6]:port"; port 1 to 65535), or a comma-separated
/// list of them (each once) — the one reader of addresses on a command
/// line or in options (--coordinator, droverctl --nodes, the client's
/// nodes). errc::bad_config naming `what`.
caf::expected<coordinator_address> parse_address(const std::string& text,
                                                 const std::string& what);
caf::expected<std::vector<coordinator_address>>
parse_address_list(const std::string& text, const std::string& what);

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
  /// CAF's scheduling policy: "stealing" (work stealing; idle threads poll
  /// and then sleep, up to 10 ms, between polls: the most throughput) or
  /// "sharing" (one queue, idle threads wait on a condition variable and
  /// wake at once: lower latency when the node is not busy). Measured in
  /// docs/benchmarks.md.
  std::string scheduler_policy = "stealing";
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
  /// Resource pools the node's attempts draw from ("memory_gb=64"), named
  /// apart from the slot classes (runtime/resources.hpp). Worker role only.
  std::map<std::string, uint32_t> resources;
  /// Priority aging: see actors/queue.hpp.
  std::chrono::milliseconds aging_interval{10000};
  /// Coordinators: live jobs per recovery page (actors/queue_lifecycle.cpp),
  /// within [1, 100000].
  uint32_t recovery_page_jobs = 5000;
  /// Coordinators: what submissions the queue refuses (runtime/admission.hpp,
  /// docs/jobs.md "Admission control"). By default queued work is bounded
  /// at 1 GiB (about 4 million waiting jobs) and the store's backlog at
  /// 50,000 submissions; tenants and partitions have no cap.
  admission_limits admission{0, {}, 0, uint64_t{1024} * 1024 * 1024, 50000};
  /// Coordinators: attempts of a job type running at once
  /// (runtime/concurrency.hpp); none by default.
  concurrency_limits concurrency;
  /// Coordinators: rate limiters and circuit breakers jobs may name
  /// (runtime/flow_control.hpp); none by default.
  flow_limits flow;
  /// Coordinators: fair-share weights of tenants (actors/queue.hpp); every
  /// tenant weighs 1 unless given.
  std::map<std::string, double> tenant_weights;
  /// Largest accepted job input (JSON text).
  size_t max_input_bytes = 1024 * 1024;
  /// exec jobs: SIGTERM-to-SIGKILL grace on cancel or timeout.
  std::chrono::milliseconds exec_kill_grace{5000};
  // -- privileges and exec (runtime/privileges.hpp, runtime/exec_policy.hpp,
  // docs/security.md "exec") --
  /// The unprivileged account the node switches to at start; required when
  /// started as root. Empty = not given.
  std::string run_as;
  /// Programs exec jobs may run: absolute paths, or bare names looked up
  /// on the fixed PATH at start. None = exec jobs are refused, except in
  /// development mode (no API keys, every listener on loopback), where any
  /// program may run and the node says so at start.
  std::vector<std::string> exec_allow;
  /// Per-job limits of exec programs (a job may lower them): CPU seconds,
  /// address space in MiB, open files, processes of the program's user.
  uint64_t exec_cpu_seconds = 3600;
  uint64_t exec_address_space_mb = 4096;
  uint64_t exec_open_files = 1024;
  uint64_t exec_processes = 512;
  /// Delegated cgroup directories for per-job cgroups
  /// (runtime/exec_cgroup.hpp), probed at start; none = no cgroups.
  std::vector<std::string> exec_cgroups;
  /// Memory limit of one job's processes together, MiB; needs a memory
  /// cgroup among exec_cgroups. 0 = not given (4096 with a memory cgroup).
  uint64_t exec_memory_mb = 0;
  /// Programs run as this uid and gid, in a user namespace of their own
  /// (runtime/exec_user.hpp), checked at start; 0 = as the node's user.
  uint32_t exec_user_id = 0;
  /// "postgres" (durable) or "memory" (experiments; nothing survives).
  std::string store = "memory";
  /// libpq connection string for store=postgres.
  std::string pg_url;
  /// Purge finished jobs older than this many days (0 = keep forever).
  uint32_t retention_days = 0;
  /// postgres: job records the store keeps in memory (0 = not given: the
  /// store's default, pg_store_config::max_cached_jobs).
  uint64_t store_cache_jobs = 0;
  /// postgres: the coordinator's partition leases (runtime/pg_lease.hpp):
  /// how long one lasts by PostgreSQL's clock (a restart after kill -9
  /// waits at most this long) and how often it is renewed (< ttl / 2).
  std::chrono::milliseconds lease_ttl{5000};
  std::chrono::milliseconds lease_renew_interval{1000};
  /// postgres: when a live coordinator holds the leases, wait for them
  /// (a standby that takes over when the holder dies) instead of exiting.
  bool standby = false;
  /// postgres: share the partitions with the other coordinators started
  /// with it (runtime/pg_share.hpp): several active coordinators, each
  /// owning a share, taking over the share of one that dies.
  bool share_partitions = false;
  /// postgres, with share_partitions: an orderly stop keeps the node id's
  /// share (as a crash does) instead of handing it over, so a restart
  /// under the same node id takes it back (docs/cluster.md).
  bool keep_share_on_stop = false;
  // -- logging (runtime/log.hpp, docs/operations.md) --
  /// Lowest level written: trace, debug, info, warn, error or off.
  std::string log_level = "info";
  /// "text" (one line per record, for people) or "json" (one JSON object
  /// per line, for machines).
  std::string log_format = "text";
  // -- webhooks (gateway/webhook.hpp, docs/webhooks.md) --
  /// Signing secret, "whsec_" + base64 of 24 to 64 random bytes; empty =
  /// deliveries go out unsigned (the node warns).
  std::string webhook_secret;
  /// CIDR networks callback URLs may resolve to although the address
  /// policy refuses them (loopback, private, link-local, ...), e.g.
  /// "127.0.0.1/32"; one network per entry.
  std::vector<std::string> webhook_allow;
  /// How long after a job ends its webhook is retried before it is marked
  /// failed; 0 = one attempt.
  std::chrono::milliseconds webhook_retry_period{24LL * 3600 * 1000};
  /// Backoff between attempts: doubling from initial up to max, with equal
  /// jitter (each delay within [base/2, base]).
  std::chrono::milliseconds webhook_initial_backoff{1000};
  std::chrono::milliseconds webhook_max_backoff{3600 * 1000};
  /// Deadline of one attempt: resolve, connect, TLS, write, read.
  std::chrono::milliseconds webhook_timeout{10000};
  /// Largest response body read from a webhook endpoint; a larger one
  /// fails the attempt.
  size_t webhook_max_response_bytes = 64 * 1024;
  // -- HTTP gateway (roles all or gateway; docs/api.md) --
  /// Interface and port of the HTTP API; port 0 picks a free port.
  std::string http_host = "127.0.0.1";
  uint16_t http_port = 8080;
  /// Asio threads of the gateway.
  uint32_t http_threads = 1;
  /// API keys "name:sha256hex:tenant:scopes[:rate]"; none = development
  /// mode (loopback only).
  std::vector<std::string> api_keys;
  /// Requests per second per key unless the key sets its own; 0 = no limit.
  double http_rate_limit = 1000;
  size_t http_max_body_bytes = size_t{8} << 20;
  size_t http_max_header_bytes = 16 * 1024;
  std::chrono::milliseconds http_idle_timeout{30000};
  std::chrono::milliseconds http_request_timeout{10000};
  std::chrono::milliseconds sse_keepalive{15000};
  size_t http_max_streams_per_key = 1000;
  size_t http_max_batch = 10000;
  // -- browsers: Host, Origin, CORS, stream tokens (gateway/browser_policy.hpp,
  // gateway/stream_token.hpp, docs/security.md "Browsers") --
  /// Extra names the Host header may carry ("name" or "name:port"); the
  /// loopback names and the listen address are always accepted.
  std::vector<std::string> http_allowed_hosts;
  /// Origins (scheme://host[:port]) whose pages may call the API (CORS).
  std::vector<std::string> http_cors_origins;
  /// Key of the stream tokens ("hex:..." or "base64:...", >= 32 bytes);
  /// empty = a random key per process (tokens die with it and other
  /// gateways cannot verify them; the node says so).
  std::string stream_token_key;
  /// Lifetime of a minted stream token, at most 600 s.
  std::chrono::seconds stream_token_ttl{300};
  // -- cluster (runtime/config_cluster.cpp, docs/cluster.md) --
  /// Worker and gateway nodes: the coordinators' cluster ports
  /// (--coordinator, repeatable or comma-separated) -- the active one and
  /// its standbys -- tried in turn until one accepts. Empty on
  /// coordinators.
  std::vector<coordinator_address> coordinators;
  /// Coordinators: where worker and gateway nodes join; port -1 = not
  /// listening (an all-in-one node), 0 = pick one.
  std::string cluster_host = "127.0.0.1";
  int32_t cluster_port = -1;
  /// Proves a node may join (HMAC challenge); empty = any node may join a
  /// loopback coordinator (development).
  std::string join_secret;
  /// Lease of an attempt on a worker node, renewed by the node's heartbeat.
  std::chrono::milliseconds attempt_lease_ttl{2000};
  /// The same for particular job types ("type=ms"), e.g. a longer one for
  /// jobs whose workers may pause.
  std::map<std::string, std::chrono::milliseconds> attempt_lease_ttl_by_type;
  std::chrono::milliseconds worker_heartbeat_interval{500};
  /// Worker nodes: on SIGTERM, how long running attempts may take to finish.
  std::chrono::milliseconds drain_timeout{30000};
  /// Worker nodes: the job types offered (empty = every built-in type).
  std::vector<std::string> job_types;
  /// Coordinators with a cluster port: job types that only worker nodes
  /// run (a team's own worker binary, docs/custom_workers.md). Their
  /// submissions are accepted with the default options and wait until a
  /// worker node that runs the type connects; no local worker takes them.
  std::vector<std::string> remote_job_types;
  /// Mutual TLS between nodes on the cluster port (CAF's OpenSSL module):
  /// this node's certificate chain and key, and the CA that signs every
  /// node's certificate (PEM files). All three or none.
  std::string tls_certificate;
  std::string tls_key;
  std::string tls_ca;
  /// Accept a cluster port (or coordinator) outside loopback without TLS:
  /// the network must then be trusted (docs/cluster.md).
  bool insecure_cluster = false;
  /// Coordinators: the secret gateway nodes prove, separate from workers'
  /// --join-secret (a worker's secret must not buy the node API). Empty
  /// with a --join-secret: gateways cannot join.
  std::string gateway_join_secret;
  /// Worker nodes: leases per resource class buffered beyond the slots, so
  /// the next attempt starts without a round trip to the coordinator (a
  /// buffered lease's job waits for this node's slot: keep it small for
  /// long jobs; 0 = none).
  uint32_t worker_prefetch = 16;
  /// Worker nodes, elastic mode: classes whose slots start at this many
  /// and grow to --slots under a backlog, shrinking after elastic_idle
  /// without work (actors/node_link_slots.cpp). Empty = off.
  std::map<std::string, uint32_t> elastic_slots;
  std::chrono::milliseconds elastic_idle{30000};
  // -- a worker node's metrics endpoint (gateway/metrics_endpoint.hpp;
  // docs/operations.md, "Metrics of a worker node") --
  /// Port of its GET /metrics; 0 = none. Worker nodes that join a
  /// coordinator only (a coordinator's figures are at its gateway's).
  uint16_t metrics_port = 0;
  /// Its interface: outside loopback only with a token file. "" = not
  /// given: 127.0.0.1 once a port is (the options set it).
  std::string metrics_host;
  /// File holding the bearer token scrapers must send; readable by its
  /// owner (the node's user) only. Read at start, after --run-as.
  std::string metrics_token_file;
  /// Extra names the Host header may carry ("name" or "name:port").
  std::vector<std::string> metrics_allowed_hosts;
};

/// The node's roles as a set of three flags ("all" sets every one).
struct node_roles {
  bool coordinator = false;
  bool worker = false;
  bool gateway = false;
};
node_roles roles_of(const node_config& cfg);

/// The key of a webhook secret "whsec_<base64>": the decoded bytes (24 to
/// 64 of them). errc::bad_config naming the problem otherwise.
caf::expected<std::string> decode_webhook_secret(const std::string& secret);

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
caf::expected<parse_outcome>
parse_node_config(int argc, const char* const* argv, std::ostream& out);

/// Checks the ranges and combinations of an already filled config.
caf::error validate(const node_config& cfg);

/// The logger's settings (log-level, log-format) of a validated config.
log::options log_options_of(const node_config& cfg);

/// Copies the CAF-relevant settings into an actor system config.
void apply(const node_config& cfg, caf::actor_system_config& caf_cfg);

/// The node's TLS files (--tls-certificate, --tls-key, --tls-ca).
inline tls_files tls_files_of(const node_config& cfg) {
  return {cfg.tls_certificate, cfg.tls_key, cfg.tls_ca};
}

} // namespace drover
