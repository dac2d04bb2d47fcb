#pragma once

// A coordinator played by a test over CAF, for a real worker node
// (drover-node --roles worker) to join: it answers the hello and the join
// (the proof is not checked: the node under test is the worker), and its
// link answers heartbeats, settles every reported outcome and grants no
// tokens. The test decides what the link sends and when: leases (with any
// partition epoch), hand-overs, a dropped link. Used where a real
// coordinator sends something only in a race (lease_epoch_test,
// lent_slots_test).

#include "runtime/cluster_protocol.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace drover::testing::stand_in {

/// What the stand-in coordinator saw of the worker node.
struct observed {
  std::mutex mx;
  std::optional<worker_agent_actor> agent;
  /// Jobs whose outcome the node reported, in order.
  std::vector<std::string> completed;
  /// Jobs the node ever listed as running in a heartbeat.
  std::set<std::string> running;
  /// Leases the node said it refused (Heartbeat.refused).
  std::set<std::string> refused;
  /// Lease batches the link sends the node at its next heartbeat (leases
  /// come from the link the node joined: anonymous ones are refused).
  std::vector<lease_batch> to_send;
  /// Attempts the link says it handed over, in its next heartbeat reply
  /// (CoordinatorReply.handedOver): the node keeps running them as lent.
  std::vector<running_attempt> hand_over;
  /// Jobs the node listed as lent in a heartbeat (Heartbeat.lent).
  std::set<std::string> lent;
  /// Every join's registration, in order.
  std::vector<register_worker> joins;
  /// The link ends at the next heartbeat (the node then joins again).
  bool drop_link = false;

  void send(lease_batch b) {
    std::lock_guard<std::mutex> guard{mx};
    to_send.push_back(std::move(b));
  }

  /// Jobs completed so far (the node reports outcomes in batches, in no
  /// particular order).
  std::set<std::string> done() {
    std::lock_guard<std::mutex> guard{mx};
    return {completed.begin(), completed.end()};
  }
};

/// The coordinator's side of the node's connection: answers heartbeats,
/// settles every reported outcome, grants no tokens.
inline node_link_actor::behavior_type
stand_in_link(node_link_actor::pointer self, std::shared_ptr<observed> seen) {
  return {
      [self, seen](heartbeat_atom,
                   heartbeat& hb) -> caf::result<coordinator_reply> {
        std::lock_guard<std::mutex> guard{seen->mx};
        if (seen->drop_link) {
          seen->drop_link = false;
          self->quit();
          return make_error(errc::unavailable, "the stand-in dropped the link");
        }
        for (auto& r : hb.running)
          seen->running.insert(r.job_id);
        for (auto& r : hb.lent)
          seen->lent.insert(r.job_id);
        for (auto& r : hb.refused)
          seen->refused.insert(r.job_id);
        for (auto& b : seen->to_send)
          self->send(*seen->agent, lease_atom::value, std::move(b));
        seen->to_send.clear();
        coordinator_reply reply;
        reply.coordinator_id = "stand-in";
        reply.settled = hb.unacknowledged;
        reply.handed_over.swap(seen->hand_over);
        reply.lease_ttl_ms = 30000;
        reply.heartbeat_interval_ms = 200;
        reply.protocol = cluster_protocol_max;
        return reply;
      },
      [seen](report_atom, progress_batch&, completion_batch& done) {
        std::lock_guard<std::mutex> guard{seen->mx};
        coordinator_reply reply;
        reply.coordinator_id = "stand-in";
        for (auto& c : done.completions) {
          seen->completed.push_back(c.job_id);
          reply.settled.push_back(running_attempt{c.job_id, c.attempt, {}});
        }
        reply.protocol = cluster_protocol_max;
        return reply;
      },
      [](take_atom, std::string&, uint32_t,
         uint32_t) -> caf::result<uint32_t, int64_t> {
        return {uint32_t{0}, int64_t{1000}};
      },
  };
}

/// The cluster port: a hello gets a challenge, a worker's join a link
/// (the proof is not checked: the node under test is the worker).
inline cluster_endpoint_actor::behavior_type
stand_in_endpoint(cluster_endpoint_actor::pointer self,
                  std::shared_ptr<observed> seen) {
  return {
      [](hello_atom, register_worker&) {
        coordinator_reply reply;
        reply.coordinator_id = "stand-in";
        reply.challenge = std::string(32, 'c');
        reply.protocol = cluster_protocol_max;
        return reply;
      },
      [self, seen](join_atom, register_worker& reg, worker_agent_actor& agent)
          -> caf::result<coordinator_reply, node_link_actor> {
        {
          std::lock_guard<std::mutex> guard{seen->mx};
          seen->agent = agent;
          seen->joins.push_back(reg);
        }
        coordinator_reply reply;
        reply.coordinator_id = "stand-in";
        reply.lease_ttl_ms = 30000;
        reply.heartbeat_interval_ms = 200;
        reply.protocol = cluster_protocol_max;
        // Linked: they end with the endpoint (the actor system waits for
        // every actor when the test ends).
        return {reply, self->spawn<caf::linked>(stand_in_link, seen)};
      },
      [](join_atom,
         register_worker&) -> caf::result<coordinator_reply, caf::actor> {
        return make_error(errc::forbidden, "no gateways here");
      },
  };
}

struct stand_in_coordinator {
  explicit stand_in_coordinator(uint16_t port) : sys{configure(cfg)} {
    endpoint = sys.spawn(stand_in_endpoint, seen);
    auto bound = sys.middleman().publish(endpoint, port, "127.0.0.1", true);
    REQUIRE(bound);
  }

  ~stand_in_coordinator() {
    caf::anon_send_exit(endpoint, caf::exit_reason::user_shutdown);
  }

  static caf::actor_system_config& configure(caf::actor_system_config& c) {
    register_types(c);
    c.load<caf::io::middleman>();
    c.set("scheduler.max-threads", 2);
    return c;
  }

  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<observed> seen = std::make_shared<observed>();
  cluster_endpoint_actor endpoint;
};

/// A 50 ms sleep of partition `partition`, stamped `epoch`.
inline lease sleep_lease(const std::string& name, int32_t partition,
                         int64_t epoch) {
  lease l;
  l.job_id = name + "-" + std::to_string(partition);
  l.spec.type = "sleep";
  l.spec.input = R"({"ms":50})";
  l.spec.max_attempts = 3;
  l.attempt = 1;
  l.lease_expiry_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()
                      + 30000;
  l.partition_epoch = epoch;
  return l;
}

} // namespace drover::testing::stand_in
