#include "runtime/detail/config_cluster.hpp"

#include "runtime/errors.hpp"
#include "runtime/ip_address.hpp"
#include "runtime/resources.hpp"

#include <boost/program_options.hpp>

#include <algorithm>
#include <string_view>

namespace po = boost::program_options;

namespace drover {

node_roles roles_of(const node_config& cfg) {
  node_roles r;
  for (const auto& x : cfg.roles) {
    bool all = x == "all";
    r.coordinator |= all || x == "coordinator";
    r.worker |= all || x == "worker";
    r.gateway |= all || x == "gateway";
  }
  return r;
}

namespace {

/// A loopback address written as one (127.0.0.0/8, ::1, also in brackets
/// or IPv4-mapped), or "localhost". A name is not taken at its word: the
/// node resolves it, and "127.evil.example" may resolve anywhere.
bool loopback(const std::string& host) {
  if (host == "localhost")
    return true;
  std::string_view h = host;
  if (h.size() > 2 && h.front() == '[' && h.back() == ']')
    h = h.substr(1, h.size() - 2);
  auto ip = parse_ip_address(h);
  if (!ip)
    return false;
  const char* kind = special_purpose(unmapped(*ip));
  return kind != nullptr && std::string_view{kind} == "loopback";
}

caf::error bad(std::string what) {
  return make_error(errc::bad_config, std::move(what));
}

/// A worker node's metrics endpoint: its own figures, on its own port.
caf::error validate_metrics(const node_config& cfg) {
  auto r = roles_of(cfg);
  if (cfg.metrics_port == 0) {
    if (!cfg.metrics_host.empty() || !cfg.metrics_token_file.empty()
        || !cfg.metrics_allowed_hosts.empty())
      return bad("--metrics-host, --metrics-token-file and "
                 "--metrics-allowed-host need --metrics-port");
    return caf::none;
  }
  if (r.coordinator)
    return bad("--metrics-port is for worker nodes that join a coordinator: "
               "a coordinator's figures are at GET /metrics of its HTTP "
               "gateway (roles all or gateway)");
  if (!r.worker)
    return bad("--metrics-port is for worker nodes: a gateway node serves "
               "GET /metrics on its --http-port");
  if (cfg.metrics_host.empty())
    return bad("metrics-host must not be empty");
  if (!loopback(cfg.metrics_host) && cfg.metrics_token_file.empty())
    return bad("--metrics-host outside loopback needs --metrics-token-file: "
               "without a token anyone who reaches the port reads the "
               "node's figures");
  return caf::none;
}

} // namespace

std::string coordinator_address::text() const {
  return host.find(':') == std::string::npos
             ? host + ":" + std::to_string(port)
             : "[" + host + "]:" + std::to_string(port);
}

caf::error validate_cluster(const node_config& cfg) {
  auto r = roles_of(cfg);
  bool remote = !cfg.coordinators.empty();
  if (!r.coordinator) {
    if (!remote)
      return bad("roles: a worker or gateway node needs --coordinator "
                 "host:port (the coordinator's --cluster-port)");
    if (cfg.store != "memory")
      return bad("--store is for coordinators: a worker or gateway node "
                 "has no store");
    if (cfg.cluster_port >= 0)
      return bad("--cluster-port is for coordinators: worker and gateway "
                 "nodes join one with --coordinator");
  } else {
    if (remote)
      return bad("--coordinator is for worker and gateway nodes: this node "
                 "is a coordinator (roles "
                 + std::string{r.worker ? "" : "without "} + "worker)");
    // The admin port (droverctl, the client API) checks API keys; without
    // any, anyone who reaches it may submit, cancel and purge.
    if (cfg.api_keys.empty() && !loopback(cfg.admin_host))
      return bad("--admin-host outside loopback needs --api-key: without "
                 "keys anyone who reaches the admin port may submit, cancel "
                 "and purge jobs");
    if (!r.worker && cfg.cluster_port < 0)
      return bad("roles: a coordinator without the worker role needs "
                 "--cluster-port, where worker nodes join");
    if (cfg.cluster_port >= 0 && !loopback(cfg.cluster_host)
        && cfg.join_secret.empty())
      return bad("--join-secret is required when --cluster-host is not "
                 "loopback: anyone who reaches the port could join as a "
                 "worker and receive job inputs");
  }
  if (!cfg.join_secret.empty() && cfg.join_secret.size() < 16)
    return bad("join-secret must be at least 16 characters");
  if (!cfg.gateway_join_secret.empty() && cfg.gateway_join_secret.size() < 16)
    return bad("gateway-join-secret must be at least 16 characters");
  if (!cfg.gateway_join_secret.empty() && cfg.join_secret.empty())
    return bad("gateway-join-secret needs a join-secret for the worker "
               "nodes too (otherwise none could join)");
  if (!cfg.gateway_join_secret.empty()
      && cfg.gateway_join_secret == cfg.join_secret)
    return bad("gateway-join-secret must differ from join-secret");
  {
    int given = !cfg.tls_certificate.empty() + !cfg.tls_key.empty()
                + !cfg.tls_ca.empty();
    if (given != 0 && given != 3)
      return bad("TLS needs all three of --tls-certificate, --tls-key and "
                 "--tls-ca");
    bool far = (r.coordinator && cfg.cluster_port >= 0
                && !loopback(cfg.cluster_host))
               || std::any_of(cfg.coordinators.begin(), cfg.coordinators.end(),
                              [](const coordinator_address& c) {
                                return !loopback(c.host);
                              });
    if (far && given == 0 && !cfg.insecure_cluster)
      return bad("the cluster port is outside loopback without TLS: anyone "
                 "who reaches it controls the coordinator. Configure "
                 "--tls-certificate, --tls-key and --tls-ca, or accept a "
                 "trusted network with --insecure-cluster");
  }
  auto ttl = cfg.attempt_lease_ttl.count();
  auto beat = cfg.worker_heartbeat_interval.count();
  if (ttl < 200 || ttl > 3600000)
    return bad("attempt-lease-ttl-ms must be within [200, 3600000]");
  if (beat < 10 || beat * 2 >= ttl)
    return bad("worker-heartbeat-interval-ms must be at least 10 and less "
               "than half of attempt-lease-ttl-ms");
  for (const auto& [type, t] : cfg.attempt_lease_ttl_by_type)
    if (t.count() > 3600000 || t.count() <= beat * 2)
      return bad("attempt-lease-ttl " + type
                 + ": must be more than twice the heartbeat interval and at "
                   "most 3600000 ms");
  if (cfg.drain_timeout.count() < 0 || cfg.drain_timeout.count() > 86400000)
    return bad("drain-timeout-ms must be within [0, 86400000]");
  for (const auto& t : cfg.job_types)
    if (t.empty() || t.size() > 128)
      return bad("job-types: names are 1 to 128 characters");
  for (const auto& t : cfg.remote_job_types)
    if (t.size() > 128)
      return bad("remote-job-types: names are 1 to 128 characters");
  if (!cfg.remote_job_types.empty() && (!r.coordinator || cfg.cluster_port < 0))
    return bad("--remote-job-types is for coordinators with a --cluster-port "
               "(only worker nodes run those types)");
  for (const auto& [cls, n] : cfg.elastic_slots) {
    auto s = cfg.slots.find(cls);
    if (s == cfg.slots.end())
      return bad("elastic-slots: '" + cls + "' is not a slot class (--slots)");
    if (n > s->second)
      return bad("elastic-slots: " + cls + "=" + std::to_string(n)
                 + " is more than its " + std::to_string(s->second) + " slots");
  }
  if (cfg.elastic_slots.empty()
      && cfg.elastic_idle != node_config{}.elastic_idle)
    return bad("--elastic-idle-ms needs --elastic-slots");
  if (!cfg.elastic_slots.empty() && r.coordinator)
    return bad("--elastic-slots is for worker nodes that join a coordinator "
               "(its link decides how many slots are offered)");
  for (const auto& [pool, amount] : cfg.resources)
    if (cfg.slots.count(pool) > 0)
      return bad("resources: '" + pool
                 + "' is also a slot class (--slots): a pool needs a name "
                   "of its own");
  // Nothing pretends: an option for another role is refused, not ignored.
  const node_config defaults;
  if (!r.worker) {
    if (!cfg.job_types.empty())
      return bad("--job-types is for worker nodes");
    if (cfg.worker_prefetch != defaults.worker_prefetch)
      return bad("--worker-prefetch is for worker nodes");
    if (cfg.drain_timeout != defaults.drain_timeout)
      return bad("--drain-timeout-ms is for worker nodes");
    if (!cfg.resources.empty())
      return bad("--resources is for worker nodes");
    if (!cfg.elastic_slots.empty() || cfg.elastic_idle != defaults.elastic_idle)
      return bad("--elastic-slots and --elastic-idle-ms are for worker "
                 "nodes");
    // Where programs run: only a node with the worker role runs them.
    if (!cfg.exec_cgroups.empty() || cfg.exec_memory_mb != 0
        || cfg.exec_user_id != 0)
      return bad("--exec-cgroup, --exec-memory-mb and --exec-user-id are for "
                 "worker nodes");
  }
  if (!r.coordinator) {
    if (cfg.attempt_lease_ttl != defaults.attempt_lease_ttl
        || !cfg.attempt_lease_ttl_by_type.empty()
        || cfg.worker_heartbeat_interval != defaults.worker_heartbeat_interval)
      return bad("lease and heartbeat settings are the coordinator's: a "
                 "worker or gateway node is told them when it joins");
    if (!cfg.gateway_join_secret.empty())
      return bad("--gateway-join-secret is for coordinators (a gateway node "
                 "proves its secret with --join-secret)");
    if (cfg.cluster_host != defaults.cluster_host)
      return bad("--cluster-host is for coordinators");
    if (cfg.recovery_page_jobs != defaults.recovery_page_jobs)
      return bad("--recovery-page-jobs is for coordinators");
    if (cfg.standby)
      return bad("--standby is for coordinators");
    if (cfg.share_partitions && !r.worker && !r.gateway)
      return bad("--share-partitions is for coordinators, worker nodes and "
                 "gateway nodes");
  }
  if (cfg.share_partitions && r.worker && !r.coordinator) {
    // One agent per coordinator, each with a fixed share of the slots
    // (docs/cluster.md): what only one connection can account for is
    // refused, not ignored.
    if (!cfg.resources.empty())
      return bad("--resources with --share-partitions: a worker node's "
                 "resource pools cannot be shared between coordinators yet "
                 "(each would book all of them)");
    if (!cfg.elastic_slots.empty())
      return bad("--elastic-slots with --share-partitions: not supported yet "
                 "(each coordinator gets a fixed share of the slots)");
    if (cfg.node_id.size() > 120)
      return bad("--share-partitions: node-id must be at most 120 characters "
                 "(each coordinator's connection adds a suffix)");
  }
  return validate_metrics(cfg);
}

namespace detail {

po::options_description cluster_options(cluster_raw& raw, node_config& cfg) {
  po::options_description d{"cluster (docs/cluster.md)"};
  d.add_options()(
      "coordinator", po::value(&raw.coordinator)->composing(),
      "worker and gateway nodes: the coordinator's cluster port, host:port; "
      "with standby coordinators, each of them (repeatable or "
      "comma-separated, tried in turn)")(
      "cluster-host",
      po::value(&raw.cluster_host)->default_value(raw.cluster_host),
      "coordinators: interface where worker and gateway nodes join")(
      "cluster-port", po::value(&raw.cluster_port),
      "coordinators: port where worker and gateway nodes join (0 = pick "
      "one; unset = none, an all-in-one node)")(
      "tls-certificate", po::value(&cfg.tls_certificate),
      "mutual TLS on the cluster port: this node's certificate chain (PEM)")(
      "tls-key", po::value(&cfg.tls_key),
      "mutual TLS: this node's private key (PEM, unencrypted; readable only "
      "by Drover)")("tls-ca", po::value(&cfg.tls_ca),
                    "mutual TLS: the CA certificate(s) every node's "
                    "certificate must chain to (PEM)")(
      "insecure-cluster", po::bool_switch(&cfg.insecure_cluster),
      "allow a cluster port or coordinator outside loopback without TLS: "
      "anyone who reaches the port controls the coordinator, so the network "
      "must be trusted")("gateway-join-secret",
                         po::value(&cfg.gateway_join_secret),
                         "coordinators: the secret gateway nodes prove "
                         "(a gateway gets the node API; keep it apart from "
                         "the workers' --join-secret)")(
      "join-secret", po::value(&cfg.join_secret),
      "the secret a node proves (HMAC challenge) to join; required on a "
      "non-loopback cluster port; at least 16 characters. Prefer the config "
      "file")(
      "attempt-lease-ttl-ms",
      po::value(&raw.attempt_lease_ttl)->default_value(raw.attempt_lease_ttl),
      "coordinators: lease of an attempt on a worker node; lapses "
      "without a heartbeat")(
      "attempt-lease-ttl", po::value(&raw.ttl_by_type)->composing(),
      "coordinators: the lease TTL of one job type, type=ms (repeatable)")(
      "worker-heartbeat-interval-ms",
      po::value(&raw.worker_heartbeat)->default_value(raw.worker_heartbeat),
      "coordinators: how often worker nodes send their heartbeat (less than "
      "half the lease TTL)")(
      "drain-timeout-ms",
      po::value(&raw.drain_timeout)->default_value(raw.drain_timeout),
      "worker nodes: on SIGTERM, how long running attempts may take to "
      "finish")("worker-prefetch",
                po::value(&raw.prefetch)->default_value(raw.prefetch),
                "worker nodes: leases per resource class buffered beyond "
                "the slots, so the next attempt starts at once; used only "
                "while the class's jobs take under 100 ms (0 = none)")(
      "resources", po::value(&raw.resources)->default_value(raw.resources),
      "worker nodes: resource pools attempts draw from, e.g. "
      "memory_gb=64,scratch_gb=500 (a job's resources after its slot "
      "class; names apart from --slots)")(
      "elastic-slots",
      po::value(&raw.elastic_slots)->default_value(raw.elastic_slots),
      "worker nodes: elastic mode, e.g. cpu=1: the class starts at this "
      "many slots, grows to its --slots while jobs wait for it, and shrinks "
      "back after --elastic-idle-ms without work")(
      "elastic-idle-ms",
      po::value(&raw.elastic_idle_ms)->default_value(raw.elastic_idle_ms),
      "worker nodes: how long an elastic slot stays unused before it "
      "goes")("job-types", po::value(&raw.job_types)->composing(),
              "worker nodes: job types offered (repeatable or "
              "comma-separated; default: every type the program has)")(
      "remote-job-types", po::value(&raw.remote_job_types)->composing(),
      "coordinators: job types only worker nodes run (their own worker "
      "programs); accepted at submit with default options (repeatable or "
      "comma-separated)")(
      "metrics-port",
      po::value(&raw.metrics_port)->default_value(raw.metrics_port),
      "worker nodes: port of GET /metrics, the node's figures in the "
      "Prometheus text format (0 = none)")(
      "metrics-host", po::value(&raw.metrics_host),
      "worker nodes: interface of --metrics-port (default 127.0.0.1); "
      "outside loopback it needs --metrics-token-file")(
      "metrics-token-file", po::value(&cfg.metrics_token_file),
      "worker nodes: file holding the bearer token scrapers send "
      "(Authorization: Bearer); readable by its owner only")(
      "metrics-allowed-host",
      po::value(&raw.metrics_allowed_hosts)->composing(),
      "worker nodes: a name the Host header of a scrape may carry besides "
      "the listen address (name or name:port; repeatable or "
      "comma-separated)");
  return d;
}

caf::error apply_cluster_options(const cluster_raw& raw, node_config& cfg) {
  for (const auto& item : raw.coordinator) {
    auto list = parse_address_list(item, "coordinator");
    if (!list)
      return std::move(list.error());
    for (auto& addr : *list) {
      for (const auto& known : cfg.coordinators)
        if (known.host == addr.host && known.port == addr.port)
          return bad("coordinator: " + addr.text() + " is given twice");
      cfg.coordinators.push_back(std::move(addr));
    }
  }
  if (raw.cluster_port < -1 || raw.cluster_port > 65535)
    return bad("cluster-port must be within [0, 65535]");
  if (raw.cluster_host.empty())
    return bad("cluster-host must not be empty");
  cfg.cluster_host = raw.cluster_host;
  cfg.cluster_port = static_cast<int32_t>(raw.cluster_port);
  if (raw.attempt_lease_ttl < 0 || raw.worker_heartbeat < 0
      || raw.drain_timeout < 0 || raw.attempt_lease_ttl > 3600000
      || raw.worker_heartbeat > 3600000 || raw.drain_timeout > 86400000)
    return bad("cluster time settings out of range");
  cfg.attempt_lease_ttl = std::chrono::milliseconds{raw.attempt_lease_ttl};
  cfg.worker_heartbeat_interval
      = std::chrono::milliseconds{raw.worker_heartbeat};
  cfg.drain_timeout = std::chrono::milliseconds{raw.drain_timeout};
  if (raw.prefetch < 0 || raw.prefetch > 1024)
    return bad("worker-prefetch must be within [0, 1024]");
  cfg.worker_prefetch = static_cast<uint32_t>(raw.prefetch);
  cfg.attempt_lease_ttl_by_type.clear();
  for (const auto& item : raw.ttl_by_type) {
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      return bad("attempt-lease-ttl must be type=ms, got '" + item + "'");
    auto ms = item.substr(eq + 1);
    if (ms.size() > 7 || !std::all_of(ms.begin(), ms.end(), [](char c) {
          return c >= '0' && c <= '9';
        }))
      return bad("attempt-lease-ttl: '" + ms + "' is not a number of ms");
    auto type = item.substr(0, eq);
    if (!cfg.attempt_lease_ttl_by_type
             .emplace(type, std::chrono::milliseconds{std::stol(ms)})
             .second)
      return bad("attempt-lease-ttl: type '" + type + "' given twice");
  }
  // Repeatable, comma-separated lists of names; empty items are skipped.
  auto split = [](const std::vector<std::string>& items) {
    std::vector<std::string> names;
    for (const auto& item : items) {
      size_t start = 0;
      while (start <= item.size()) {
        auto comma = item.find(',', start);
        auto part
            = item.substr(start, comma == std::string::npos ? std::string::npos
                                                            : comma - start);
        if (!part.empty())
          names.push_back(part);
        if (comma == std::string::npos)
          break;
        start = comma + 1;
      }
    }
    return names;
  };
  cfg.job_types = split(raw.job_types);
  cfg.remote_job_types = split(raw.remote_job_types);
  auto pools = parse_amounts(raw.resources, "resources", errc::bad_config);
  if (!pools)
    return std::move(pools.error());
  cfg.resources.clear();
  cfg.resources.insert(pools->begin(), pools->end());
  auto elastic
      = parse_amounts(raw.elastic_slots, "elastic-slots", errc::bad_config);
  if (!elastic)
    return std::move(elastic.error());
  cfg.elastic_slots.clear();
  cfg.elastic_slots.insert(elastic->begin(), elastic->end());
  if (raw.elastic_idle_ms < 100 || raw.elastic_idle_ms > 3600000)
    return bad("elastic-idle-ms must be within [100, 3600000]");
  cfg.elastic_idle = std::chrono::milliseconds{raw.elastic_idle_ms};
  if (raw.metrics_port < 0 || raw.metrics_port > 65535)
    return bad("metrics-port must be within [0, 65535] (0 = none)");
  cfg.metrics_port = static_cast<uint16_t>(raw.metrics_port);
  // Given or not is kept apart: a host without a port is refused.
  cfg.metrics_host = raw.metrics_host.empty() && cfg.metrics_port != 0
                         ? std::string{"127.0.0.1"}
                         : raw.metrics_host;
  cfg.metrics_allowed_hosts = split(raw.metrics_allowed_hosts);
  return caf::none;
}

} // namespace detail

caf::expected<coordinator_address> parse_address(const std::string& text,
                                                 const std::string& what) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size())
    return bad(what + " must be host:port, got '" + text + "'");
  auto host = text.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  auto port_text = text.substr(colon + 1);
  if (port_text.size() > 5
      || !std::all_of(port_text.begin(), port_text.end(),
                      [](char c) { return c >= '0' && c <= '9'; }))
    return bad(what + ": '" + port_text + "' is not a port");
  auto port = std::stol(port_text);
  if (port < 1 || port > 65535)
    return bad(what + ": port must be within [1, 65535]");
  return coordinator_address{host, static_cast<uint16_t>(port)};
}

caf::expected<std::vector<coordinator_address>>
parse_address_list(const std::string& text, const std::string& what) {
  std::vector<coordinator_address> out;
  size_t start = 0;
  for (;;) {
    auto comma = text.find(',', start);
    auto addr = parse_address(text.substr(start, comma - start), what);
    if (!addr)
      return std::move(addr.error());
    for (const auto& known : out)
      if (known.host == addr->host && known.port == addr->port)
        return bad(what + ": " + addr->text() + " is given twice");
    out.push_back(std::move(*addr));
    if (comma == std::string::npos)
      break;
    start = comma + 1;
  }
  return out;
}

} // namespace drover
