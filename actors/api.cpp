#include "actors/api.hpp"

#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/resources.hpp"

#include <caf/actor_system.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <chrono>
#include <memory>

namespace drover {

namespace {

caf::error unavailable(const char* part) {
  return make_error(errc::unavailable,
                    std::string{"the "} + part + " is restarting; retry");
}

using api_self = api_actor::pointer;

/// The result type of delegating (xs...) to `Handle`: what the part
/// answers, checked against its interface.
template <class Delegated>
struct result_of_delegated;
template <class... Rs>
struct result_of_delegated<caf::delegated<Rs...>> {
  using type = caf::result<Rs...>;
};

/// Hands the current request to `dest`, whose answer goes straight back to
/// the client; fails at once if `dest` is down.
template <class Handle, class... Ts>
auto forward_to(api_self self, const Handle& dest, const char* part,
                Ts&&... xs) {
  using result_t = typename result_of_delegated<decltype(self->delegate(
      dest, std::forward<Ts>(xs)...))>::type;
  if (!dest)
    return result_t{unavailable(part)};
  return result_t{self->delegate(dest, std::forward<Ts>(xs)...)};
}

/// As forward_to, unless `refusal` says the request is bad: then that is
/// the answer and nothing is forwarded. This actor is the node's boundary
/// for clients over CAF (remote gateways), so what reaches the store from
/// here is checked here (submissions in prepare_spec).
template <class Handle, class... Ts>
auto checked_forward(api_self self, caf::error refusal, const Handle& dest,
                     const char* part, Ts&&... xs) {
  using result_t
      = decltype(forward_to(self, dest, part, std::forward<Ts>(xs)...));
  if (refusal)
    return result_t{std::move(refusal)};
  return forward_to(self, dest, part, std::forward<Ts>(xs)...);
}

caf::error check_id(const std::string& id);

/// An answer given without one of its parts (the queue's reason for
/// waiting, live progress, the worker nodes, the coordinators view), the
/// part having failed: said in the log, at debug (the answer still holds
/// what the store has, and clients can ask as often as they like).
void answered_without(const char* part, const caf::error& err) {
  log::debug("api", "answered without a part that failed",
             {{"part", part}, {"error", describe(err)}});
}

/// Overlays the publisher's latest update of a running job on its stored
/// record: the store keeps progress at a bounded rate and has no ETA, the
/// publisher has both as the stream shows them. Only an update of the
/// record's attempt that is not behind it is applied; the ETA counts down
/// from the update's time.
void overlay_live_progress(job_record& rec, const progress_update& live) {
  if (live.job_id != rec.job_id || live.attempt != rec.attempt
      || live.percent < rec.progress)
    return;
  rec.progress = live.percent;
  if (!live.stages.empty())
    rec.stages = live.stages;
  rec.eta_ms = live.eta_ms;
  if (live.eta_ms > 0) {
    auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::system_clock::now().time_since_epoch())
                   .count();
    rec.eta_ms = std::max<int64_t>(0, live.eta_ms - (now - live.at_ms));
  }
}

/// (get_atom, id): the stored record, with live progress while it runs.
caf::result<job_record>
get_with_live_progress(api_self self,
                       std::shared_ptr<const job_system_handles> handles,
                       std::string id) {
  if (auto err = check_id(id))
    return err;
  auto store = handles->store();
  if (!store)
    return unavailable("store");
  auto rp = self->make_response_promise<job_record>();
  self->request(store, std::chrono::seconds{30}, get_atom::value, id)
      .then(
          [self, handles, rp](job_record& rec) mutable {
            auto queue = handles->queue();
            if (rec.status == job_status::queued && queue) {
              // Say why it waits: no connected worker can run it, or a
              // limit holds it back.
              auto shared = std::make_shared<job_record>(std::move(rec));
              self->request(queue, std::chrono::seconds{5}, nodes_atom::value,
                            shared->spec)
                  .then(
                      [rp, shared](std::string& why) mutable {
                        shared->waiting_for = std::move(why);
                        rp.deliver(std::move(*shared));
                      },
                      [rp, shared](caf::error& err) mutable {
                        answered_without("waiting_for", err);
                        rp.deliver(std::move(*shared));
                      });
              return;
            }
            auto publisher = handles->publisher();
            if (rec.status != job_status::processing || !publisher) {
              rp.deliver(std::move(rec));
              return;
            }
            auto shared = std::make_shared<job_record>(std::move(rec));
            self->request(publisher, std::chrono::seconds{5}, get_atom::value,
                          shared->job_id)
                .then(
                    [rp, shared](progress_update& live) mutable {
                      overlay_live_progress(*shared, live);
                      rp.deliver(std::move(*shared));
                    },
                    [rp, shared](caf::error& err) mutable {
                      // The stored view still holds (a job that just ended
                      // has no live progress).
                      answered_without("live progress", err);
                      rp.deliver(std::move(*shared));
                    });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

caf::error check_id(const std::string& id) {
  if (plausible_job_id(id))
    return {};
  return make_error(errc::invalid_request,
                    "job id: 1 to 64 letters, digits, '-' or '_'");
}

caf::error check_reason(const std::string& reason) {
  if (reason.size() > 1024)
    return make_error(errc::invalid_request, "reason: at most 1024 bytes");
  return check_text_field(reason, "reason", true);
}

caf::error check_query(const job_query& x) {
  if (!x.after.empty())
    if (auto err = check_id(x.after))
      return err;
  if (auto err = check_text_field(x.type, "type"))
    return err;
  return check_text_field(x.tenant, "tenant");
}

} // namespace

api_actor spawn_api(caf::actor_system& sys,
                    std::shared_ptr<const job_system_handles> handles,
                    supervisor_actor root, cluster_endpoint_local cluster) {
  return sys.spawn([handles, root,
                    cluster](api_self self) -> api_actor::behavior_type {
    // Clients' mistakes must not kill the node's entry point: a stray
    // message or error is logged and dropped (CAF's defaults for typed
    // actors quit).
    self->set_default_handler(log_and_drop);
    self->set_error_handler([](caf::error& err) {
      log::warn("api", "unexpected error message", {{"error", describe(err)}});
    });
    auto q = [self, handles](auto&&... xs) {
      return forward_to(self, handles->queue(), "queue",
                        std::forward<decltype(xs)>(xs)...);
    };
    auto s = [self, handles](auto&&... xs) {
      return forward_to(self, handles->store(), "store",
                        std::forward<decltype(xs)>(xs)...);
    };
    auto p = [self, handles](auto&&... xs) {
      return forward_to(self, handles->publisher(), "progress publisher",
                        std::forward<decltype(xs)>(xs)...);
    };
    return {
        [q](submit_atom a, submit_request& r) { return q(a, std::move(r)); },
        [q](submit_atom a, std::vector<submit_request>& r) {
          return q(a, std::move(r));
        },
        [self, handles](cancel_atom a, std::string& id) {
          return checked_forward(self, check_id(id), handles->queue(), "queue",
                                 a, std::move(id));
        },
        [self, handles](cancel_atom a, std::string& id, std::string& reason) {
          auto err = check_id(id);
          if (!err)
            err = check_reason(reason);
          return checked_forward(self, std::move(err), handles->queue(),
                                 "queue", a, std::move(id), std::move(reason));
        },
        [self, handles](redrive_atom a, std::string& id) {
          return checked_forward(self, check_id(id), handles->queue(), "queue",
                                 a, std::move(id));
        },
        [q](redrive_atom a, all_atom b) { return q(a, b); },
        [self, handles](purge_atom a, std::string& id) {
          return checked_forward(self, check_id(id), handles->queue(), "queue",
                                 a, std::move(id));
        },
        [q](purge_atom a, all_atom b) { return q(a, b); },
        [q](stats_atom a) { return q(a); },
        [q](partitions_atom a) { return q(a, get_atom::value); },
        [self, handles](flow_atom a, std::string& kind, std::string& key,
                        std::string& spec) {
          // Checked by the queue, with the configuration's parser.
          return checked_forward(self, caf::none, handles->queue(), "queue", a,
                                 std::move(kind), std::move(key),
                                 std::move(spec));
        },
        [self, handles](flow_atom a,
                        uint32_t log_entries) -> caf::result<std::string> {
          auto queue = handles->queue();
          if (!queue)
            return make_error(errc::unavailable, "the queue is restarting");
          if (log_entries > 1000)
            return make_error(errc::invalid_request,
                              "at most 1000 control-log entries");
          auto rp = self->make_response_promise<std::string>();
          self->request(queue, std::chrono::seconds{5}, a)
              .then(
                  [self, rp, handles, log_entries](std::string& flow) mutable {
                    if (log_entries == 0) {
                      rp.deliver(std::move(flow));
                      return;
                    }
                    // {"rate_limits":...,"breakers":...} + the control log.
                    auto whole = std::make_shared<std::string>(
                        flow.substr(0, flow.size() - 1));
                    auto store = handles->store();
                    if (!store) {
                      rp.deliver(*whole + ",\"control_log\":null}");
                      return;
                    }
                    self->request(store, std::chrono::seconds{5},
                                  control_atom::value, log_entries)
                        .then(
                            [rp, whole](std::string& log) mutable {
                              rp.deliver(*whole + ",\"control_log\":" + log
                                         + "}");
                            },
                            [rp](caf::error& err) mutable {
                              rp.deliver(std::move(err));
                            });
                  },
                  [rp](caf::error& err) mutable {
                    rp.deliver(std::move(err));
                  });
          return rp;
        },
        [s](ping_atom a) { return s(a); },
        [self, handles](get_atom, std::string& id) {
          return get_with_live_progress(self, handles, std::move(id));
        },
        [self, handles](events_atom a, std::string& id) {
          return checked_forward(self, check_id(id), handles->store(), "store",
                                 a, std::move(id));
        },
        [self, handles](events_atom a, std::string& id, uint64_t after,
                        uint32_t limit) {
          auto err = check_id(id);
          if (!err)
            err = check_events_limit(limit);
          return checked_forward(self, std::move(err), handles->store(),
                                 "store", a, std::move(id), after, limit);
        },
        [self, handles](list_atom a, job_query& x) {
          return checked_forward(self, check_query(x), handles->store(),
                                 "store", a, std::move(x));
        },
        [self, handles](subscribe_atom a, std::string& id, caf::actor& who) {
          return checked_forward(self, check_id(id), handles->publisher(),
                                 "progress publisher", a, std::move(id),
                                 std::move(who));
        },
        [self, handles](subscribe_atom a, std::string& id, caf::actor& who,
                        changed_atom c) {
          return checked_forward(self, check_id(id), handles->publisher(),
                                 "progress publisher", a, std::move(id),
                                 std::move(who), c);
        },
        [p](unsubscribe_atom a, std::string& id, caf::actor& who) {
          return p(a, std::move(id), std::move(who));
        },
        [self, root, cluster](describe_atom a) -> caf::result<tree_node> {
          if (!cluster)
            return forward_to(self, root, "node", a);
          auto rp = self->make_response_promise<tree_node>();
          self->request(root, std::chrono::seconds{10}, a)
              .then(
                  [self, rp, cluster](tree_node& t) mutable {
                    auto shared = std::make_shared<tree_node>(std::move(t));
                    self->request(cluster, std::chrono::seconds{10},
                                  describe_atom::value)
                        .then(
                            [rp, shared](tree_node& c) mutable {
                              shared->children.push_back(std::move(c));
                              rp.deliver(std::move(*shared));
                            },
                            [rp, shared](caf::error& err) mutable {
                              answered_without("the cluster's subtree", err);
                              rp.deliver(std::move(*shared));
                            });
                  },
                  [rp](caf::error& err) mutable {
                    rp.deliver(std::move(err));
                  });
          return rp;
        },
        [self, cluster, handles](nodes_atom a) -> caf::result<std::string> {
          if (!cluster)
            return make_error(errc::not_found,
                              "this node runs every role itself: no worker "
                              "nodes (no --cluster-port)");
          auto rp = self->make_response_promise<std::string>();
          self->request(cluster, std::chrono::seconds{10}, a)
              .then(
                  [self, rp, handles](std::string& nodes) mutable {
                    auto whole
                        = std::make_shared<std::string>("{\"nodes\":" + nodes);
                    // Then the coordinators of the database (the store's
                    // drover.coordinators view; none for the memory store)
                    // and the jobs no connected worker serves.
                    auto waiting = [self, rp, handles, whole]() mutable {
                      auto queue = handles->queue();
                      if (!queue) {
                        rp.deliver(*whole + "}");
                        return;
                      }
                      self->request(queue, std::chrono::seconds{10},
                                    nodes_atom::value)
                          .then(
                              [rp, whole](std::string& w) mutable {
                                rp.deliver(*whole
                                           + ",\"waiting_without_worker\":" + w
                                           + "}");
                              },
                              [rp, whole](caf::error& err) mutable {
                                answered_without("waiting_without_worker", err);
                                rp.deliver(*whole + "}");
                              });
                    };
                    auto store = handles->store();
                    if (!store)
                      return waiting();
                    // Briefly: the view must answer while PostgreSQL
                    // does not (droverctl gives up after 5 s).
                    self->request(store, std::chrono::seconds{1},
                                  nodes_atom::value)
                        .then(
                            [whole, waiting](std::string& c) mutable {
                              *whole += ",\"coordinators\":" + c;
                              waiting();
                            },
                            [waiting](caf::error& err) mutable {
                              answered_without("coordinators", err);
                              waiting();
                            });
                  },
                  [rp](caf::error& err) mutable { rp.deliver(err); });
          return rp;
        },
    };
  });
}

} // namespace drover
