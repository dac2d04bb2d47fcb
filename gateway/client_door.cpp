#include "gateway/client_door.hpp"

#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <map>
#include <memory>
#include <utility>

namespace drover {

namespace {

using http::principal;
using http::scope;

/// What every handler shares: the keys, the buckets, the node API.
struct door {
  http::key_ring keys;
  http::rate_limiter rates;
  api_actor api;
  client_door_config cfg;
  /// One relay per (client's subscriber, job): see spawn_relay.
  std::map<std::pair<caf::actor_addr, std::string>, caf::actor> relays;

  door(client_door_config c, api_actor a)
      : keys(c.keys),
        rates(c.keys.size(), c.default_rate),
        api(std::move(a)),
        cfg(std::move(c)) {
    // nop
  }

  /// Who the request acts as, if its key may do `need` now.
  caf::expected<principal> admit(const std::string& key, scope need) {
    auto who = keys.authenticate("Bearer " + key);
    if (!who)
      return make_error(errc::unauthenticated,
                        key.empty() ? "this node needs an API key"
                                    : "unknown API key");
    if (!keys.development_mode()) {
      double retry_after = 0;
      if (!rates.take(who->key, keys.at(who->key).rate,
                      std::chrono::steady_clock::now(), retry_after))
        return make_error(errc::rate_limited,
                          "too many requests for this key; retry in "
                              + std::to_string(retry_after) + " s");
    }
    if (!who->has(need))
      return make_error(errc::forbidden, std::string{"this key lacks the '"}
                                             + http::scope_name(need)
                                             + "' scope");
    return who;
  }

  bool visible(const principal& who, const job_record& job) const {
    return keys.development_mode() || job.spec.tenant == who.tenant;
  }

  /// The tenant a submission goes to: the key's (a request naming another
  /// is refused); in development mode whatever the request says.
  caf::error place(const principal& who, submit_request& req) const {
    if (keys.development_mode())
      return {};
    if (!req.tenant.empty() && req.tenant != who.tenant)
      return make_error(errc::forbidden,
                        "the tenant comes from the API key, not the request");
    req.tenant = who.tenant;
    if (req.type == "exec" && !who.has(http::scope_exec))
      return make_error(errc::forbidden,
                        "exec jobs need a key with the 'exec' scope");
    return {};
  }
};

/// Stands between the progress publisher and a client's subscriber, so
/// that the client only ever hears from this relay: had the publisher
/// itself messaged the client, the client would learn its address and
/// could ask it directly, past every key check (follow other tenants' jobs,
/// forge finals). The relay forwards what local actors send it and nothing
/// else, and ends with the job's final record, with its client, or when
/// told (unsubscribe).
caf::actor spawn_relay(caf::actor_system& sys, caf::actor client, api_actor api,
                       std::string job_id) {
  return sys.spawn([client, api,
                    job_id](caf::event_based_actor* self) -> caf::behavior {
    // An error from the client's subscriber is the client's business, not
    // the relay's: noted (at debug: any client can send them) and dropped.
    self->set_error_handler([job_id](caf::error& err) {
      log::debug("admin", log::job{job_id},
                 "a client's subscriber sent an error",
                 {{"error", describe(err)}});
    });
    self->monitor(client);
    auto leave = [self, api, job_id] {
      caf::anon_send(api, unsubscribe_atom::value, job_id, caf::actor{self});
      self->quit();
    };
    self->set_down_handler([leave](caf::down_msg&) { leave(); });
    auto local = [self] {
      const auto& from = self->current_sender();
      return from && from->node() == self->node();
    };
    return {
        [self, client, local](progress_atom a, progress_update& u) {
          if (local())
            self->send(client, a, std::move(u));
        },
        [self, client, local](changed_atom a, std::string& id) {
          if (local())
            self->send(client, a, std::move(id));
        },
        [self, client, local, leave](final_atom a, job_record& r) {
          if (!local())
            return;
          self->send(client, a, std::move(r));
          leave();
        },
        [local, leave](stop_atom) {
          if (local())
            leave();
        },
    };
  });
}

using self_ptr = client_door_actor::pointer;
using door_ptr = std::shared_ptr<door>;

/// Reads job `id` for `who`, then calls `next(record)`; another tenant's
/// job is not_found, as over HTTP.
template <class Result, class F>
void with_job(self_ptr self, door_ptr d, caf::typed_response_promise<Result> rp,
              principal who, std::string id, F next) {
  self->request(d->api, d->cfg.timeout, get_atom::value, id)
      .then(
          [d, rp, who, id, next](job_record& job) mutable {
            if (!d->visible(who, job)) {
              rp.deliver(make_error(errc::not_found, "no job '" + id + "'"));
              return;
            }
            next(job);
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

/// Asks the node API `xs...` (answered ok_atom), then answers with the
/// job as it is afterwards.
template <class... Ts>
void act_then_show(self_ptr self, door_ptr d,
                   caf::typed_response_promise<job_record> rp, std::string id,
                   Ts... xs) {
  self->request(d->api, d->cfg.timeout, xs...)
      .then(
          [self, d, rp, id](ok_atom) mutable {
            self->request(d->api, d->cfg.timeout, get_atom::value, id)
                .then([rp](job_record& job) mutable { rp.deliver(job); },
                      [rp](caf::error& err) mutable {
                        rp.deliver(std::move(err));
                      });
          },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
}

/// A dead-letter-queue operation on one job (retry: redrive_atom, purge:
/// purge_atom), answered with the job afterwards; errc::conflict unless the
/// job is in the DLQ (as over HTTP).
template <class Atom>
caf::typed_response_promise<job_record> dlq_action(self_ptr self, door_ptr d,
                                                   const std::string& key,
                                                   std::string id, Atom op) {
  auto rp = self->make_response_promise<job_record>();
  auto who = d->admit(key, http::scope_submit);
  if (!who) {
    rp.deliver(std::move(who.error()));
    return rp;
  }
  with_job(self, d, rp, *who, id, [self, d, rp, id, op](job_record& j) mutable {
    if (!j.dead_lettered) {
      rp.deliver(make_error(
          errc::conflict, "job '" + id + "' is not in the dead-letter queue"));
      return;
    }
    act_then_show(self, d, rp, id, op, id);
  });
  return rp;
}

/// Job `id`'s log (or a page of it: `xs...`, the node API's request) for
/// `key`: read scope, and only a job of its tenant.
template <class... Ts>
caf::typed_response_promise<std::vector<job_event>>
read_events(self_ptr self, door_ptr d, const std::string& key, std::string id,
            Ts... xs) {
  auto rp = self->make_response_promise<std::vector<job_event>>();
  auto who = d->admit(key, http::scope_read);
  if (!who) {
    rp.deliver(std::move(who.error()));
    return rp;
  }
  with_job(self, d, rp, *who, id, [self, d, rp, xs...](job_record&) mutable {
    self->request(d->api, d->cfg.timeout, xs...)
        .then(
            [rp](std::vector<job_event>& evs) mutable {
              rp.deliver(std::move(evs));
            },
            [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
  });
  return rp;
}

/// Forwards `xs...` to the node API once `key` may do `need`.
template <class Result, class... Ts>
caf::typed_response_promise<Result>
pass(self_ptr self, door_ptr d, const std::string& key, scope need, Ts... xs) {
  auto rp = self->make_response_promise<Result>();
  auto who = d->admit(key, need);
  if (!who) {
    rp.deliver(std::move(who.error()));
    return rp;
  }
  self->request(d->api, d->cfg.timeout, xs...)
      .then([rp](Result& x) mutable { rp.deliver(std::move(x)); },
            [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

/// A subscriber must be an actor of the client that asks: on the asking
/// node (no subscribing another process's actors, or this node's own).
/// Call it before make_response_promise, which takes the sender.
caf::error own_subscriber(self_ptr self, const door& d,
                          const caf::actor& subscriber) {
  const auto& from = self->current_sender();
  // A remote client's subscriber is on its own node, never on the door's
  // (or it could have the relay message the node's own actors); only a
  // door made for a client in this process (never published) takes local
  // ones.
  if (!subscriber || !from || subscriber.node() != from->node()
      || (!d.cfg.in_process && subscriber.node() == self->node()))
    return make_error(errc::forbidden,
                      "the subscriber must be an actor of the asking client");
  return {};
}

} // namespace

client_door_actor spawn_client_door(caf::actor_system& sys, api_actor api,
                                    client_door_config cfg) {
  auto d = std::make_shared<door>(std::move(cfg), std::move(api));
  return sys.spawn([d](self_ptr self) -> client_door_actor::behavior_type {
    // Anyone who reaches the admin port can message the door, key or not:
    // a stray error or exit request (other than kill) must not end it.
    self->set_error_handler([](caf::error& err) {
      log::warn("admin", "a client sent the door an error",
                {{"error", describe(err)}});
    });
    self->set_exit_handler([](caf::exit_msg& msg) {
      log::warn("admin", "ignored an exit request sent to the door",
                {{"reason", describe(msg.reason)}});
    });
    self->set_down_handler([d](caf::down_msg& dm) {
      for (auto i = d->relays.begin(); i != d->relays.end(); ++i)
        if (i->second.address() == dm.source) {
          d->relays.erase(i);
          return;
        }
    });
    return {
        [self, d](client_atom, std::string& key, submit_atom,
                  submit_request& req) {
          auto rp = self->make_response_promise<job_record>();
          auto who = d->admit(key, http::scope_submit);
          caf::error err = who ? d->place(*who, req) : who.error();
          if (err) {
            rp.deliver(std::move(err));
            return rp;
          }
          self->request(d->api, d->cfg.timeout, submit_atom::value, req)
              .then([rp](job_record& r) mutable { rp.deliver(r); },
                    [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
          return rp;
        },
        [self, d](client_atom, std::string& key, submit_atom,
                  std::vector<submit_request>& reqs) {
          auto rp = self->make_response_promise<std::vector<job_record>>();
          auto who = d->admit(key, http::scope_submit);
          caf::error err = who ? caf::error{} : who.error();
          if (!err && (reqs.empty() || reqs.size() > d->cfg.max_batch))
            err = make_error(errc::invalid_request,
                             "a batch has 1 to "
                                 + std::to_string(d->cfg.max_batch) + " jobs");
          size_t bytes = 0;
          for (const auto& r : reqs)
            bytes += r.input.size();
          if (!err && bytes > d->cfg.max_batch_bytes)
            err = make_error(errc::too_large,
                             "a batch's inputs hold at most "
                                 + std::to_string(d->cfg.max_batch_bytes)
                                 + " bytes in all");
          // One tenant check for all: a batch is refused whole if any item
          // names another tenant or an exec job its key may not submit.
          for (size_t i = 0; !err && i < reqs.size(); ++i)
            err = d->place(*who, reqs[i]);
          if (err) {
            rp.deliver(std::move(err));
            return rp;
          }
          self->request(d->api, d->cfg.timeout, submit_atom::value, reqs)
              .then([rp](std::vector<job_record>& r) mutable { rp.deliver(r); },
                    [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
          return rp;
        },
        [self, d](client_atom, std::string& key, get_atom, std::string& id) {
          auto rp = self->make_response_promise<job_record>();
          auto who = d->admit(key, http::scope_read);
          if (!who)
            rp.deliver(std::move(who.error()));
          else
            with_job(self, d, rp, *who, id,
                     [rp](job_record& job) mutable { rp.deliver(job); });
          return rp;
        },
        [self, d](client_atom, std::string& key, events_atom, std::string& id) {
          return read_events(self, d, key, id, events_atom::value, id);
        },
        [self, d](client_atom, std::string& key, events_atom, std::string& id,
                  uint64_t after, uint32_t limit) {
          return read_events(self, d, key, id, events_atom::value, id, after,
                             limit);
        },
        [self, d](client_atom, std::string& key, cancel_atom, std::string& id,
                  std::string& reason) {
          auto rp = self->make_response_promise<job_record>();
          auto who = d->admit(key, http::scope_submit);
          if (!who) {
            rp.deliver(std::move(who.error()));
            return rp;
          }
          // The audit log records who asked (the key's name) and why.
          auto why = "requested with API key '" + who->key_name + "'"
                     + (reason.empty() ? std::string{} : ": " + reason);
          with_job(self, d, rp, *who, id,
                   [self, d, rp, id, why](job_record& j) mutable {
                     if (is_terminal(j.status)) {
                       rp.deliver(make_error(errc::conflict,
                                             "job '" + id + "' is already "
                                                 + to_string(j.status)));
                       return;
                     }
                     act_then_show(self, d, rp, id, cancel_atom::value, id,
                                   why);
                   });
          return rp;
        },
        [self, d](client_atom, std::string& key, list_atom, job_query& q) {
          auto rp = self->make_response_promise<std::vector<job_record>>();
          auto who = d->admit(key, http::scope_read);
          caf::error err = who ? caf::error{} : who.error();
          if (!err && (q.limit < 1 || q.limit > 1001))
            err = make_error(errc::invalid_request,
                             "limit: 1 to 1000 (and one to see whether a next "
                             "page exists)");
          if (!err && !d->keys.development_mode()) {
            if (!q.tenant.empty() && q.tenant != who->tenant)
              err = make_error(errc::forbidden,
                               "a key lists its own tenant's jobs only");
            q.tenant = who->tenant;
          }
          if (err) {
            rp.deliver(std::move(err));
            return rp;
          }
          self->request(d->api, d->cfg.timeout, list_atom::value, q)
              .then([rp](std::vector<job_record>& r) mutable { rp.deliver(r); },
                    [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
          return rp;
        },
        [self, d](client_atom, std::string& key, redrive_atom,
                  std::string& id) {
          return dlq_action(self, d, key, std::move(id), redrive_atom::value);
        },
        [self, d](client_atom, std::string& key, purge_atom, std::string& id) {
          return dlq_action(self, d, key, std::move(id), purge_atom::value);
        },
        [self, d](client_atom, std::string& key, purge_atom, all_atom all) {
          // Every tenant's dead-letter queue: admin only, as over HTTP.
          return pass<uint32_t>(self, d, key, http::scope_admin,
                                purge_atom::value, all);
        },
        [self, d](client_atom, std::string& key, redrive_atom, all_atom all) {
          return pass<uint32_t>(self, d, key, http::scope_admin,
                                redrive_atom::value, all);
        },
        [self, d](client_atom, std::string& key, subscribe_atom,
                  std::string& id, caf::actor& subscriber) {
          // Before the promise: making it takes the sender from the message.
          auto mine = own_subscriber(self, *d, subscriber);
          auto rp = self->make_response_promise<job_record>();
          auto who = d->admit(key, http::scope_read);
          caf::error err = who ? std::move(mine) : who.error();
          if (err) {
            rp.deliver(std::move(err));
            return rp;
          }
          // Subscribed first, read second: a job that ends in between is
          // seen terminal in the answer (its final may come as well).
          with_job(
              self, d, rp, *who, id,
              [self, d, rp, id, subscriber](job_record&) mutable {
                auto slot = std::make_pair(subscriber.address(), id);
                auto& relay = d->relays[slot];
                if (!relay) {
                  relay = spawn_relay(self->system(), subscriber, d->api, id);
                  self->monitor(relay);
                }
                self->request(d->api, d->cfg.timeout, subscribe_atom::value, id,
                              relay, changed_atom::value)
                    .then(
                        [self, d, rp, id](ok_atom) mutable {
                          self->request(d->api, d->cfg.timeout, get_atom::value,
                                        id)
                              .then(
                                  [rp](job_record& j) mutable {
                                    rp.deliver(j);
                                  },
                                  [rp](caf::error& e) mutable {
                                    rp.deliver(std::move(e));
                                  });
                        },
                        [rp](caf::error& e) mutable {
                          rp.deliver(std::move(e));
                        });
              });
          return rp;
        },
        [self, d](client_atom, std::string& key, unsubscribe_atom,
                  std::string& id, caf::actor& subscriber) {
          // Only a subscription of the asking client's own actors, and only
          // one the door made.
          if (!d->admit(key, http::scope_read)
              || own_subscriber(self, *d, subscriber))
            return;
          auto i = d->relays.find(std::make_pair(subscriber.address(), id));
          if (i != d->relays.end())
            // A request, not anon_send: the relay obeys local senders only.
            self->request(i->second, d->cfg.timeout, stop_atom::value)
                .then([] {},
                      [id](caf::error& err) {
                        // Gone already (its client or the job ended it).
                        log::debug("admin", log::job{id},
                                   "a progress relay did not stop",
                                   {{"error", describe(err)}});
                      });
        },
        [self, d](client_atom, std::string& key, stats_atom) {
          return pass<queue_stats>(self, d, key, http::scope_admin,
                                   stats_atom::value);
        },
        [self, d](client_atom, std::string& key, describe_atom) {
          return pass<tree_node>(self, d, key, http::scope_admin,
                                 describe_atom::value);
        },
        [self, d](client_atom, std::string& key, nodes_atom) {
          return pass<std::string>(self, d, key, http::scope_admin,
                                   nodes_atom::value);
        },
        [self, d](client_atom, std::string& key, partitions_atom) {
          auto rp = self->make_response_promise<std::string, int32_t,
                                                std::string>();
          // Any key may read the map: a submit-only key routes too.
          auto who = d->admit(key, http::scope_read);
          if (!who && is(who.error(), errc::forbidden))
            who = d->admit(key, http::scope_submit);
          if (!who) {
            rp.deliver(std::move(who.error()));
            return rp;
          }
          auto tenant
              = d->keys.development_mode() ? std::string{} : who->tenant;
          self->request(d->api, d->cfg.timeout, partitions_atom::value)
              .then(
                  [rp, tenant](std::string& owned, int32_t count) mutable {
                    rp.deliver(std::move(owned), count, tenant);
                  },
                  [rp](caf::error& e) mutable { rp.deliver(std::move(e)); });
          return rp;
        },
    };
  });
}

} // namespace drover
