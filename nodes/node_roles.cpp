#include "nodes/node_roles.hpp"
#include "nodes/events_after.hpp"
#include "nodes/node_setup.hpp"
#include "nodes/router_subscriptions.hpp"

#include "actors/cluster_endpoint.hpp"
#include "actors/queue.hpp"
#include "actors/worker.hpp"
#include "runtime/connect.hpp"
#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/partition.hpp"
#include "runtime/type_ids.hpp"
#include "runtime/typed_forward.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/io/middleman.hpp>
#include <caf/io/middleman_actor.hpp>
#include <caf/message_view.hpp>
#include <caf/openssl/manager.hpp>
#include <caf/openssl/publish.hpp>
#include <caf/response_promise.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <csignal>
#include <set>
#include <thread>
#include <tuple>
#include <unistd.h>

namespace drover::node {

caf::error check_tls(const node_config& cfg) {
  return drover::check_tls(tls_files_of(cfg), "--tls-");
}

namespace {

/// One agent and its local workers: "worker"'s subtree for one coordinator
/// (all of them but with share `share` of `shares`, --share-partitions).
supervisor_spec agent_subtree(std::string name, worker_agent_config ac,
                              std::shared_ptr<const handler_registry> handlers,
                              std::shared_ptr<worker_shared> shared,
                              size_t share) {
  ac.counters = shared->counters[share];
  ac.epochs = shared->epochs;
  ac.handovers = shared->handovers;
  ac.on_fatal = [shared](const std::string&) {
    {
      std::lock_guard<std::mutex> guard{shared->mx};
      shared->fatal = true;
      shared->drained = true;
    }
    shared->cv.notify_all();
    kill(getpid(), SIGTERM); // wakes the signal thread: orderly exit 2
  };
  ac.on_drained = [shared, share] {
    {
      std::lock_guard<std::mutex> guard{shared->mx};
      shared->drained_shares[share] = true;
      bool all = true;
      for (size_t i = 0; i < shared->agents.size(); ++i)
        all = all && (!shared->agents[i] || shared->drained_shares[i]);
      shared->drained = all;
    }
    shared->cv.notify_all();
  };
  auto slots = ac.slots;
  child_spec agent;
  agent.name = "agent";
  agent.describable = true;
  agent.start
      = [ac, shared, share](caf::actor_system& sys, const caf::actor_addr&) {
          auto a = spawn_worker_agent(sys, ac);
          std::lock_guard<std::mutex> guard{shared->mx};
          shared->agents[share] = a;
          return child_handle(a);
        };
  supervisor_spec workers{"workers", {}, {}};
  workers.flags.strat = strategy::one_for_one;
  for (const auto& [cls, n] : slots)
    for (uint32_t i = 0; i < n; ++i) {
      child_spec w;
      w.name = cls + "-" + std::to_string(i);
      w.start = [handlers, shared, share, cls = cls,
                 id = w.name](caf::actor_system& sys, const caf::actor_addr&) {
        worker_config wc;
        wc.worker_id = id;
        wc.resource_class = cls;
        // The node's agent is the worker's home (worker_home_actor is a
        // subset of worker_agent_local).
        wc.home = shared->agent_of(share);
        wc.handlers = handlers;
        wc.clock_ms = system_clock_ms;
        return child_handle(spawn_worker(sys, std::move(wc)));
      };
      workers.children.push_back(std::move(w));
    }
  supervisor_spec node{std::move(name), {}, {}};
  node.flags.strat = strategy::one_for_all;
  node.children = {std::move(agent), supervisor_child(std::move(workers))};
  return node;
}

} // namespace

child_spec worker_node_child(const node_config& cfg,
                             std::shared_ptr<const handler_registry> handlers,
                             std::shared_ptr<worker_shared> shared) {
  worker_agent_config ac;
  ac.node_id = cfg.node_id;
  ac.coordinators = cfg.coordinators;
  ac.join_secret = cfg.join_secret;
  ac.tls = !cfg.tls_certificate.empty();
  ac.slots = cfg.slots;
  ac.resources = cfg.resources;
  ac.elastic_slots = cfg.elastic_slots;
  ac.elastic_idle = cfg.elastic_idle;
  ac.job_types = cfg.job_types.empty() ? handlers->types() : cfg.job_types;
  ac.drain_timeout = cfg.drain_timeout;
  ac.prefetch = cfg.worker_prefetch;
  ac.clock_ms = system_clock_ms;
  if (!cfg.share_partitions) {
    shared->agents.resize(1);
    shared->drained_shares.assign(1, false);
    shared->counters = {std::make_shared<worker_counters>(cfg.slots)};
    return supervisor_child(
        agent_subtree("worker", std::move(ac), handlers, shared, 0));
  }
  // --share-partitions: an agent per coordinator, each with its share of
  // the slots, joining its own coordinator first and the next ones after a
  // failure (validate_cluster refused what one connection alone can account
  // for: resource pools, elastic slots).
  auto n = cfg.coordinators.size();
  auto shares = slot_shares(cfg.slots, n, cfg.node_id);
  shared->agents.resize(n);
  shared->drained_shares.assign(n, false);
  supervisor_spec node{"worker", {}, {}};
  node.flags.strat = strategy::one_for_one;
  for (size_t i = 0; i < n; ++i) {
    shared->counters.push_back(std::make_shared<worker_counters>(shares[i]));
    if (shares[i].empty()) {
      log::warn("worker",
                "fewer slots than coordinators: no share for "
                "this coordinator (it runs nothing here)",
                {{"coordinator", cfg.coordinators[i].text()}});
      continue;
    }
    auto mine = ac;
    mine.node_id = cfg.node_id + ".c" + std::to_string(i + 1);
    mine.slots = shares[i];
    // After a failover, back to its own coordinator once it is up again:
    // else a restarted coordinator gets its partitions back but none of
    // the slots meant for it.
    mine.home_probe = std::chrono::seconds{2};
    mine.coordinators.clear();
    for (size_t k = 0; k < n; ++k)
      mine.coordinators.push_back(cfg.coordinators[(i + k) % n]);
    std::string slots;
    for (const auto& [cls, count] : shares[i])
      slots += (slots.empty() ? "" : ",") + cls + "=" + std::to_string(count);
    log::info("worker", "a share of the slots joins this coordinator",
              {{"coordinator", cfg.coordinators[i].text()},
               {"as", mine.node_id},
               {"slots", slots}});
    node.children.push_back(
        supervisor_child(agent_subtree("share-" + std::to_string(i + 1),
                                       std::move(mine), handlers, shared, i)));
  }
  return supervisor_child(std::move(node));
}

caf::expected<joined_coordinator>
join_gateway_at(caf::actor_system& sys, const node_config& cfg,
                const coordinator_address& target,
                std::chrono::milliseconds timeout) {
  // Within `timeout` (runtime/connect.hpp): a coordinator that accepts the
  // connection and never answers (SIGSTOP) must not hold this thread, and
  // the gateway's stop with it. Either failure is tried again.
  auto mm = cfg.tls_certificate.empty() ? sys.middleman().actor_handle()
                                        : sys.openssl_manager().actor_handle();
  auto endpoint = connect_within<cluster_endpoint_actor>(sys, mm, target.host,
                                                         target.port, timeout);
  if (!endpoint)
    return make_error(errc::unavailable, "cannot join the coordinator at "
                                             + target.text() + ": "
                                             + describe(endpoint.error()));
  caf::scoped_actor self{sys};
  register_worker reg;
  reg.node_id = cfg.node_id;
  reg.role = "gateway";
  reg.protocol_min = cluster_protocol_min;
  reg.protocol_max = cluster_protocol_max;
  caf::expected<joined_coordinator> result{joined_coordinator{}};
  self->request(*endpoint, timeout, hello_atom::value, reg)
      .receive(
          [&](coordinator_reply& r) {
            // The version both speak (the highest): the join's reply
            // names the coordinator's own highest only.
            result->protocol = r.protocol;
            if (!cfg.join_secret.empty())
              reg.proof = join_proof(cfg.join_secret, reg.role, reg.node_id,
                                     r.challenge);
            // The API comes as a plain caf::actor (the cluster protocol's
            // handles all do): typed here, from the endpoint whose
            // published interface connect_within checked.
            self->request(*endpoint, timeout, join_atom::value, reg)
                .receive(
                    [&](coordinator_reply&, caf::actor& api) {
                      result->api = caf::actor_cast<api_actor>(std::move(api));
                    },
                    [&](caf::error& err) { result = std::move(err); });
          },
          [&](caf::error& err) { result = std::move(err); });
  if (result && !result->api)
    return make_error(errc::unavailable,
                      "no API from the coordinator at " + target.text());
  return result;
}

caf::expected<joined_coordinator>
join_as_gateway(caf::actor_system& sys, const node_config& cfg,
                std::chrono::milliseconds patience) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  backoff_counter backoff{backoff_schedule{std::chrono::milliseconds{100},
                                           std::chrono::milliseconds{2000}, 2.0,
                                           0.5}};
  // The coordinators in turn (the active one and its standbys): the next
  // one after a failed attempt.
  for (size_t turn = 0;; ++turn) {
    const auto& target = cfg.coordinators[turn % cfg.coordinators.size()];
    auto result = join_gateway_at(sys, cfg, target);
    if (result || is(result.error(), errc::forbidden))
      return result;
    if (std::chrono::steady_clock::now() >= deadline)
      return result;
    std::this_thread::sleep_for(backoff.next());
  }
}

api_relay::api_relay(caf::actor_system& sys) {
  relay_ = sys.spawn([](api_router_actor::pointer self) {
    struct state {
      /// The one coordinator relayed to (null: none), as a router's view.
      std::vector<api_actor> apis{1};
      /// The node-protocol version it speaks.
      uint32_t protocol = 0;
      std::vector<int> owner;
      router_subscriptions subs;
      std::shared_ptr<whole_log_reads> whole_logs
          = std::make_shared<whole_log_reads>();
    };
    auto st = std::make_shared<state>();
    self->set_default_handler(log_and_drop);
    self->set_down_handler([self, st](caf::down_msg& dm) {
      st->subs.subscriber_down(self, dm.source);
    });
    // Every message of the API's interface, sent on as it came; progress
    // subscriptions are kept, to be made again at the next coordinator.
    auto handlers = forward_handlers<api_actor>(
        [self, st](auto reply, auto& first, auto&... xs) ->
        typename decltype(reply)::result {
          using first_t = std::decay_t<decltype(first)>;
          if constexpr (is_subscription_v<first_t>) {
            return st->subs.on(self, {st->apis, st->owner}, first, xs...);
          } else {
            const auto& api = st->apis[0];
            if (!api)
              return make_error(errc::unavailable,
                                "the gateway is joining a coordinator; retry");
            if constexpr (is_events_page_v<first_t, decltype(xs)...>)
              return read_events_after(self, api, st->protocol, st->whole_logs,
                                       xs...);
            else
              return self->delegate(api, std::move(first), std::move(xs)...);
          }
        });
    auto own = std::make_tuple(
        [self, st](router_set_atom, uint64_t, api_actor& api,
                   uint32_t protocol) {
          st->subs.lost(0);
          st->apis[0] = std::move(api);
          st->protocol = protocol;
          st->subs.follow(self, {st->apis, st->owner});
        },
        [](router_tick_atom) {
          // No partition map to refresh: the one coordinator owns them all.
        },
        [self, st](router_retry_atom) {
          st->subs.retry(self, {st->apis, st->owner});
        });
    return behavior_of<api_router_actor>(
        std::tuple_cat(std::move(handlers), std::move(own)));
  });
}

api_relay::~api_relay() {
  caf::anon_send_exit(relay_, caf::exit_reason::user_shutdown);
}

void api_relay::set(joined_coordinator coordinator) {
  // Ahead of the requests already waiting: they go to the new API (or are
  // refused while there is none) rather than to a lost one.
  caf::anon_send<caf::message_priority::high>(
      relay_, router_set_atom::value, uint64_t{0}, std::move(coordinator.api),
      coordinator.protocol);
}

caf::expected<cluster_port> open_cluster_port(
    caf::actor_system& sys, const node_config& cfg,
    std::shared_ptr<job_system_handles> handles,
    std::shared_ptr<const partition_epochs> epochs,
    const std::function<api_actor(cluster_endpoint_local)>& make_api) {
  auto api = std::make_shared<api_actor>();
  cluster_endpoint_config ec;
  ec.coordinator_id = cfg.node_id;
  ec.join_secret = cfg.join_secret;
  ec.gateway_join_secret = cfg.gateway_join_secret;
  ec.handles = std::move(handles);
  ec.epochs = std::move(epochs);
  ec.api = api;
  ec.lease_ttl = cfg.attempt_lease_ttl;
  ec.lease_ttl_by_type = cfg.attempt_lease_ttl_by_type;
  ec.heartbeat_interval = cfg.worker_heartbeat_interval;
  ec.adopt_wait = adopt_wait_of(cfg);
  ec.clock_ms = system_clock_ms;
  auto endpoint = spawn_cluster_endpoint(sys, std::move(ec));
  // Before the port opens: a gateway that joins gets the API.
  *api = make_api(endpoint);
  // Published as the frozen joining interface only; with TLS, through
  // CAF's OpenSSL module (peers without a certificate from --tls-ca never
  // get past the handshake).
  auto port
      = cfg.tls_certificate.empty()
            ? sys.middleman().publish(cluster_endpoint_actor{endpoint},
                                      static_cast<uint16_t>(cfg.cluster_port),
                                      cfg.cluster_host.c_str(), true)
            : caf::openssl::publish(cluster_endpoint_actor{endpoint},
                                    static_cast<uint16_t>(cfg.cluster_port),
                                    cfg.cluster_host.c_str(), true);
  if (!port) {
    caf::anon_send_exit(endpoint, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(*api, caf::exit_reason::user_shutdown);
    return make_error(errc::unavailable,
                      "cannot listen on " + cfg.cluster_host + ":"
                          + std::to_string(cfg.cluster_port)
                          + " (cluster-port): " + sys.render(port.error()));
  }
  return cluster_port{caf::actor_cast<caf::actor>(endpoint), *api, *port};
}

} // namespace drover::node
