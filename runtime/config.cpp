#include "runtime/config.hpp"

#include "runtime/detail/config_admission.hpp"
#include "runtime/detail/config_cluster.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/timespan.hpp>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <limits>
#include <ostream>
#include <unistd.h>

namespace po = boost::program_options;

namespace drover {

namespace {

std::string default_node_id() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0)
    return "node";
  return host;
}

/// Appends the items of a repeatable option whose values may also be
/// comma-separated lists ("a,b" "c") to `out`, trimmed, empties dropped.
void append_list_items(const std::vector<std::string>& values,
                       std::vector<std::string>& out) {
  for (const auto& value : values) {
    std::string::size_type pos = 0;
    while (pos <= value.size()) {
      auto comma = value.find(',', pos);
      auto item = value.substr(
          pos, comma == std::string::npos ? std::string::npos : comma - pos);
      auto first = item.find_first_not_of(" \t");
      if (first != std::string::npos)
        out.push_back(
            item.substr(first, item.find_last_not_of(" \t") - first + 1));
      if (comma == std::string::npos)
        break;
      pos = comma + 1;
    }
  }
}

} // namespace

/// An integer option's value before parsing when any value given is
/// checked (-1 included).
constexpr int64_t not_given = std::numeric_limits<int64_t>::min();

caf::expected<parse_outcome>
parse_node_config(int argc, const char* const* argv, std::ostream& out) {
  parse_outcome result;
  auto& cfg = result.config;
  std::string config_file;
  std::string roles = "all";
  int64_t admin_port = cfg.admin_port;
  int64_t threads = cfg.scheduler_threads;
  int64_t heartbeat = cfg.heartbeat_interval.count();
  int64_t conn_timeout = cfg.connection_timeout.count();
  int64_t shutdown = cfg.shutdown_timeout.count();
  int64_t lease_ttl = cfg.lease_ttl.count();
  int64_t lease_renew = cfg.lease_renew_interval.count();
  std::string slots = "cpu=2";
  int64_t aging = cfg.aging_interval.count();
  int64_t recovery_page = cfg.recovery_page_jobs;
  int64_t max_input = static_cast<int64_t>(cfg.max_input_bytes);
  int64_t kill_grace = cfg.exec_kill_grace.count();
  // Privileges and exec (runtime/privileges.hpp, runtime/exec_policy.hpp).
  int64_t exec_cpu = static_cast<int64_t>(cfg.exec_cpu_seconds);
  int64_t exec_as = static_cast<int64_t>(cfg.exec_address_space_mb);
  int64_t exec_files = static_cast<int64_t>(cfg.exec_open_files);
  int64_t exec_procs = static_cast<int64_t>(cfg.exec_processes);
  int64_t exec_user = cfg.exec_user_id;
  int64_t store_cache = not_given;
  int64_t exec_memory
      = cfg.exec_memory_mb == 0 ? -1 : static_cast<int64_t>(cfg.exec_memory_mb);
  std::vector<std::string> webhook_allow;
  int64_t wh_period = cfg.webhook_retry_period.count();
  int64_t wh_initial = cfg.webhook_initial_backoff.count();
  int64_t wh_max_backoff = cfg.webhook_max_backoff.count();
  int64_t wh_timeout = cfg.webhook_timeout.count();
  int64_t wh_max_response
      = static_cast<int64_t>(cfg.webhook_max_response_bytes);
  int64_t http_port = cfg.http_port;
  int64_t http_threads = cfg.http_threads;
  int64_t http_body = static_cast<int64_t>(cfg.http_max_body_bytes);
  int64_t http_header = static_cast<int64_t>(cfg.http_max_header_bytes);
  int64_t http_idle = cfg.http_idle_timeout.count();
  int64_t http_timeout = cfg.http_request_timeout.count();
  int64_t sse_keepalive = cfg.sse_keepalive.count();
  int64_t http_streams = static_cast<int64_t>(cfg.http_max_streams_per_key);
  int64_t http_batch = static_cast<int64_t>(cfg.http_max_batch);
  // Browsers (gateway/browser_policy.hpp, gateway/stream_token.hpp).
  std::vector<std::string> allowed_hosts;
  std::vector<std::string> cors_origins;
  int64_t token_ttl = cfg.stream_token_ttl.count();
  po::options_description general{"drover-node options"};
  general.add_options()("help,h", "print this help and exit")(
      "config,c", po::value(&config_file), "INI file with the options below")(
      "log-level", po::value(&cfg.log_level)->default_value(cfg.log_level),
      "lowest level logged: trace, debug, info, warn, error, off")(
      "log-format", po::value(&cfg.log_format)->default_value(cfg.log_format),
      "log records as text (for people) or json (one object per line)")(
      "node-id", po::value(&cfg.node_id)->default_value(default_node_id()),
      "stable name of this node")(
      "roles", po::value(&roles)->default_value(roles),
      "comma-separated roles: all, coordinator, worker, gateway")(
      "admin-host", po::value(&cfg.admin_host)->default_value(cfg.admin_host),
      "interface of the admin endpoint")(
      "admin-port", po::value(&admin_port)->default_value(admin_port),
      "port of the admin endpoint (0 = pick a free one)")(
      "scheduler-threads", po::value(&threads)->default_value(threads),
      "CAF scheduler threads")(
      "scheduler-policy",
      po::value(&cfg.scheduler_policy)->default_value(cfg.scheduler_policy),
      "CAF scheduling: stealing (throughput) or sharing (latency)")(
      "heartbeat-interval-ms", po::value(&heartbeat)->default_value(heartbeat),
      "CAF middleman heartbeat interval")(
      "connection-timeout-ms",
      po::value(&conn_timeout)->default_value(conn_timeout),
      "drop a peer silent for this long")(
      "shutdown-timeout-ms", po::value(&shutdown)->default_value(shutdown),
      "deadline for an orderly shutdown")(
      "state-dir", po::value(&cfg.state_dir)->default_value(cfg.state_dir),
      "folder for local state")(
      "slots", po::value(&slots)->default_value(slots),
      "worker slots per resource class, e.g. cpu=4,gpu=1")(
      "aging-interval-ms", po::value(&aging)->default_value(aging),
      "priority aging: a low job waits at most 2x this behind newer high jobs")(
      "recovery-page-jobs",
      po::value(&recovery_page)->default_value(recovery_page),
      "coordinator: live jobs read per recovery page (dispatch starts after "
      "the first)")("max-input-bytes",
                    po::value(&max_input)->default_value(max_input),
                    "largest accepted job input")(
      "exec-kill-grace-ms", po::value(&kill_grace)->default_value(kill_grace),
      "exec jobs: SIGTERM to SIGKILL on cancel or timeout")
      // -- privileges and exec --
      ("run-as", po::value(&cfg.run_as),
       "switch to this unprivileged user at start (required when started as "
       "root; jobs never run as root)")(
          "exec-allow", po::value(&cfg.exec_allow)->composing(),
          "exec jobs: a program they may run, absolute path or bare name "
          "looked "
          "up on /usr/local/bin:/usr/bin:/bin at start (repeatable). None = "
          "exec "
          "refused, except in development mode, which allows any program")(
          "exec-cpu-seconds", po::value(&exec_cpu)->default_value(exec_cpu),
          "exec jobs: CPU time limit per program (RLIMIT_CPU)")(
          "exec-address-space-mb", po::value(&exec_as)->default_value(exec_as),
          "exec jobs: address-space limit per program, MiB (RLIMIT_AS)")(
          "exec-open-files", po::value(&exec_files)->default_value(exec_files),
          "exec jobs: open-file limit per program (RLIMIT_NOFILE)")(
          "exec-processes", po::value(&exec_procs)->default_value(exec_procs),
          "exec jobs: process limit of the programs' user (RLIMIT_NPROC, per "
          "user: shared by every job and by the node itself); with a pids "
          "--exec-cgroup, of each job (pids.max)")(
          "exec-cgroup", po::value(&cfg.exec_cgroups)->composing(),
          "exec jobs: a cgroup directory delegated to the node's user, in "
          "which each job gets a cgroup of its own (v2 with pids/memory "
          "enabled, or a v1 pids or memory directory; repeatable)")(
          "exec-user-id", po::value(&exec_user)->default_value(exec_user),
          "exec jobs: run programs as this uid and gid, one of the node "
          "user's /etc/subuid and /etc/subgid range, in a user namespace of "
          "their own (needs newuidmap, package uidmap); 0 = as the node's "
          "user")(
          "exec-memory-mb", po::value(&exec_memory),
          "exec jobs: memory limit of each job's processes together, MiB "
          "(needs a memory --exec-cgroup; default 4096 with one)")(
          "store", po::value(&cfg.store)->default_value(cfg.store),
          "job store: postgres (durable) or memory (nothing survives a "
          "restart)")("pg-url", po::value(&cfg.pg_url),
                      "PostgreSQL connection string for --store postgres")(
          "webhook-secret", po::value(&cfg.webhook_secret),
          "webhooks: signing secret whsec_<base64 of 24-64 bytes> (Standard "
          "Webhooks); without one they go out unsigned. Prefer the config "
          "file: a command line is visible to other users")(
          "webhook-allow", po::value(&webhook_allow)->composing(),
          "webhooks: CIDR networks callback URLs may resolve to although they "
          "are loopback, private, link-local, ... (repeatable or "
          "comma-separated), e.g. 127.0.0.1/32")(
          "webhook-retry-period-ms",
          po::value(&wh_period)->default_value(wh_period),
          "webhooks: retry for this long after the job ended, then mark "
          "failed")(
          "webhook-initial-backoff-ms",
          po::value(&wh_initial)->default_value(wh_initial),
          "webhooks: first delay between attempts (doubles, with jitter)")(
          "webhook-max-backoff-ms",
          po::value(&wh_max_backoff)->default_value(wh_max_backoff),
          "webhooks: longest delay between attempts")(
          "webhook-timeout-ms",
          po::value(&wh_timeout)->default_value(wh_timeout),
          "webhooks: deadline of one attempt (resolve, connect, TLS, write, "
          "read)")("webhook-max-response-bytes",
                   po::value(&wh_max_response)->default_value(wh_max_response),
                   "webhooks: largest response body read; a larger one fails "
                   "the attempt")(
          "store-cache-jobs", po::value(&store_cache),
          "postgres: job records kept in memory for validation and reads "
          "(finished ones evicted first, read back when needed; default "
          "200000). The node's memory grows with it: 1-2.5 KiB each")(
          "retention-days", po::value(&cfg.retention_days),
          "postgres: purge finished jobs (and their events) older than this; "
          "0 keeps them forever; live jobs and the DLQ are never purged")(
          "lease-ttl-ms", po::value(&lease_ttl)->default_value(lease_ttl),
          "postgres: lifetime of the coordinator's partition leases (server "
          "clock); a restart after a crash waits at most this long")(
          "lease-renew-interval-ms",
          po::value(&lease_renew)->default_value(lease_renew),
          "postgres: how often the leases are renewed (less than half the "
          "TTL)")("standby", po::bool_switch(&cfg.standby),
                  "postgres coordinators: when a live coordinator holds the "
                  "database's leases, wait and take over when it dies "
                  "(instead of exiting 2)")(
          "share-partitions", po::bool_switch(&cfg.share_partitions),
          "postgres coordinators: own a share of the partitions, with the "
          "other coordinators started so (several active coordinators; "
          "docs/cluster.md); worker nodes: the --coordinator list shares "
          "the partitions, join each of them with a share of the slots; "
          "gateway "
          "nodes: join each of them and send each request to its "
          "partition's owner")(
          "keep-share-on-stop", po::bool_switch(&cfg.keep_share_on_stop),
          "postgres coordinators with --share-partitions: SIGTERM keeps this "
          "node id's share (its leases expire, nobody else takes it for a "
          "lease TTL) so a restart under the same --node-id takes it back "
          "without moving it away and back; default: hand it over at once")(
          "http-host", po::value(&cfg.http_host)->default_value(cfg.http_host),
          "gateway: interface of the HTTP API (without API keys: loopback "
          "only)")("http-port", po::value(&http_port)->default_value(http_port),
                   "gateway: port of the HTTP API (0 = pick a free one)")(
          "http-threads", po::value(&http_threads)->default_value(http_threads),
          "gateway: I/O threads")(
          "api-key", po::value(&cfg.api_keys)->composing(),
          "gateway: name:sha256hex:tenant:scopes[:rate] (repeatable); scopes "
          "submit,read,admin; sha256hex = sha256 of the secret key")(
          "http-rate-limit",
          po::value(&cfg.http_rate_limit)->default_value(cfg.http_rate_limit),
          "gateway: requests per second per key (0 = unlimited)")(
          "http-max-body-bytes",
          po::value(&http_body)->default_value(http_body),
          "gateway: largest request body (413 above)")(
          "http-max-header-bytes",
          po::value(&http_header)->default_value(http_header),
          "gateway: largest request header block (431 above)")(
          "http-idle-timeout-ms",
          po::value(&http_idle)->default_value(http_idle),
          "gateway: deadline for reading a request and for idle connections")(
          "http-request-timeout-ms",
          po::value(&http_timeout)->default_value(http_timeout),
          "gateway: deadline for the node's answer (503 after it)")(
          "sse-keepalive-ms",
          po::value(&sse_keepalive)->default_value(sse_keepalive),
          "gateway: interval of keep-alive comments on event streams")(
          "http-max-streams-per-key",
          po::value(&http_streams)->default_value(http_streams),
          "gateway: open SSE/WebSocket subscriptions per key")(
          "http-max-batch", po::value(&http_batch)->default_value(http_batch),
          "gateway: most jobs in one POST /api/jobs/batch")
      // -- browsers --
      ("http-allowed-host", po::value(&allowed_hosts)->composing(),
       "gateway: another name the Host header may carry, name or name:port "
       "(repeatable or comma-separated); loopback names and the listen "
       "address are always accepted")(
          "http-cors-origin", po::value(&cors_origins)->composing(),
          "gateway: an origin whose pages may call the API, exactly "
          "scheme://host[:port] (repeatable or comma-separated)")(
          "stream-token-key", po::value(&cfg.stream_token_key),
          "gateway: key of stream tokens, hex:<hex> or base64:<base64>, at "
          "least 32 bytes; the same on every gateway (default: random per "
          "process). Prefer the config file")(
          "stream-token-ttl-s", po::value(&token_ttl)->default_value(token_ttl),
          "gateway: lifetime of a minted stream token, 1 to 600 s");
  detail::cluster_raw cluster;
  general.add(detail::cluster_options(cluster, cfg));
  detail::admission_raw admission;
  general.add(detail::admission_options(admission));
  try {
    po::variables_map vm;
    // Command line first: Boost keeps the first value stored.
    po::store(po::parse_command_line(argc, argv, general), vm);
    if (vm.count("help")) {
      out << general << '\n';
      result.exit_now = true;
      return result;
    }
    if (vm.count("config")) {
      auto file = vm["config"].as<std::string>();
      std::ifstream in{file};
      if (!in)
        return make_error(errc::bad_config,
                          "cannot read config file '" + file + "'");
      po::store(po::parse_config_file(in, general), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return make_error(errc::bad_config, e.what());
  }
  auto in_range
      = [](int64_t v, int64_t lo, int64_t hi) { return v >= lo && v <= hi; };
  if (!in_range(admin_port, 0, 65535))
    return make_error(errc::bad_config, "admin-port must be within [0, 65535]");
  if (!in_range(threads, 1, 256))
    return make_error(errc::bad_config,
                      "scheduler-threads must be within [1, 256]");
  if (!in_range(heartbeat, 0, 3600000) || !in_range(conn_timeout, 0, 3600000)
      || !in_range(shutdown, 0, 3600000))
    return make_error(errc::bad_config,
                      "time settings must be within [0, 3600000] ms");
  if (!in_range(aging, 1, 86400000))
    return make_error(errc::bad_config,
                      "aging-interval-ms must be within [1, 86400000]");
  if (!in_range(max_input, 1, 256LL * 1024 * 1024))
    return make_error(errc::bad_config,
                      "max-input-bytes must be within [1, 268435456]");
  if (!in_range(kill_grace, 0, 86400000))
    return make_error(errc::bad_config,
                      "exec-kill-grace-ms must be within [0, 86400000]");
  if (!in_range(http_port, 0, 65535))
    return make_error(errc::bad_config, "http-port must be within [0, 65535]");
  if (!in_range(http_threads, 1, 64))
    return make_error(errc::bad_config, "http-threads must be within [1, 64]");
  if (!in_range(http_body, 1024, 1LL << 30))
    return make_error(errc::bad_config,
                      "http-max-body-bytes must be within [1024, 1073741824]");
  if (!in_range(http_header, 1024, 1LL << 20))
    return make_error(errc::bad_config,
                      "http-max-header-bytes must be within [1024, 1048576]");
  if (!in_range(http_idle, 100, 3600000)
      || !in_range(http_timeout, 100, 3600000)
      || !in_range(sse_keepalive, 100, 3600000))
    return make_error(errc::bad_config,
                      "http timeouts and sse-keepalive-ms must be within "
                      "[100, 3600000] ms");
  if (!in_range(http_streams, 1, 1000000))
    return make_error(errc::bad_config,
                      "http-max-streams-per-key must be within [1, 1000000]");
  if (!in_range(http_batch, 1, 100000))
    return make_error(errc::bad_config,
                      "http-max-batch must be within [1, 100000]");
  if (!(cfg.http_rate_limit >= 0 && cfg.http_rate_limit <= 1e7))
    return make_error(errc::bad_config,
                      "http-rate-limit must be within [0, 10000000]");
  cfg.http_port = static_cast<uint16_t>(http_port);
  cfg.http_threads = static_cast<uint32_t>(http_threads);
  cfg.http_max_body_bytes = static_cast<size_t>(http_body);
  cfg.http_max_header_bytes = static_cast<size_t>(http_header);
  cfg.http_idle_timeout = std::chrono::milliseconds{http_idle};
  cfg.http_request_timeout = std::chrono::milliseconds{http_timeout};
  cfg.sse_keepalive = std::chrono::milliseconds{sse_keepalive};
  cfg.http_max_streams_per_key = static_cast<size_t>(http_streams);
  cfg.http_max_batch = static_cast<size_t>(http_batch);
  // Browsers: entries are checked by the gateway (browser_policy::make,
  // decode_stream_token_key), which owns their meaning.
  append_list_items(allowed_hosts, cfg.http_allowed_hosts);
  append_list_items(cors_origins, cfg.http_cors_origins);
  if (!in_range(token_ttl, 1, 600))
    return make_error(errc::bad_config,
                      "stream-token-ttl-s must be within [1, 600]");
  cfg.stream_token_ttl = std::chrono::seconds{token_ttl};
  if (auto err = detail::apply_cluster_options(cluster, cfg))
    return err;
  auto parsed_slots = parse_slots(slots);
  if (!parsed_slots)
    return std::move(parsed_slots.error());
  cfg.slots = std::move(*parsed_slots);
  cfg.aging_interval = std::chrono::milliseconds{aging};
  if (!in_range(recovery_page, 1, 100000))
    return make_error(errc::bad_config,
                      "recovery-page-jobs must be within [1, 100000]");
  if (store_cache != not_given && !in_range(store_cache, 1000, 10'000'000))
    return make_error(errc::bad_config,
                      "store-cache-jobs must be within [1000, 10000000]");
  cfg.store_cache_jobs
      = store_cache == not_given ? 0 : static_cast<uint64_t>(store_cache);
  cfg.recovery_page_jobs = static_cast<uint32_t>(recovery_page);
  cfg.max_input_bytes = static_cast<size_t>(max_input);
  cfg.exec_kill_grace = std::chrono::milliseconds{kill_grace};
  // Privileges and exec: the allow-list's entries are resolved at start
  // (resolve_allow_list), where the file system is looked at.
  if (!in_range(exec_cpu, 1, 365LL * 86400) || !in_range(exec_as, 1, 1LL << 40)
      || !in_range(exec_files, 1, 1LL << 20)
      || !in_range(exec_procs, 1, 1LL << 22)
      || (exec_memory != -1 && !in_range(exec_memory, 1, 1LL << 40)))
    return make_error(errc::bad_config,
                      "exec limits: exec-cpu-seconds within [1, 31536000], "
                      "exec-address-space-mb within [1, 2^40], "
                      "exec-open-files within [1, 1048576], exec-processes "
                      "within [1, 4194304], exec-memory-mb within [1, 2^40]");
  if (!in_range(exec_user, 0, 4294967294LL))
    return make_error(errc::bad_config,
                      "exec-user-id must be within [0, 4294967294]");
  cfg.exec_user_id = static_cast<uint32_t>(exec_user);
  cfg.exec_memory_mb
      = exec_memory == -1 ? 0 : static_cast<uint64_t>(exec_memory);
  cfg.exec_cpu_seconds = static_cast<uint64_t>(exec_cpu);
  cfg.exec_address_space_mb = static_cast<uint64_t>(exec_as);
  cfg.exec_open_files = static_cast<uint64_t>(exec_files);
  cfg.exec_processes = static_cast<uint64_t>(exec_procs);
  // Ranges are checked by validate(); only what the cast could hide here.
  if (!in_range(wh_max_response, 1, 16LL * 1024 * 1024))
    return make_error(errc::bad_config, "webhook-max-response-bytes must be "
                                        "within [1, 16777216]");
  append_list_items(webhook_allow, cfg.webhook_allow);
  cfg.webhook_retry_period = std::chrono::milliseconds{wh_period};
  cfg.webhook_initial_backoff = std::chrono::milliseconds{wh_initial};
  cfg.webhook_max_backoff = std::chrono::milliseconds{wh_max_backoff};
  cfg.webhook_timeout = std::chrono::milliseconds{wh_timeout};
  cfg.webhook_max_response_bytes = static_cast<size_t>(wh_max_response);
  cfg.admin_port = static_cast<uint16_t>(admin_port);
  cfg.scheduler_threads = static_cast<uint32_t>(threads);
  cfg.heartbeat_interval = std::chrono::milliseconds{heartbeat};
  cfg.connection_timeout = std::chrono::milliseconds{conn_timeout};
  cfg.shutdown_timeout = std::chrono::milliseconds{shutdown};
  cfg.lease_ttl = std::chrono::milliseconds{lease_ttl};
  cfg.lease_renew_interval = std::chrono::milliseconds{lease_renew};
  cfg.roles.clear();
  std::string::size_type pos = 0;
  while (pos <= roles.size()) {
    auto comma = roles.find(',', pos);
    auto item = roles.substr(pos, comma == std::string::npos ? std::string::npos
                                                             : comma - pos);
    if (!item.empty())
      cfg.roles.push_back(item);
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  // After the roles: the options are refused on nodes without a queue.
  if (auto err = detail::apply_admission_options(admission, cfg))
    return err;
  if (auto err = validate(cfg))
    return err;
  return result;
}

caf::expected<std::map<std::string, uint32_t>>
parse_slots(const std::string& text) {
  std::map<std::string, uint32_t> result;
  std::string::size_type pos = 0;
  while (pos < text.size()) {
    auto comma = text.find(',', pos);
    auto item = text.substr(pos, comma == std::string::npos ? std::string::npos
                                                            : comma - pos);
    pos = comma == std::string::npos ? text.size() : comma + 1;
    if (item.empty())
      continue;
    auto eq = item.find('=');
    auto bad = [&item](const std::string& why) {
      return make_error(errc::bad_config, "slots entry '" + item + "': " + why);
    };
    if (eq == std::string::npos || eq == 0)
      return bad("expected class=count");
    auto name = item.substr(0, eq);
    auto count = item.substr(eq + 1);
    if (count.empty() || count.size() > 4
        || count.find_first_not_of("0123456789") != std::string::npos)
      return bad("count must be a number within [1, 1024]");
    auto n = std::stoul(count);
    if (n < 1 || n > 1024)
      return bad("count must be a number within [1, 1024]");
    for (auto c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-'
            || c == '_'))
        return bad("class names may only contain letters, digits, - and _");
    if (!result.emplace(name, static_cast<uint32_t>(n)).second)
      return bad("class listed twice");
  }
  if (result.empty())
    return make_error(errc::bad_config, "slots must name at least one class");
  return result;
}

log::options log_options_of(const node_config& cfg) {
  log::options opts;
  opts.min_level = log::parse_level(cfg.log_level).value_or(log::level::info);
  opts.fmt = log::parse_format(cfg.log_format).value_or(log::format::text);
  return opts;
}

void apply(const node_config& cfg, caf::actor_system_config& caf_cfg) {
  caf_cfg.set("scheduler.max-threads",
              static_cast<size_t>(cfg.scheduler_threads));
  caf_cfg.set("scheduler.policy", caf::atom_from_string(cfg.scheduler_policy));
  caf_cfg.set("middleman.heartbeat-interval",
              caf::timespan{cfg.heartbeat_interval});
  caf_cfg.set("middleman.connection-timeout",
              caf::timespan{cfg.connection_timeout});
  caf_cfg.openssl_certificate = cfg.tls_certificate;
  caf_cfg.openssl_key = cfg.tls_key;
  caf_cfg.openssl_cafile = cfg.tls_ca;
}

} // namespace drover
