// drover::node_main (include/drover/worker.hpp): one Drover node, as
// drover-node runs it (nodes/drover_node.cpp) and as a team's own worker
// program does with its job types added. Which roles it plays comes from
// its config; `--roles all` on one machine is the zero-setup default.
//
// Life cycle: parse and validate the config (exit 2 on a bad one), start the
// root supervisor with the job system below it (store, progress publisher,
// queue, workers; the built-in job types `exec` and `sleep`; the tree is
// made by nodes/node_tree.cpp), publish the node API actor (CAF network
// layer; droverctl talks to it), print one "ready" line, then wait. SIGINT
// or SIGTERM starts an orderly shutdown of the tree (exit 0); a root
// supervisor that escalates ends the process with exit 1.
//
// With --store postgres the node is the database's coordinator: after
// checking that its ports are free it takes every partition lease
// (runtime/pg_lease.hpp) before the job system starts — exit 2 naming the
// holder if another live process has them, or with --standby, wait until
// they expire unrenewed and take over — renews them while it runs (its
// queue holds dispatch when a renewal is overdue), releases them after an
// orderly shutdown, and exits 3 at once if another coordinator takes them
// over (docs/storage.md, docs/cluster.md). A gateway node follows its
// coordinators: when the one it joined goes, it joins the next.

#include "drover/worker.hpp"

#include "actors/api.hpp"
#include "actors/job_system.hpp"
#include "gateway/gateway.hpp"
#include "gateway/stream_token.hpp"
#include "gateway/webhook_dispatcher.hpp"
#include "nodes/admin_door.hpp"
#include "nodes/gateway_router.hpp"
#include "nodes/node_roles.hpp"
#include "nodes/node_setup.hpp"
#include "nodes/node_share.hpp"
#include "nodes/node_tree.hpp"
#include "nodes/worker_metrics.hpp"
#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/exec_policy.hpp"
#include "runtime/exec_user.hpp"
#include "runtime/log.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/privileges.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/after.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <optional>
#include <pthread.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <variant>

namespace {

using drover::node::check_port;
using drover::node::coordinator_claim;
using drover::node::exec_development_mode;
using drover::node::gateway_config_of;
using drover::node::has_role;
using drover::node::node_tree;

int run(const drover::node_config& cfg, const drover::node_program& program,
        const sigset_t& signals) {
  caf::actor_system_config caf_cfg;
  drover::register_types(caf_cfg);
  caf_cfg.load<caf::io::middleman>();
  if (!cfg.tls_certificate.empty()) {
    if (auto err = drover::node::check_tls(cfg)) {
      drover::log::error("node", drover::describe(err));
      return 2;
    }
    drover::tls_errors_linked();
    caf_cfg.load<caf::openssl::manager>();
  }
  // Read after the switch to --run-as, as the node's user, like the TLS key.
  auto metrics_token = drover::node::read_metrics_token(cfg);
  if (!metrics_token) {
    drover::log::error("node", drover::describe(metrics_token.error()));
    return 2;
  }
  drover::apply(cfg, caf_cfg);
  caf::actor_system sys{caf_cfg};
  auto handles = std::make_shared<drover::job_system_handles>();
  auto roles = drover::roles_of(cfg);
  // Ports first, then the database: a node that cannot listen exits
  // before it migrates or takes a lease.
  for (auto err :
       {roles.coordinator
            ? check_port(cfg.admin_host, cfg.admin_port, "admin-port")
            : caf::error{},
        roles.gateway ? check_port(cfg.http_host, cfg.http_port, "http-port")
                      : caf::error{},
        roles.coordinator && cfg.cluster_port > 0 ? check_port(
            cfg.cluster_host, static_cast<uint16_t>(cfg.cluster_port),
            "cluster-port")
                                                  : caf::error{},
        cfg.metrics_port > 0
            ? check_port(cfg.metrics_host, cfg.metrics_port, "metrics-port")
            : caf::error{}})
    if (err) {
      drover::log::error("node", drover::describe(err));
      return drover::is(err, drover::errc::bad_config) ? 2 : 1;
    }
  coordinator_claim claim;
  if (roles.coordinator && cfg.store == "postgres")
    if (auto code = drover::node::hold_leases(cfg, signals, claim))
      return *code;
  auto worker = std::make_shared<drover::node::worker_shared>();
  auto webhooks_running = std::make_shared<drover::webhook_dispatcher_slot>();
  auto tree = node_tree(cfg, program, handles, claim, worker, webhooks_running);
  if (!tree) {
    drover::log::error("node", drover::describe(tree.error()));
    return 2;
  }
  auto root = drover::spawn_supervisor(sys, std::move(*tree));
  if (!root) {
    drover::log::error("node", drover::describe(root.error()));
    return 1;
  }
  {
    // "ready" must mean ready: the root starts its children while it
    // initializes, so once it answers a describe, the job system's parts
    // exist and the API can reach them.
    caf::scoped_actor probe{sys};
    caf::error not_up;
    probe
        ->request(*root, std::chrono::seconds{30}, drover::describe_atom::value)
        .receive([](drover::tree_node&) {},
                 [&](caf::error& err) { not_up = std::move(err); });
    if (not_up) {
      drover::log::error("node", "the node did not start",
                         {{"error", drover::describe(not_up)}});
      caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
      return 1;
    }
  }
  if (claim.share)
    // The job system runs: the share keeper may hand it partitions.
    // Each step of a change waits at most a quarter of the TTL: the
    // keeper renews between steps, and a slow store (a retention sweep in
    // flight) must not let the leases lapse.
    claim.share->start(drover::node::share_hooks(
        sys, handles, cfg.lease_ttl / 4, claim.epochs, [webhooks_running] {
          if (auto d = webhooks_running->get())
            caf::anon_send(d, drover::partitions_atom::value);
        }));
  // The node API: a coordinator's own, or (gateway node) its
  // coordinator's; a worker node has none.
  drover::api_actor api;
  // A gateway node's coordinator's node-protocol version (what its API
  // serves), for the relay.
  uint32_t api_protocol = 0;
  // A gateway node in front of sharing coordinators: joins all of them and
  // routes each request to its partition's owner (nodes/gateway_router.hpp).
  std::optional<drover::node::api_router> router;
  caf::actor cluster;
  uint16_t cluster_port = 0;
  caf::expected<uint16_t> port{uint16_t{0}};
  std::optional<drover::node::admin_door> door;
  auto stop_all = [&] {
    caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
    if (door)
      door->close();
    if (api && roles.coordinator)
      caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
    if (cluster)
      caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
  };
  if (roles.coordinator) {
    if (cfg.cluster_port >= 0) {
      auto opened = drover::node::open_cluster_port(
          sys, cfg, handles, claim.epochs,
          [&](drover::cluster_endpoint_local endpoint) {
            return drover::spawn_api(sys, handles, *root, endpoint);
          });
      if (!opened) {
        drover::log::error("node", drover::describe(opened.error()));
        stop_all();
        return 1;
      }
      api = opened->api;
      cluster = opened->endpoint;
      cluster_port = opened->port;
      if (cfg.join_secret.empty())
        drover::log::warn("cluster",
                          "any process that reaches the cluster port may join "
                          "as a worker or gateway (no --join-secret; "
                          "loopback only)");
    } else {
      api = drover::spawn_api(sys, handles, *root);
    }
    // The admin port speaks the client protocol (runtime/
    // client_protocol.hpp): every request's API key is checked at the door.
    auto opened = drover::node::admin_door::open(sys, cfg, api);
    if (!opened) {
      drover::log::error("node", drover::describe(opened.error()));
      stop_all();
      return drover::is(opened.error(), drover::errc::bad_config) ? 2 : 1;
    }
    door.emplace(std::move(*opened));
    port = door->port();
  } else if (roles.gateway && cfg.share_partitions) {
    router.emplace(sys, cfg);
    if (auto err = router->start(cfg.connection_timeout)) {
      drover::log::error("node", "the gateway could not join a coordinator",
                         {{"error", drover::describe(err)}});
      stop_all();
      return drover::is(err, drover::errc::forbidden) ? 2 : 1;
    }
    api = router->handle();
  } else if (roles.gateway) {
    auto joined
        = drover::node::join_as_gateway(sys, cfg, cfg.connection_timeout);
    if (!joined) {
      drover::log::error("node", "the gateway could not join its coordinator",
                         {{"error", drover::describe(joined.error())}});
      stop_all();
      return drover::is(joined.error(), drover::errc::forbidden) ? 2 : 1;
    }
    api = joined->api;
    api_protocol = joined->protocol;
  }
  // A gateway node's HTTP gateway talks to its coordinator through a relay,
  // which the node points at the next coordinator after a failover.
  std::optional<drover::node::api_relay> relay;
  if (roles.gateway && !roles.coordinator && !router) {
    relay.emplace(sys);
    relay->set({api, api_protocol});
  }
  std::unique_ptr<drover::http::gateway> gateway;
  if (roles.gateway) {
    auto gw_cfg = gateway_config_of(cfg);
    caf::expected<std::unique_ptr<drover::http::gateway>> started{caf::none};
    if (gw_cfg)
      started = drover::http::gateway::start(sys, relay ? relay->handle() : api,
                                             std::move(*gw_cfg));
    if (!gw_cfg || !started) {
      auto err = !gw_cfg ? gw_cfg.error() : started.error();
      drover::log::error("node", drover::describe(err));
      stop_all();
      return drover::is(err, drover::errc::bad_config) ? 2 : 1;
    }
    gateway = std::move(*started);
    if (gateway->development_mode())
      drover::log::warn("gateway",
                        "the HTTP gateway runs in DEVELOPMENT MODE: no API "
                        "keys are configured, so every request is accepted "
                        "without authentication (loopback only). Configure "
                        "--api-key before serving anyone else.");
    if (cfg.stream_token_key.empty())
      drover::log::warn("gateway",
                        "stream tokens are signed with a random key made at "
                        "start: they stop working when this process ends "
                        "and no other gateway accepts them (set "
                        "--stream-token-key to share one).");
  }
  // A worker node's own GET /metrics (--metrics-port).
  std::unique_ptr<drover::http::metrics_endpoint> metrics;
  if (cfg.metrics_port > 0) {
    auto opened = drover::node::open_worker_metrics(
        sys, cfg, std::move(*metrics_token), worker);
    if (!opened) {
      drover::log::error("node", drover::describe(opened.error()));
      stop_all();
      return drover::is(opened.error(), drover::errc::bad_config) ? 2 : 1;
    }
    metrics = std::move(*opened);
  }
  if (cfg.exec_allow.empty() && roles.worker) {
    if (exec_development_mode(cfg))
      drover::log::warn("exec",
                        "exec jobs may run ANY program on this machine "
                        "(development mode: no --exec-allow, no API keys, "
                        "loopback only). Configure --exec-allow before "
                        "serving anyone else.");
    else
      drover::log::info("exec", "exec jobs are refused: no --exec-allow is "
                                "configured.");
  }
  if (roles.worker)
    drover::log::info("exec",
                      cfg.exec_cgroups.empty()
                          ? "exec jobs get rlimits only (no --exec-cgroup): "
                            "processes are limited per user, not per job"
                          : "exec jobs get a cgroup each (pids.max, memory "
                            "limit; what they leave running dies with them)",
                      {{"cgroups", cfg.exec_cgroups.size()}});
  {
    // The one line scripts and tests wait for (stdout, in the log's
    // format; docs/operations.md).
    std::string role_list;
    for (const auto& r : cfg.roles)
      role_list += (role_list.empty() ? "" : ",") + r;
    std::vector<drover::log::field> fields{{"node", cfg.node_id},
                                           {"roles", role_list}};
    if (roles.coordinator) {
      fields.push_back({"store", cfg.store});
      fields.push_back({"admin", cfg.admin_host + ':' + std::to_string(*port)});
    }
    if (cluster)
      fields.push_back(
          {"cluster", cfg.cluster_host + ':' + std::to_string(cluster_port)});
    if (!cfg.coordinators.empty()) {
      std::string list;
      for (const auto& c : cfg.coordinators)
        list += (list.empty() ? "" : ",") + c.text();
      fields.push_back({"coordinator", list});
    }
    if (gateway)
      fields.push_back(
          {"http", cfg.http_host + ':' + std::to_string(gateway->port())});
    if (metrics)
      fields.push_back({"metrics", cfg.metrics_host + ':'
                                       + std::to_string(metrics->port())});
    if (gateway && gateway->development_mode())
      fields.push_back({"development_mode", true});
    drover::log::announce("node", "ready", std::move(fields));
  }
  // Signals are blocked in every thread (the mask was set before CAF
  // started its threads); this one thread takes them synchronously.
  std::atomic<bool> asked_to_stop{false};
  std::mutex mx;
  std::condition_variable cv;
  bool root_down = false;
  std::thread signal_waiter{[&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (roles.worker && !roles.coordinator) {
      // A worker node drains first: no new leases, running attempts finish
      // and their outcomes are settled (or the drain deadline passes).
      // (Every agent with --share-partitions: one per coordinator.)
      auto agents = worker->current_agents();
      std::unique_lock<std::mutex> wg{worker->mx};
      if (!worker->fatal && !agents.empty()) {
        for (const auto& agent : agents)
          caf::anon_send(agent, drover::stop_atom::value);
        worker->cv.wait_for(wg, cfg.drain_timeout + std::chrono::seconds{2},
                            [&] { return worker->drained; });
      }
    }
    std::unique_lock<std::mutex> guard{mx};
    if (root_down)
      return; // woken by main after the tree ended on its own
    asked_to_stop = true;
    guard.unlock();
    if (cluster) {
      // Worker nodes are let go first, while the store still writes: they
      // keep their running attempts and unsettled outcomes for the next
      // coordinator, and no outcome is settled by a link whose job
      // supervisor is already gone.
      caf::scoped_actor waiter{sys};
      waiter->monitor(cluster);
      caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
      waiter->receive([](caf::down_msg&) {},
                      caf::after(std::chrono::seconds{2}) >> [] {});
    }
    guard.lock();
    caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
    // The tree stops child by child within their own timeouts; this is
    // the backstop for a tree that hangs anyway.
    if (!cv.wait_for(guard, cfg.shutdown_timeout, [&] { return root_down; })) {
      drover::log::error(
          "node",
          "orderly shutdown exceeded its deadline; "
          "exiting hard",
          {{"shutdown_timeout_ms", cfg.shutdown_timeout.count()}});
      std::_Exit(1);
    }
  }};
  caf::scoped_actor self{sys};
  self->monitor(*root);
  if (api && !roles.coordinator && !router)
    self->monitor(api); // a gateway node's coordinator (the router rejoins
                        // its own)
  if (cluster)
    self->monitor(cluster);
  if (door)
    self->monitor(door->handle());
  caf::error reason;
  bool down = false;
  self->receive_while([&] { return !down; })([&](caf::down_msg& dm) {
    if (door && dm.source == door->handle().address()) {
      if (!asked_to_stop && !door->reopen(sys))
        self->monitor(door->handle());
      return;
    }
    if (dm.source == api.address() && !roles.coordinator) {
      // Its coordinator is gone (a failover, a restart): join the next one
      // of --coordinator; meanwhile requests fail with 503.
      drover::log::warn("node",
                        "the gateway lost its coordinator; joining the next",
                        {{"reason", sys.render(dm.reason)}});
      relay->set({});
      auto joined
          = drover::node::join_as_gateway(sys, cfg, cfg.connection_timeout);
      if (joined) {
        api = joined->api;
        relay->set(*joined);
        self->monitor(api);
        drover::log::info("node", "the gateway joined a coordinator again");
        return;
      }
      drover::log::error("node",
                         "the gateway found no coordinator; stopping (run it "
                         "under a supervisor that restarts it)",
                         {{"error", drover::describe(joined.error())}});
      caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
      return;
    }
    if (cluster && dm.source == cluster.address()) {
      if (asked_to_stop)
        return; // stopped first on purpose; the tree follows
      drover::log::error("node",
                         "the cluster endpoint stopped; stopping the node so "
                         "that worker nodes fail over cleanly",
                         {{"reason", sys.render(dm.reason)}});
      caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
      return;
    }
    reason = std::move(dm.reason);
    down = true;
  });
  {
    std::lock_guard<std::mutex> guard{mx};
    root_down = true;
  }
  cv.notify_all();
  if (!asked_to_stop) {
    // The tree gave up on its own: wake the signal thread so it can end.
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
  }
  signal_waiter.join();
  if (metrics)
    metrics->stop();
  if (gateway)
    gateway->stop();
  if (api && roles.coordinator)
    caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  if (door)
    door->close();
  if (cluster)
    caf::anon_send_exit(cluster, caf::exit_reason::user_shutdown);
  if (worker->fatal) {
    drover::log::error("node", "stopped: the coordinator refused this node");
    return 2;
  }
  // The tree (the store with it) has stopped: nothing writes any more.
  bool orderly
      = asked_to_stop && (!reason || reason == caf::exit_reason::user_shutdown);
  claim.release(orderly);
  if (orderly) {
    drover::log::announce("node", "stopped", {{"node", cfg.node_id}});
    return 0;
  }
  drover::log::error("node", "root supervisor exited",
                     {{"reason", sys.render(reason)}});
  return 1;
}

} // namespace

int drover::node_main(int argc, char** argv, const node_program& program) {
  auto parsed = drover::parse_node_config(argc, argv, std::cout);
  if (!parsed) {
    std::cerr << program.name << ": " << drover::describe(parsed.error())
              << "\n(see " << program.name << " --help)\n";
    return 2;
  }
  if (parsed->exit_now)
    return 0;
  // From here on everything the node says is a log record (runtime/log.hpp);
  // only a command line it cannot parse is answered as plain CLI text.
  drover::log::configure(drover::log_options_of(parsed->config));
  // pg_stat_activity names the node of each session.
  drover::pg::set_application_name("drover " + parsed->config.node_id);
  {
    // Root goes first, before any thread, port or connection exists
    // (runtime/privileges.hpp): nothing after this line runs as root.
    const auto& cfg = parsed->config;
    auto low = [](uint16_t port) { return port > 0 && port < 1024; };
    bool low_ports = low(cfg.admin_port)
                     || (has_role(cfg, "gateway") && low(cfg.http_port));
    if (auto err = drover::enter_run_as(cfg.run_as, low_ports)) {
      drover::log::error("node", drover::describe(err));
      return 2;
    }
  }
  // Block the stop signals before any thread exists so every thread
  // inherits the mask and only the waiter thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return run(parsed->config, program, signals);
}
