#include "actors/cluster_endpoint.hpp"

#include "actors/node_link.hpp"
#include "runtime/errors.hpp"
#include "runtime/join_proof.hpp"
#include "runtime/json_text.hpp"
#include "runtime/log.hpp"
#include "runtime/resources.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <map>
#include <set>

namespace drover {

namespace {

/// How long a challenge may be answered, and how many may be open.
constexpr int64_t challenge_ttl_ms = 10000;
constexpr size_t max_open_challenges = 1024;

struct challenge_info {
  std::string node_id;
  std::string role;
  int64_t expires_ms = 0;
};

struct member {
  std::string role;
  register_worker registration;
  int64_t joined_ms = 0;
  node_link_local link;
};

struct endpoint_state {
  cluster_endpoint_config cfg;
  std::map<std::string, challenge_info> challenges;
  /// By node id.
  std::map<std::string, member> members;

  endpoint_state() = default;
  endpoint_state(const endpoint_state&) = delete;
  endpoint_state& operator=(const endpoint_state&) = delete;

  /// The links stop with the endpoint (node shutdown), but one link's
  /// failure does not take the endpoint down: monitored, not linked. Here
  /// and not in an attached functor: CAF 0.17 destroys an actor's state
  /// (on_exit) before it runs the functors attached to the actor, so such
  /// a functor would walk a freed map (ThreadSanitizer: heap-use-after-free
  /// when a coordinator stops while nodes are joined).
  ~endpoint_state() {
    for (auto& [id, m] : members)
      if (m.link)
        caf::anon_send_exit(m.link, caf::exit_reason::user_shutdown);
  }

  static inline const char* name = "drover.cluster_endpoint";
};

using endpoint_actor = cluster_endpoint_local::stateful_pointer<endpoint_state>;

int64_t now_ms(endpoint_actor self) {
  return self->state.cfg.clock_ms();
}

/// The admin views answer only this node's actors (the API), never a
/// joining node.
bool from_here(endpoint_actor self) {
  auto& sender = self->current_sender();
  return sender != nullptr && sender->node() == self->node();
}

/// Nodes (workers and gateways) the endpoint keeps track of.
constexpr size_t max_members = 4096;

caf::error refuse(const std::string& node_id, const std::string& why) {
  log::warn("cluster", "refused a node", {{"node", node_id}, {"why", why}});
  return make_error(errc::forbidden, why);
}

std::string range_text(uint32_t lo, uint32_t hi) {
  return lo == hi ? std::to_string(lo)
                  : std::to_string(lo) + "-" + std::to_string(hi);
}

bool plausible_name(const std::string& s, size_t max) {
  if (s.empty() || s.size() > max)
    return false;
  for (unsigned char c : s)
    if (!(std::isalnum(c) || c == '-' || c == '_' || c == '.'))
      return false;
  return true;
}

/// Checks what a joining node says about itself (hostile input).
caf::error check_registration(const register_worker& reg) {
  auto bad = [](std::string why) {
    return make_error(errc::invalid_request, std::move(why));
  };
  if (!plausible_name(reg.node_id, 128))
    return bad("node id must be 1 to 128 of [A-Za-z0-9._-]");
  if (reg.role != "worker" && reg.role != "gateway")
    return bad("role must be worker or gateway");
  if (reg.role == "gateway")
    return caf::none;
  if (reg.capacity.empty() || reg.capacity.size() > 64)
    return bad("a worker registers 1 to 64 resource classes");
  uint64_t total = 0;
  for (auto& cap : reg.capacity) {
    if (!plausible_name(cap.resource_class, 64))
      return bad("resource class names are 1 to 64 of [A-Za-z0-9._-]");
    if (cap.slots < 1 || cap.slots > 1024)
      return bad("slots per class must be within [1, 1024]");
    total += cap.slots;
  }
  if (total > 4096)
    return bad("at most 4096 slots per worker node");
  // Lent attempts each hold one of the node's own slots of their class, so
  // a node lists at most one per slot, each a job once.
  if (reg.lent.size() > total)
    return bad("more lent attempts than slots");
  std::set<std::string> lent_jobs;
  for (auto& ra : reg.lent) {
    if (!plausible_name(ra.job_id, 128) || !lent_jobs.insert(ra.job_id).second)
      return bad("lent attempts name distinct job ids");
    bool known = false;
    for (auto& cap : reg.capacity)
      known = known || cap.resource_class == ra.resource_class;
    if (!known)
      return bad("a lent attempt's class is not one of the node's");
  }
  if (reg.prefetch > 1024)
    return bad("prefetch must be at most 1024 per class");
  total += uint64_t{reg.prefetch} * reg.capacity.size();
  if (reg.job_types.empty() || reg.job_types.size() > 256)
    return bad("a worker registers 1 to 256 job types");
  for (auto& t : reg.job_types)
    if (!plausible_name(t, 128))
      return bad("job type names are 1 to 128 of [A-Za-z0-9._-]");
  if (reg.running.size() > total)
    return bad("more running attempts than slots and prefetch");
  auto pools = amounts_of(reg.resources, "resources");
  if (!pools)
    return std::move(pools.error());
  for (auto& cap : reg.capacity)
    for (auto& [pool, amount] : *pools)
      if (pool == cap.resource_class)
        return bad("resources: '" + pool + "' is also a slot class");
  // Elastic classes: each one of its slot classes, named once, starting
  // at 1 to its slots.
  std::map<std::string, uint32_t> slots;
  for (auto& cap : reg.capacity)
    slots.emplace(cap.resource_class, cap.slots);
  std::set<std::string> elastic;
  for (auto& e : reg.elastic) {
    auto cap = slots.find(e.resource_class);
    if (cap == slots.end() || e.slots < 1 || e.slots > cap->second)
      return bad("elastic: each class must have slots, from 1 to its "
                 "capacity");
    if (!elastic.insert(e.resource_class).second)
      return bad("elastic: a class is named twice");
  }
  if (!reg.elastic.empty()
      && (reg.elastic_idle_ms < 100 || reg.elastic_idle_ms > 3600000))
    return bad("elastic idle time must be within [100, 3600000] ms");
  return caf::none;
}

/// Refuses a node that shares no protocol version with this build (at the
/// hello, and again at the join: the challenge does not bind the range,
/// and the link answers with the version agreed from the join's).
caf::error check_protocols(const register_worker& reg) {
  if (reg.protocol_max < cluster_protocol_min
      || reg.protocol_min > cluster_protocol_max
      || reg.protocol_min > reg.protocol_max)
    return refuse(reg.node_id,
                  "incompatible cluster protocol: the node speaks "
                      + range_text(reg.protocol_min, reg.protocol_max)
                      + ", this coordinator speaks "
                      + range_text(cluster_protocol_min, cluster_protocol_max));
  return {};
}

caf::expected<coordinator_reply> on_hello(endpoint_actor self,
                                          register_worker& reg) {
  auto& st = self->state;
  if (auto err = check_protocols(reg))
    return err;
  if (auto err = check_registration(reg))
    return refuse(reg.node_id, describe(err));
  auto now = now_ms(self);
  // One open challenge per node id and role (a new hello replaces it);
  // when too many are open, the oldest goes: a flood of hellos cannot
  // lock out a join, which answers its challenge within milliseconds.
  for (auto i = st.challenges.begin(); i != st.challenges.end();) {
    bool drop
        = i->second.expires_ms <= now
          || (i->second.node_id == reg.node_id && i->second.role == reg.role);
    i = drop ? st.challenges.erase(i) : std::next(i);
  }
  while (st.challenges.size() >= max_open_challenges) {
    auto oldest = st.challenges.begin();
    for (auto i = st.challenges.begin(); i != st.challenges.end(); ++i)
      if (i->second.expires_ms < oldest->second.expires_ms)
        oldest = i;
    st.challenges.erase(oldest);
  }
  coordinator_reply r;
  r.coordinator_id = st.cfg.coordinator_id;
  r.protocol = std::min(reg.protocol_max, cluster_protocol_max);
  r.challenge = make_join_challenge();
  r.lease_ttl_ms = st.cfg.lease_ttl.count();
  r.heartbeat_interval_ms = st.cfg.heartbeat_interval.count();
  st.challenges[r.challenge]
      = challenge_info{reg.node_id, reg.role, now + challenge_ttl_ms};
  return r;
}

/// Checks the join's proof against an open challenge (used once).
caf::error check_join(endpoint_actor self, const register_worker& reg,
                      const std::string& role) {
  auto& st = self->state;
  if (reg.role != role)
    return refuse(reg.node_id,
                  "joined as " + reg.role + " with the " + role + " handshake");
  if (auto err = check_protocols(reg))
    return err;
  if (auto err = check_registration(reg))
    return refuse(reg.node_id, describe(err));
  // The challenge travels back as the proof's salt: find it by node id.
  auto now = now_ms(self);
  bool found = false;
  for (auto i = st.challenges.begin(); i != st.challenges.end(); ++i) {
    auto& c = i->second;
    if (c.node_id != reg.node_id || c.role != reg.role || c.expires_ms <= now)
      continue;
    found = true;
    // Workers prove --join-secret, gateways --gateway-join-secret; with
    // neither configured (development, loopback) anyone may join.
    bool open
        = st.cfg.join_secret.empty() && st.cfg.gateway_join_secret.empty();
    const auto& secret = reg.role == "gateway" ? st.cfg.gateway_join_secret
                                               : st.cfg.join_secret;
    bool ok = open
              || (!secret.empty()
                  && check_join_proof(secret, reg.role, reg.node_id, i->first,
                                      reg.proof));
    st.challenges.erase(i); // one answer per challenge, right or wrong
    if (ok)
      return caf::none;
    break;
  }
  if (!found)
    // Replaced by a newer hello or expired: not the node's fault.
    return make_error(errc::unavailable,
                      "no open challenge for this node: send the hello again");
  return refuse(reg.node_id, "join refused: wrong or missing join secret");
}

/// A link for the node, registered as `reg` says.
node_link_local new_link(endpoint_actor self, const register_worker& reg) {
  auto& st = self->state;
  node_link_config lc;
  lc.node_id = reg.node_id;
  lc.coordinator_id = st.cfg.coordinator_id;
  lc.registration = reg;
  lc.registration.proof.clear();
  lc.handles = st.cfg.handles;
  lc.epochs = st.cfg.epochs;
  lc.lease_ttl = st.cfg.lease_ttl;
  lc.lease_ttl_by_type = st.cfg.lease_ttl_by_type;
  lc.heartbeat_interval = st.cfg.heartbeat_interval;
  lc.adoption_wait = std::max(std::chrono::milliseconds{30000},
                              st.cfg.adopt_wait + std::chrono::seconds{5});
  lc.clock_ms = st.cfg.clock_ms;
  auto link = spawn_node_link(self->system(), std::move(lc));
  self->monitor(link);
  return link;
}

using join_promise
    = caf::typed_response_promise<coordinator_reply, node_link_actor>;

/// Hands the join to the node's link; a link whose node came back with
/// other slots (and is not alive under its old registration: the link
/// checks that first) is replaced once.
void join_link(endpoint_actor self, join_promise rp, register_worker reg,
               worker_agent_actor agent, bool replaced) {
  auto& m = self->state.members[reg.node_id];
  auto link = m.link;
  self->request(link, std::chrono::seconds{10}, join_atom::value, reg, agent)
      .then(
          [rp, link](coordinator_reply& r) mutable {
            rp.deliver(std::move(r), node_link_actor{link});
          },
          [self, rp, reg, agent, link, replaced](caf::error& err) mutable {
            auto& members = self->state.members;
            auto i = members.find(reg.node_id);
            if (!is(err, errc::conflict) || replaced || i == members.end()
                || i->second.link != link) {
              rp.deliver(std::move(err));
              return;
            }
            // Same node, other slots: its old link stops (attempts on it
            // are lost and run again, not counted).
            log::warn("cluster", "a worker node came back with other slots",
                      {{"node", reg.node_id}});
            self->demonitor(link.address());
            self->send_exit(link, caf::exit_reason::user_shutdown);
            i->second.link = new_link(self, reg);
            i->second.registration = reg;
            i->second.registration.proof.clear();
            join_link(self, rp, reg, agent, true);
          });
}

caf::result<coordinator_reply, node_link_actor>
on_worker_join(endpoint_actor self, register_worker& reg,
               worker_agent_actor& agent) {
  auto& st = self->state;
  if (auto err = check_join(self, reg, "worker"))
    return err;
  if (st.members.count(reg.node_id) == 0 && st.members.size() >= max_members)
    return refuse(reg.node_id, "too many nodes");
  auto& m = st.members[reg.node_id];
  if (m.role == "gateway")
    return refuse(reg.node_id, "a gateway node has this id");
  if (!m.link) {
    m.link = new_link(self, reg);
    m.joined_ms = now_ms(self);
    m.registration = reg;
    m.registration.proof.clear();
  }
  m.role = "worker";
  auto rp = self->make_response_promise<coordinator_reply, node_link_actor>();
  join_link(self, rp, reg, agent, false);
  log::info("cluster", "worker node joins",
            {{"node", reg.node_id}, {"job_types", reg.job_types.size()}});
  return rp;
}

caf::result<coordinator_reply, caf::actor>
on_gateway_join(endpoint_actor self, register_worker& reg) {
  auto& st = self->state;
  if (auto err = check_join(self, reg, "gateway"))
    return err;
  if (st.members.count(reg.node_id) == 0 && st.members.size() >= max_members)
    return refuse(reg.node_id, "too many nodes");
  auto& m = st.members[reg.node_id];
  if (m.link)
    return refuse(reg.node_id, "a worker node has this id");
  m.role = "gateway";
  m.registration = reg;
  m.registration.proof.clear();
  m.joined_ms = now_ms(self);
  log::info("cluster", "gateway node joined", {{"node", reg.node_id}});
  coordinator_reply r;
  r.coordinator_id = st.cfg.coordinator_id;
  r.protocol = std::min(reg.protocol_max, cluster_protocol_max); // agreed
  // The cluster protocol carries handles as plain caf::actor (the joining
  // gateway types it again on arrival, nodes/node_roles.cpp): a typed
  // handle is not a message type CAF's network layer knows.
  caf::actor api;
  if (st.cfg.api && *st.cfg.api)
    api = caf::actor_cast<caf::actor>(*st.cfg.api);
  return {std::move(r), std::move(api)};
}

/// A gateway (or a worker whose link is gone) in the node list.
std::string member_json(const std::string& node_id, const member& m,
                        int64_t now) {
  return "{\"node\":" + json_quote(node_id) + ",\"role\":" + json_quote(m.role)
         + ",\"joined_ms_ago\":" + std::to_string(now - m.joined_ms)
         + (m.role == "worker" ? ",\"connected\":false" : "") + "}";
}

/// Asks every worker link for `What` (its subtree, or its JSON line);
/// `done` gets the answers by node id.
template <class What, class Atom>
void gather(endpoint_actor self,
            std::function<void(std::map<std::string, What>)> done) {
  auto& st = self->state;
  auto views = std::make_shared<std::map<std::string, What>>();
  auto left = std::make_shared<size_t>(0);
  for (auto& [id, m] : st.members)
    if (m.link)
      ++*left;
  if (*left == 0) {
    done({});
    return;
  }
  for (auto& [id, m] : st.members) {
    if (!m.link)
      continue;
    auto node_id = id;
    auto one = [views, left, done, node_id](What* n) {
      if (n != nullptr)
        (*views)[node_id] = std::move(*n);
      if (--*left == 0)
        done(std::move(*views));
    };
    self->request(m.link, std::chrono::seconds{5}, Atom::value)
        .then([one](What& n) { one(&n); },
              [one, node_id](caf::error& err) {
                // The view goes without this node (it left meanwhile, or
                // its link is busy).
                log::debug("cluster",
                           "a worker node's link did not answer "
                           "for a view",
                           {{"node", node_id}, {"error", describe(err)}});
                one(nullptr);
              });
  }
}

cluster_endpoint_local::behavior_type
endpoint_impl(endpoint_actor self, cluster_endpoint_config cfg) {
  self->state.cfg = std::move(cfg);
  self->set_down_handler([self](caf::down_msg& dm) {
    for (auto i = self->state.members.begin(); i != self->state.members.end();
         ++i)
      if (i->second.link && i->second.link.address() == dm.source) {
        self->state.members.erase(i);
        return;
      }
  });
  return {
      [self](hello_atom, register_worker& reg) { return on_hello(self, reg); },
      [self](join_atom, register_worker& reg, worker_agent_actor& agent) {
        return on_worker_join(self, reg, agent);
      },
      [self](join_atom, register_worker& reg) {
        return on_gateway_join(self, reg);
      },
      [self](describe_atom) -> caf::result<tree_node> {
        if (!from_here(self))
          return make_error(errc::forbidden, "admin views are local");
        auto rp = self->make_response_promise<tree_node>();
        gather<tree_node, describe_atom>(
            self, [rp](std::map<std::string, tree_node> views) mutable {
              tree_node n;
              n.name = "cluster";
              n.kind = child_kind::supervisor;
              for (auto& [id, v] : views)
                n.children.push_back(std::move(v));
              rp.deliver(std::move(n));
            });
        return rp;
      },
      [self](nodes_atom) -> caf::result<std::string> {
        if (!from_here(self))
          return make_error(errc::forbidden, "admin views are local");
        auto rp = self->make_response_promise<std::string>();
        gather<std::string, nodes_atom>(
            self, [self, rp](std::map<std::string, std::string> views) mutable {
              auto now = now_ms(self);
              std::string out = "[";
              bool first = true;
              for (auto& [id, m] : self->state.members) {
                auto v = views.find(id);
                out += (first ? "" : ",")
                       + (v != views.end() ? v->second
                                           : member_json(id, m, now));
                first = false;
              }
              rp.deliver(out + "]");
            });
        return rp;
      },
  };
}

} // namespace

cluster_endpoint_local spawn_cluster_endpoint(caf::actor_system& sys,
                                              cluster_endpoint_config cfg) {
  return sys.spawn(endpoint_impl, std::move(cfg));
}

} // namespace drover
