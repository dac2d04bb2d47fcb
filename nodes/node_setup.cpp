#include "nodes/node_setup.hpp"

#include "actors/pg_store.hpp"
#include "gateway/stream_token.hpp"
#include "runtime/errors.hpp"
#include "runtime/exec_user.hpp"
#include "runtime/log.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace drover::node {

bool has_role(const drover::node_config& cfg, const std::string& role) {
  auto r = drover::roles_of(cfg);
  return role == "coordinator" ? r.coordinator
         : role == "worker"    ? r.worker
                               : r.gateway;
}

caf::expected<drover::http::gateway_config>
gateway_config_of(const drover::node_config& cfg) {
  drover::http::gateway_config gw;
  gw.host = cfg.http_host;
  gw.port = cfg.http_port;
  gw.threads = cfg.http_threads;
  for (auto& spec : cfg.api_keys) {
    auto key = drover::http::parse_api_key(spec);
    if (!key)
      return std::move(key.error());
    for (auto& other : gw.keys)
      if (other.name == key->name || other.hash == key->hash)
        return drover::make_error(drover::errc::bad_config,
                                  "api-key: key '" + key->name
                                      + "' is configured twice");
    gw.keys.push_back(std::move(*key));
  }
  gw.default_rate = cfg.http_rate_limit;
  gw.limits.max_body_bytes = cfg.http_max_body_bytes;
  gw.limits.max_header_bytes = cfg.http_max_header_bytes;
  gw.limits.idle_timeout = cfg.http_idle_timeout;
  gw.request_timeout = cfg.http_request_timeout;
  gw.keepalive_interval = cfg.sse_keepalive;
  gw.max_streams_per_key = cfg.http_max_streams_per_key;
  gw.max_batch = cfg.http_max_batch;
  // Browsers: Host names, CORS origins, stream tokens.
  gw.allowed_hosts = cfg.http_allowed_hosts;
  gw.cors_origins = cfg.http_cors_origins;
  gw.stream_token_ttl = cfg.stream_token_ttl;
  if (!cfg.stream_token_key.empty()) {
    auto key = drover::http::decode_stream_token_key(cfg.stream_token_key);
    if (!key)
      return std::move(key.error());
    gw.stream_token_key = std::move(*key);
  }
  return gw;
}

bool exec_development_mode(const drover::node_config& cfg) {
  using drover::http::is_loopback_host;
  return cfg.api_keys.empty() && is_loopback_host(cfg.admin_host)
         && (!has_role(cfg, "gateway") || is_loopback_host(cfg.http_host))
         && std::all_of(cfg.coordinators.begin(), cfg.coordinators.end(),
                        [](const drover::coordinator_address& c) {
                          return is_loopback_host(c.host);
                        })
         && (cfg.cluster_port < 0 || is_loopback_host(cfg.cluster_host));
}

caf::expected<drover::exec_policy>
exec_policy_of(const drover::node_config& cfg) {
  drover::exec_policy policy;
  auto allowed = drover::resolve_allow_list(cfg.exec_allow);
  if (!allowed)
    return std::move(allowed.error());
  policy.allowed = std::move(*allowed);
  policy.allow_any = policy.allowed.empty() && exec_development_mode(cfg);
  policy.limits.cpu_seconds = cfg.exec_cpu_seconds;
  policy.limits.address_space_mb = cfg.exec_address_space_mb;
  policy.limits.open_files = cfg.exec_open_files;
  policy.limits.processes = cfg.exec_processes;
  // Probed here, after the switch to the node's user: what it can do is
  // what its jobs will get.
  if (!cfg.exec_cgroups.empty()) {
    auto dirs = drover::probe_cgroups(cfg.exec_cgroups);
    if (!dirs)
      return std::move(dirs.error());
    policy.cgroups = std::move(*dirs);
  }
  if (cfg.exec_user_id != 0) {
    if (auto err = drover::check_exec_user(cfg.exec_user_id))
      return err;
    policy.user_id = cfg.exec_user_id;
  }
  if (cfg.exec_memory_mb > 0) {
    if (!drover::offers_memory(policy.cgroups))
      return drover::make_error(drover::errc::bad_config,
                                "exec-memory-mb needs an --exec-cgroup with "
                                "the memory controller");
    policy.memory_mb = cfg.exec_memory_mb;
  }
  return policy;
}

caf::error check_port(const std::string& host, uint16_t port,
                      const char* option) {
  if (port == 0)
    return caf::none;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  auto service = std::to_string(port);
  if (getaddrinfo(host.c_str(), service.c_str(), &hints, &found) != 0)
    return drover::make_error(drover::errc::bad_config,
                              std::string{option} + ": cannot resolve '" + host
                                  + "'");
  std::string why;
  for (auto* ai = found; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
      continue;
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    bool bound = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
    if (!bound)
      why = std::strerror(errno);
    close(fd);
    if (bound) {
      freeaddrinfo(found);
      return caf::none;
    }
  }
  freeaddrinfo(found);
  return drover::make_error(drover::errc::unavailable,
                            std::string{"cannot listen on "} + host + ':'
                                + service + " (" + option + "): " + why);
}

std::variant<pg::lease_grant, int> claim_leases(const node_config& cfg,
                                                const sigset_t& signals) {
  // One coordinator per database: every lease before recovery. A
  // standby waits for them (and for SIGTERM/SIGINT, which end it).
  bool stopped = false;
  bool announced = false;
  std::function<bool(const std::string&)> standby;
  if (cfg.standby)
    standby = [&](const std::string& holder) {
      if (!holder.empty() && !announced) {
        announced = true;
        log::announce("node", "standing by",
                      {{"node", cfg.node_id}, {"holder", holder}});
      }
      timespec now{0, 0};
      if (sigtimedwait(&signals, nullptr, &now) > 0) {
        stopped = true;
        return false;
      }
      return true;
    };
  auto outage = [failures = 0](const caf::error& err) mutable {
    if (failures++ % 20 == 0) // the first, then every 10 s
      log::warn("node",
                "standing by without PostgreSQL (reconnecting every 500 ms)",
                {{"error", describe(err)}});
  };
  auto owner = pg::this_process(cfg.node_id);
  if (cfg.cluster_port > 0)
    owner.cluster_address
        = cfg.cluster_host + ":" + std::to_string(cfg.cluster_port);
  auto grant = pg::claim_coordinator(cfg.pg_url, owner, cfg.lease_ttl, standby,
                                     outage);
  if (!grant && stopped) {
    log::info("node", "stopped while standing by");
    return 0;
  }
  if (!grant) {
    if (is(grant.error(), errc::conflict)) {
      log::error("node", "another coordinator runs on this database",
                 {{"error", describe(grant.error())}});
      return 2;
    }
    log::error("node", "cannot take the coordinator leases",
               {{"error", describe(grant.error())}});
    return 1;
  }
  if (announced)
    log::warn("node",
              "taking over: the coordinator this node stood by for stopped "
              "renewing the partition leases",
              {{"epoch", grant->epochs.empty() ? 0 : grant->epochs[0]}});
  return std::move(*grant);
}

void coordinator_claim::release(bool orderly) {
  if (share) {
    leaving->store(true);
    if (keep_share && orderly) {
      // --keep-share-on-stop: as after a crash, the rows expire and the
      // membership lapses by themselves; a restart under this node id
      // within a lease TTL is the same member and takes the share back.
      auto held = share->held().partitions.size();
      if (held > 0)
        log::info(
            "node",
            "kept this node id's share: a restart under it takes it "
            "back; otherwise the others take it once its leases expire",
            {{"partitions", held}, {"lease_ttl_ms", share->ttl().count()}});
    } else if (auto err = share->stop_and_release()) {
      log::warn("node",
                "could not release the partition leases (they expire by "
                "themselves)",
                {{"error", describe(err)}});
    }
    share.reset(); // stops renewing (if still running)
  }
  if (!keeper)
    return;
  leaving->store(true);
  if (auto err = keeper->stop_and_release())
    log::warn("node",
              "could not release the partition leases (they expire by "
              "themselves)",
              {{"error", describe(err)}});
  keeper.reset();
}

std::chrono::milliseconds adopt_wait_of(const node_config& cfg) {
  return cfg.share_partitions ? 2 * cfg.lease_ttl
                              : std::chrono::milliseconds{0};
}

std::function<void(const std::string&)>
deposed_exit(std::shared_ptr<std::atomic<bool>> leaving) {
  return [leaving](const std::string& why) {
    if (leaving->load())
      return;
    log::error("node",
               "deposed: another coordinator took over this database's "
               "partition leases; stopping at once (exit 3)",
               {{"reason", why}});
    std::_Exit(3);
  };
}

namespace {

/// --share-partitions: migrates, reads the partition count and prepares the
/// share keeper; the partitions come once the tree runs (node_share.hpp).
std::optional<int> share_leases(const node_config& cfg,
                                coordinator_claim& claim) {
  auto db = pg::session::open(cfg.pg_url);
  caf::error err;
  if (!db)
    err = std::move(db.error());
  else
    err = db->migrate();
  caf::expected<int32_t> count{caf::error{}};
  if (!err) {
    count = pg::partition_count(*db);
    if (!count)
      err = std::move(count.error());
  }
  std::optional<pg::lease_holder> exclusive;
  if (!err) {
    auto holder = pg::exclusive_holder(*db);
    if (!holder)
      err = std::move(holder.error());
    else
      exclusive = std::move(*holder);
  }
  if (err) {
    log::error("node", "cannot prepare the database for sharing partitions",
               {{"error", describe(err)}});
    return 1;
  }
  if (exclusive) {
    log::error("node",
               "a coordinator that does not share the partitions runs on "
               "this database (started without --share-partitions): stop it "
               "first, or start this one without the option",
               {{"holder", pg::describe(*exclusive)}});
    return 2;
  }
  auto owner = pg::this_process(cfg.node_id);
  if (cfg.cluster_port > 0)
    owner.cluster_address
        = cfg.cluster_host + ":" + std::to_string(cfg.cluster_port);
  // Another process under this node id that still beats: refused (a
  // predecessor that crashed or is paused is replaced).
  auto twin = pg::live_twin(
      *db, owner, cfg.lease_ttl,
      std::max(3 * cfg.lease_renew_interval, cfg.lease_ttl / 2));
  if (!twin) {
    log::error("node", "cannot prepare the database for sharing partitions",
               {{"error", describe(twin.error())}});
    return 1;
  }
  if (*twin) {
    log::error("node",
               "another coordinator runs under this node id: give each "
               "coordinator its own --node-id",
               {{"node", cfg.node_id}, {"instance", (*twin)->instance}});
    return 2;
  }
  // Mixed lease TTLs work, but a survivor with a shorter one gives up on a
  // dead coordinator's re-reported attempts (twice its own TTL) before it
  // can take their partitions (the node then offers them on).
  if (auto others = pg::other_lease_ttls(*db, owner, cfg.lease_ttl);
      others && !others->empty())
    log::warn("node",
              "sharing coordinators run with another --lease-ttl-ms than "
              "this one: give all of them the same",
              {{"lease_ttl_ms", cfg.lease_ttl.count()}, {"others", *others}});
  pg::lease_grant none;
  none.owner = owner;
  claim.fence = none.fence(cfg.lease_ttl);
  claim.partition_count = *count;
  pg::share_keeper::config kc;
  kc.conninfo = cfg.pg_url;
  kc.owner = std::move(owner);
  kc.ttl = cfg.lease_ttl;
  kc.interval = cfg.lease_renew_interval;
  kc.deposed = deposed_exit(claim.leaving);
  kc.replaced = [](const std::string& why) {
    // Everything held is handed over already: an orderly stop, as on
    // SIGTERM (exit 0, so a unit that restarts on failure does not start a
    // twin again), which lets the worker nodes go.
    log::error("node",
               "replaced: a newer coordinator runs under this node id; "
               "stopping",
               {{"reason", why}});
    ::kill(::getpid(), SIGTERM);
  };
  kc.log = [](const std::string& line) { log::info("leases", line); };
  claim.share = std::make_unique<pg::share_keeper>(std::move(kc));
  claim.keep_share = cfg.keep_share_on_stop;
  return std::nullopt;
}

} // namespace

std::optional<int> hold_leases(const node_config& cfg, const sigset_t& signals,
                               coordinator_claim& claim) {
  if (cfg.share_partitions)
    return share_leases(cfg, claim);
  auto claimed = claim_leases(cfg, signals);
  if (auto* code = std::get_if<int>(&claimed))
    return *code;
  auto grant = std::get<pg::lease_grant>(std::move(claimed));
  claim.fence = grant.fence(cfg.lease_ttl);
  claim.epochs->hold(grant.partitions, grant.epochs);
  pg::lease_keeper::config kc;
  kc.conninfo = cfg.pg_url;
  kc.grant = std::move(grant);
  kc.ttl = cfg.lease_ttl;
  kc.interval = cfg.lease_renew_interval;
  kc.deposed = deposed_exit(claim.leaving);
  kc.log = [](const std::string& line) { log::warn("leases", line); };
  claim.keeper = std::make_unique<pg::lease_keeper>(std::move(kc));
  return std::nullopt;
}

void use_postgres(const node_config& cfg, const coordinator_claim& claim,
                  job_system_config& jobs) {
  pg_store_config pg;
  pg.conninfo = cfg.pg_url;
  pg.retain_finished = std::chrono::hours{24} * cfg.retention_days;
  if (cfg.store_cache_jobs != 0)
    pg.max_cached_jobs = static_cast<size_t>(cfg.store_cache_jobs);
  pg.fence = claim.fence;
  pg.member_stale = 2 * cfg.lease_ttl;
  if (claim.keeper)
    // Self-fencing: no dispatch once the last renewal is older than
    // three quarters of the TTL on this process's own clock.
    jobs.queue.may_dispatch = claim.keeper->freshness(cfg.lease_ttl / 4);
  if (claim.share) {
    // Sharing: the partitions come and go (node_share.hpp); a store or
    // queue started again (one_for_all) starts with what is held now.
    auto* share = claim.share.get();
    jobs.queue.may_dispatch = share->freshness(cfg.lease_ttl / 4);
    jobs.queue.partitions.clear();
    jobs.queue.partition_count = claim.partition_count;
    jobs.queue.owned_now = [share] { return share->held().partitions; };
    jobs.queue.handover_grace = cfg.lease_ttl;
    jobs.queue.cluster_type_limits = true;
    // A rate limit or breaker set at run time at another coordinator (or
    // through a gateway, which sends it to one) applies here within this.
    jobs.queue.settings_poll = std::chrono::milliseconds{1000};
    // A dead coordinator's worker nodes come to a survivor at once: their
    // attempts wait for their partitions to be taken.
    jobs.queue.adopt_wait = adopt_wait_of(cfg);
    // A dead coordinator's agent may report an attempt to another
    // survivor, which keeps it waiting that long and then says it is
    // another coordinator's (CoordinatorReply.ownedElsewhere, in its next
    // reply: a heartbeat); the worker node offers it here and stops it if
    // nobody claims it within three heartbeats and a second
    // (actors/worker_agent_handover.cpp): a taken partition's attempts are
    // run again only after all that, not after one attempt TTL — no two
    // runs at once (review of session 16, finding 1; of session 30: the
    // claim window). The agent reports at least half an attempt TTL after
    // the death (it tries its own coordinator alone that long), the take
    // comes a lease TTL after it (less a renewal interval): a second more
    // covers the rest.
    // A worker node also waits for a hand-over to be claimed two attempt
    // lease TTLs, four heartbeats and a second before it stops the attempt
    // (lend_deadline): the grace covers that too, whichever lease TTL is
    // longer.
    if (jobs.remote_workers)
      jobs.queue.adopt_grace = std::max(
          {jobs.queue.adopt_grace,
           jobs.queue.adopt_wait + 5 * cfg.worker_heartbeat_interval
               + std::chrono::seconds{2},
           2 * cfg.attempt_lease_ttl + 5 * cfg.worker_heartbeat_interval
               + std::chrono::seconds{2}});
    // A write found a partition taken over: a renewal, now, finds which
    // and the keeper drops it (the fence refuses its writes meanwhile).
    pg.on_deposed = [share](const std::string& why) {
      log::warn("leases", "a write found a partition taken over",
                {{"reason", why}});
      share->poke();
    };
    jobs.make_store = [pg, share, ttl = cfg.lease_ttl](caf::actor_system& sys) {
      auto now = pg;
      now.fence = share->held().fence(ttl);
      return spawn_pg_store(sys, now);
    };
  } else if (claim.fence) {
    // New jobs go into the partitions this coordinator owns: all of them
    // for now (claim_coordinator takes every lease).
    jobs.queue.partitions = claim.fence->partitions;
    jobs.queue.partition_count
        = static_cast<int32_t>(claim.fence->partitions.size());
  }
  if (!claim.share) {
    pg.on_deposed = deposed_exit(claim.leaving);
    jobs.make_store
        = [pg](caf::actor_system& sys) { return spawn_pg_store(sys, pg); };
  }
}

} // namespace drover::node
