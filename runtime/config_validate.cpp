// The node's configuration checks (validate) and the webhook secret's
// decoding, apart from the option parsing in config.cpp.

#include "runtime/config.hpp"

#include "runtime/detail/config_admission.hpp"
#include "runtime/detail/config_cluster.hpp"
#include "runtime/errors.hpp"
#include "runtime/ip_address.hpp"

#include <kj/encoding.h>

#include <algorithm>
#include <cctype>
#include <string>
#include <vector>

namespace drover {

namespace {

const std::vector<std::string> known_roles{"all", "coordinator", "worker",
                                           "gateway"};

} // namespace

caf::expected<std::string> decode_webhook_secret(const std::string& secret) {
  static const std::string prefix = "whsec_";
  if (secret.compare(0, prefix.size(), prefix) != 0)
    return make_error(errc::bad_config,
                      "webhook-secret must look like whsec_<base64>");
  // KJ's decoder (as in runtime/codec.cpp) flags any character outside
  // the base64 alphabet.
  auto text = secret.substr(prefix.size());
  auto bytes
      = kj::decodeBase64(kj::ArrayPtr<const char>{text.data(), text.size()});
  if (bytes.hadErrors)
    return make_error(errc::bad_config, "webhook-secret: the part after "
                                        "whsec_ is not valid base64");
  if (bytes.size() < 24 || bytes.size() > 64)
    return make_error(errc::bad_config,
                      "webhook-secret must encode 24 to 64 bytes, not "
                          + std::to_string(bytes.size())
                          + " (e.g. whsec_$(openssl rand -base64 32))");
  // Built in place: moving a long string into caf::expected made GCC 12
  // warn (-Warray-bounds, a false positive on the short-string branch).
  caf::expected<std::string> key{std::string{}};
  key->assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  return key;
}

caf::error validate(const node_config& cfg) {
  auto bad = [](std::string what) {
    return make_error(errc::bad_config, std::move(what));
  };
  if (cfg.node_id.empty() || cfg.node_id.size() > 128)
    return bad("node-id must be 1 to 128 characters");
  for (auto c : cfg.node_id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'
          || c == '.'))
      return bad("node-id may only contain letters, digits, '-', '_' and '.'");
  {
    // "<id>.c<N>" is what a worker node sharing the partitions calls its
    // agent for its N-th coordinator: a node named so would collide with it.
    auto dot = cfg.node_id.rfind(".c");
    if (dot != std::string::npos && dot + 2 < cfg.node_id.size()
        && std::all_of(cfg.node_id.begin() + static_cast<long>(dot) + 2,
                       cfg.node_id.end(),
                       [](char c) { return c >= '0' && c <= '9'; }))
      return bad("node-id may not end in '.c' and digits ('" + cfg.node_id
                 + "'): a worker node sharing the partitions names its "
                   "agents '<node-id>.c1', '.c2', ..., and a node named so "
                   "would collide with one");
  }
  if (cfg.roles.empty())
    return bad("roles must name at least one role");
  for (const auto& r : cfg.roles)
    if (std::find(known_roles.begin(), known_roles.end(), r)
        == known_roles.end())
      return bad("unknown role '" + r
                 + "' (known: all, coordinator, worker, gateway)");
  if (auto err = validate_cluster(cfg))
    return err;
  if (cfg.admin_host.empty())
    return bad("admin-host must not be empty");
  if (cfg.scheduler_threads < 1 || cfg.scheduler_threads > 256)
    return bad("scheduler-threads must be within [1, 256]");
  if (cfg.scheduler_policy != "stealing" && cfg.scheduler_policy != "sharing")
    return bad("scheduler-policy must be 'stealing' or 'sharing'");
  if (!log::parse_level(cfg.log_level))
    return bad("log-level must be one of trace, debug, info, warn, error, "
               "off; got '"
               + cfg.log_level + "'");
  if (!log::parse_format(cfg.log_format))
    return bad("log-format must be 'text' or 'json', got '" + cfg.log_format
               + "'");
  if (cfg.heartbeat_interval.count() < 10)
    return bad("heartbeat-interval-ms must be at least 10");
  if (cfg.connection_timeout <= cfg.heartbeat_interval)
    return bad("connection-timeout-ms must exceed heartbeat-interval-ms");
  if (cfg.shutdown_timeout.count() < 1)
    return bad("shutdown-timeout-ms must be positive");
  if (cfg.state_dir.empty())
    return bad("state-dir must not be empty");
  if (cfg.store != "memory" && cfg.store != "postgres")
    return bad("store must be 'postgres' or 'memory', got '" + cfg.store + "'");
  if (cfg.store == "postgres" && cfg.pg_url.empty()
      && roles_of(cfg).coordinator)
    return bad("--store postgres needs --pg-url");
  if (cfg.standby && cfg.store != "postgres")
    return bad("--standby needs --store postgres: a standby waits for the "
               "partition leases of a database");
  if (cfg.share_partitions && cfg.store != "postgres"
      && roles_of(cfg).coordinator)
    return bad("--share-partitions needs --store postgres: coordinators "
               "share the partitions of a database");
  if (cfg.share_partitions && cfg.standby)
    return bad("--share-partitions and --standby exclude each other: a "
               "coordinator sharing the partitions takes over a dead one's "
               "share by itself");
  if (cfg.keep_share_on_stop
      && (!cfg.share_partitions || !roles_of(cfg).coordinator))
    return bad("--keep-share-on-stop is for coordinators started with "
               "--share-partitions: only they have a share to keep");
  if (cfg.retention_days > 36500)
    return bad("retention-days must be at most 36500");
  if (cfg.store_cache_jobs != 0 && cfg.store != "postgres")
    return bad("store-cache-jobs is for --store postgres (the memory store "
               "keeps every job)");

  if (cfg.lease_ttl.count() < 500 || cfg.lease_ttl.count() > 600000)
    return bad("lease-ttl-ms must be within [500, 600000]");
  if (cfg.lease_renew_interval.count() < 50
      || cfg.lease_renew_interval * 2 >= cfg.lease_ttl)
    return bad("lease-renew-interval-ms must be at least 50 and less than "
               "half of lease-ttl-ms (a renewal may fail once and the next "
               "still comes in time)");
  if (!cfg.webhook_secret.empty())
    if (auto key = decode_webhook_secret(cfg.webhook_secret); !key)
      return std::move(key.error());
  for (const auto& cidr : cfg.webhook_allow)
    if (auto net = parse_ip_network(cidr); !net)
      return bad("webhook-allow: " + describe(net.error()));
  {
    auto period = cfg.webhook_retry_period.count();
    auto initial = cfg.webhook_initial_backoff.count();
    auto max = cfg.webhook_max_backoff.count();
    auto timeout = cfg.webhook_timeout.count();
    if (period < 0 || period > 30LL * 86400000)
      return bad("webhook-retry-period-ms must be within [0, 2592000000] "
                 "(30 days)");
    if (initial < 1 || initial > 86400000)
      return bad("webhook-initial-backoff-ms must be within [1, 86400000]");
    if (max < initial || max > 7LL * 86400000)
      return bad("webhook-max-backoff-ms must be at least "
                 "webhook-initial-backoff-ms and at most 604800000 (7 days)");
    if (timeout < 1 || timeout > 600000)
      return bad("webhook-timeout-ms must be within [1, 600000]");
    if (cfg.webhook_max_response_bytes < 1
        || cfg.webhook_max_response_bytes > 16 * 1024 * 1024)
      return bad("webhook-max-response-bytes must be within [1, 16777216]");
  }
  return caf::none;
}

} // namespace drover
