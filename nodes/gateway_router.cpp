// A gateway node's router (nodes/gateway_router.hpp): the router actor,
// which routes each request of the node API by its types — to one
// partition's owner, again after a `not_owner` answer, split by owner (a
// batch), or to every coordinator with the answers added up or merged. Its
// partition map: nodes/gateway_router_map.cpp.

#include "nodes/gateway_router.hpp"

#include "nodes/gateway_router_state.hpp"

#include "nodes/events_after.hpp"
#include "nodes/node_roles.hpp"
#include "nodes/router_subscriptions.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/partition.hpp"
#include "runtime/partition_map.hpp"
#include "runtime/type_ids.hpp"
#include "runtime/typed_forward.hpp"
#include "runtime/view_merge.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/typed_event_based_actor.hpp>
#include <caf/typed_response_promise.hpp>

#include <algorithm>
#include <functional>
#include <map>
#include <tuple>
#include <type_traits>

namespace drover::node {

namespace {

// From nodes/gateway_router_state.hpp: the timeouts, router_state (and
// state_ptr, self_ptr) and the partition map's lose, refresh and pick.
using namespace router_detail;

caf::error no_coordinator() {
  return make_error(errc::unavailable,
                    "the gateway has no coordinator at the moment (it is "
                    "joining them); retry");
}

/// Sends a request to coordinator `i` (`send(self, api)` makes it, typed);
/// exactly one of `on_reply` (with the reply, through `handler`) and
/// `on_lost` runs: the latter if the coordinator is lost first.
template <class... Reply, class Send, class Handler, class OnError>
void send_tracked(self_ptr self, const state_ptr& st, size_t i,
                  const Send& send, Handler handler, OnError on_error,
                  std::function<void()> on_lost) {
  auto id = st->next_request++;
  auto settled = std::make_shared<bool>(false);
  st->inflight[i].emplace(id, [settled, on_lost] {
    if (!*settled) {
      *settled = true;
      on_lost();
    }
  });
  auto forget = [st, i, id, settled] {
    st->inflight[i].erase(id);
    bool first = !*settled;
    *settled = true;
    return first;
  };
  send(self, st->apis[i])
      .then(
          [forget, handler](Reply&... xs) mutable {
            if (forget())
              handler(xs...);
          },
          [forget, on_error](caf::error& err) mutable {
            if (forget())
              on_error(err);
          });
}

/// What a request in flight answers when its coordinator is lost first:
/// a submit may or may not have been created.
caf::error lost_error(bool submit) {
  if (submit)
    return make_error(errc::outcome_unknown,
                      "the coordinator stopped before it answered this "
                      "submit: the job may or may not exist (submit again "
                      "with the same idempotency key to find out)");
  return make_error(errc::unavailable, "the coordinator stopped before it "
                                       "answered; retry");
}

/// Sends a write to the owner of `p` and answers with its reply; one
/// refused `not_owner` (nothing was done) goes to the owner the refreshed
/// map names, up to max_sends in all.
template <class Reply, class Send>
void forward(self_ptr self, state_ptr st, Send send, int32_t p,
             caf::typed_response_promise<Reply> rp, int sends_left,
             bool submit) {
  auto i = pick(*st, p);
  if (i < 0) {
    rp.deliver(no_coordinator());
    return;
  }
  send_tracked<Reply>(
      self, st, static_cast<size_t>(i), send,
      [rp](Reply& reply) mutable { rp.deliver(std::move(reply)); },
      [self, st, send, p, rp, sends_left, submit](caf::error& err) mutable {
        if (!is(err, errc::not_owner) || sends_left <= 1) {
          rp.deliver(std::move(err));
          return;
        }
        refresh(self, st, [self, st, send, p, rp, sends_left, submit] {
          forward<Reply>(self, st, send, p, rp, sends_left - 1, submit);
        });
      },
      [rp, submit]() mutable { rp.deliver(lost_error(submit)); });
}

using batch_answers = std::shared_ptr<std::vector<job_record>>;

/// Submits items[k] (answers go to (*answers)[slots[k]]) split by owner:
/// keyed items to their key's partition's owner, keyless ones together to
/// one coordinator. Items refused `not_owner` are sent again after a map
/// refresh while sends are left. `done` runs when every item has an
/// answer.
void submit_split(self_ptr self, state_ptr st,
                  std::vector<submit_request> items, std::vector<size_t> slots,
                  batch_answers answers, int sends_left,
                  std::function<void()> done) {
  std::map<int, std::pair<std::vector<submit_request>, std::vector<size_t>>>
      groups;
  auto keyless = -2; // picked once, when the batch has a keyless item
  for (size_t k = 0; k < items.size(); ++k) {
    const auto& r = items[k];
    int target;
    auto p = partition_of_submission(r.tenant, r.idempotency_key,
                                     r.concurrency_key, st->count);
    if (p < 0) {
      if (keyless == -2)
        keyless = pick(*st, -1);
      target = keyless;
    } else {
      target = pick(*st, p);
    }
    auto& g = groups[target];
    g.first.push_back(std::move(items[k]));
    g.second.push_back(slots[k]);
  }
  auto pending = std::make_shared<size_t>(groups.size());
  auto retry = std::make_shared<
      std::pair<std::vector<submit_request>, std::vector<size_t>>>();
  auto group_done = [self, st, answers, pending, retry, sends_left, done] {
    if (--*pending > 0)
      return;
    if (retry->first.empty() || sends_left <= 1)
      return done();
    refresh(self, st, [self, st, answers, retry, sends_left, done] {
      submit_split(self, st, std::move(retry->first), std::move(retry->second),
                   answers, sends_left - 1, done);
    });
  };
  for (auto& [target, g] : groups) {
    auto group = std::make_shared<
        std::pair<std::vector<submit_request>, std::vector<size_t>>>(
        std::move(g));
    auto fail_all = [answers, group](const caf::error& err) {
      for (auto slot : group->second) {
        auto& a = (*answers)[slot];
        a.error.code = code_text(err);
        a.error.message = describe(err);
      }
    };
    if (target < 0) {
      fail_all(no_coordinator());
      group_done();
      continue;
    }
    send_tracked<std::vector<job_record>>(
        self, st, static_cast<size_t>(target),
        [group](self_ptr me, const api_actor& api) {
          return me->request(api, request_timeout, submit_atom::value,
                             group->first);
        },
        [answers, group, retry, group_done,
         fail_all](std::vector<job_record>& got) {
          if (got.size() != group->second.size()) {
            // Not one answer per item: none of them can be trusted.
            fail_all(make_error(errc::unavailable,
                                "a coordinator answered a batch of "
                                    + std::to_string(group->second.size())
                                    + " with " + std::to_string(got.size())
                                    + " results"));
            group_done();
            return;
          }
          for (size_t k = 0; k < got.size(); ++k) {
            if (got[k].error.code == "not_owner") {
              retry->first.push_back(group->first[k]);
              retry->second.push_back(group->second[k]);
            }
            (*answers)[group->second[k]] = std::move(got[k]);
          }
          group_done();
        },
        [fail_all, group_done](caf::error& err) {
          // This coordinator's part only: the others' items may exist.
          fail_all(err);
          group_done();
        },
        [fail_all, group_done] {
          fail_all(lost_error(true));
          group_done();
        });
  }
}

/// A request every joined coordinator answers for its own partitions (DLQ
/// retry or purge of every job, the queue figures, the tree, the nodes and
/// flow views): the `Reply`s folded into `acc` by `fold(acc, answer,
/// coordinator)`, then `done(acc or error)`. Any coordinator's error is
/// the answer: a figure without one coordinator's part would pass for the
/// whole.
template <class Reply, class Acc, class Send, class Fold, class Done>
void gather(self_ptr self, const state_ptr& st, const Send& send, Acc init,
            Fold fold, Done done) {
  auto pending = std::make_shared<size_t>(0);
  auto acc = std::make_shared<Acc>(std::move(init));
  auto failed = std::make_shared<caf::error>();
  for (const auto& api : st->apis)
    *pending += api ? 1 : 0;
  if (*pending == 0) {
    done(caf::expected<Acc>{no_coordinator()});
    return;
  }
  auto one_done = [pending, acc, failed, done]() mutable {
    if (--*pending > 0)
      return;
    if (*failed)
      done(caf::expected<Acc>{std::move(*failed)});
    else
      done(caf::expected<Acc>{std::move(*acc)});
  };
  for (size_t i = 0; i < st->apis.size(); ++i)
    if (st->apis[i])
      send_tracked<Reply>(
          self, st, i, send,
          [acc, one_done, fold, i](Reply& x) mutable {
            fold(*acc, x, i);
            one_done();
          },
          [failed, one_done](caf::error& err) mutable {
            *failed = std::move(err);
            one_done();
          },
          [failed, one_done]() mutable {
            *failed = lost_error(false);
            one_done();
          });
}

/// gather() of answers of type `T`, folded into a `T` for `rp`.
template <class T, class Send, class Fold>
void fan_out(self_ptr self, const state_ptr& st, const Send& send,
             caf::typed_response_promise<T> rp, T init, Fold fold) {
  gather<T>(self, st, send, std::move(init), std::move(fold),
            [rp](caf::expected<T> x) mutable {
              if (x)
                rp.deliver(std::move(*x));
              else
                rp.deliver(std::move(x.error()));
            });
}

/// gather() of a JSON admin view, merged by `merge` (runtime/view_merge.hpp)
/// in the order of the gateway's coordinator list.
template <class Send, class Merge>
void merge_views(self_ptr self, const state_ptr& st, const Send& send,
                 caf::typed_response_promise<std::string> rp, Merge merge) {
  gather<std::string>(
      self, st, send, std::map<size_t, view_part>{},
      [st](std::map<size_t, view_part>& parts, std::string& json, size_t i) {
        parts[i] = view_part{st->addresses[i], std::move(json)};
      },
      [st, rp, merge](caf::expected<std::map<size_t, view_part>> x) mutable {
        if (!x) {
          rp.deliver(std::move(x.error()));
          return;
        }
        std::vector<view_part> parts;
        std::vector<std::string> unreached;
        for (size_t i = 0; i < st->addresses.size(); ++i)
          if (x->count(i) == 0)
            unreached.push_back(st->addresses[i]);
        for (auto& [i, part] : *x)
          parts.push_back(std::move(part));
        if (auto whole = merge(parts))
          rp.deliver(with_unreached(std::move(*whole), unreached));
        else
          rp.deliver(make_error(errc::unavailable,
                                "a coordinator answered a view the gateway "
                                "could not read"));
      });
}

/// A request's arguments, kept to be sent (again) to whichever coordinator
/// the router picks: `send(self, api)` makes the typed request.
template <class... Ts>
auto make_send(Ts&... xs) {
  return [args = std::make_shared<const std::tuple<std::decay_t<Ts>...>>(
              std::move(xs)...)](self_ptr self, const api_actor& api) {
    return std::apply(
        [&](const auto&... a) {
          return self->request(api, request_timeout, a...);
        },
        *args);
  };
}

template <class T>
constexpr bool is_one_job_write_v
    = std::is_same_v<
          T,
          cancel_atom> || std::is_same_v<T, redrive_atom> || std::is_same_v<T, purge_atom>;

/// Whether a request's second element (if any) is a `T`.
template <class T, class... Ts>
constexpr bool second_is() {
  if constexpr (sizeof...(Ts) >= 2)
    return std::is_same_v<std::tuple_element_t<1, std::tuple<Ts...>>, T>;
  else
    return false;
}

/// One request of the API's interface, routed (see the header): its
/// types say which way, at compile time.
template <class... Os, class First, class... Rest>
caf::result<Os...> route(self_ptr self, const state_ptr& st, reply_tag<Os...>,
                         First& first, Rest&... rest) {
  using first_t = std::decay_t<First>;
  using args_t = std::tuple<first_t, std::decay_t<Rest>...>;
  constexpr bool batch
      = std::is_same_v<args_t,
                       std::tuple<submit_atom, std::vector<submit_request>>>;
  constexpr bool one_submit
      = std::is_same_v<args_t, std::tuple<submit_atom, submit_request>>;
  constexpr bool one_job_write
      = is_one_job_write_v<
            first_t> && second_is<std::string, first_t, std::decay_t<Rest>...>();
  // A rate limit or breaker set at run time: its control-log entry is
  // written by the owner of its key's partition.
  constexpr bool flow_write = std::is_same_v<
      args_t, std::tuple<flow_atom, std::string, std::string, std::string>>;
  constexpr bool every_job
      = sizeof...(Rest) == 1
        && second_is<all_atom, first_t, std::decay_t<Rest>...>();

  auto p = partition_of_request(st->count, first, rest...);
  if constexpr (batch) {
    auto rp = self->template make_response_promise<Os...>();
    auto& items = std::get<0>(std::tie(rest...));
    auto answers = std::make_shared<std::vector<job_record>>(items.size());
    std::vector<size_t> slots(items.size());
    for (size_t k = 0; k < slots.size(); ++k)
      slots[k] = k;
    submit_split(self, st, std::move(items), std::move(slots), answers,
                 max_sends,
                 [rp, answers]() mutable { rp.deliver(std::move(*answers)); });
    return rp;
  } else if constexpr (one_submit || one_job_write || flow_write) {
    auto rp = self->template make_response_promise<Os...>();
    forward<Os...>(self, st, make_send(first, rest...), p, rp, max_sends,
                   one_submit);
    return rp;
  } else if constexpr (every_job) {
    auto rp = self->template make_response_promise<Os...>();
    fan_out(self, st, make_send(first, rest...), rp, uint32_t{0},
            [](uint32_t& total, uint32_t n, size_t) { total += n; });
    return rp;
  } else if constexpr (std::is_same_v<args_t, std::tuple<stats_atom>>) {
    auto rp = self->template make_response_promise<Os...>();
    fan_out(self, st, make_send(first, rest...), rp, queue_stats{},
            [](queue_stats& all, const queue_stats& s, size_t) {
              add_figures(all, s);
            });
    return rp;
  } else if constexpr (std::is_same_v<args_t, std::tuple<describe_atom>>) {
    // One tree: each coordinator's under one root, named by the address
    // the gateway joined it at (in that order).
    auto rp = self->template make_response_promise<Os...>();
    fan_out(self, st, make_send(first, rest...), rp, coordinators_root(),
            [st](tree_node& root, tree_node& t, size_t i) {
              add_coordinator_tree(root, st->addresses[i], std::move(t));
            });
    return rp;
  } else if constexpr (std::is_same_v<args_t, std::tuple<nodes_atom>>) {
    auto rp = self->template make_response_promise<Os...>();
    merge_views(self, st, make_send(first, rest...), rp, merge_nodes_views);
    return rp;
  } else if constexpr (std::is_same_v<args_t,
                                      std::tuple<flow_atom, uint32_t>>) {
    auto rp = self->template make_response_promise<Os...>();
    merge_views(self, st, make_send(first, rest...), rp, merge_flow_views);
    return rp;
  } else if constexpr (is_subscription_v<first_t>) {
    return st->subs.on(self, st->view(), first, rest...);
  } else if constexpr (is_events_page_v<First, Rest...>) {
    auto i = pick(*st, p);
    if (i < 0)
      return no_coordinator();
    auto k = static_cast<size_t>(i);
    return read_events_after(self, st->apis[k], st->protocols[k],
                             st->whole_logs, rest...);
  } else {
    auto i = pick(*st, p);
    if (i < 0)
      return no_coordinator();
    return self->delegate(st->apis[static_cast<size_t>(i)], std::move(first),
                          std::move(rest)...);
  }
}

} // namespace

api_router::api_router(caf::actor_system& sys, const node_config& cfg)
    : sys_(sys), cfg_(cfg) {
  auto st = std::make_shared<router_state>();
  st->apis.resize(cfg.coordinators.size());
  st->protocols.resize(cfg.coordinators.size());
  st->owned.resize(cfg.coordinators.size());
  st->inflight.resize(cfg.coordinators.size());
  for (const auto& c : cfg.coordinators)
    st->addresses.push_back(c.text());
  router_ = sys.spawn([st](self_ptr self) {
    self->set_default_handler(log_and_drop);
    self->set_down_handler([self, st](caf::down_msg& dm) {
      st->subs.subscriber_down(self, dm.source);
    });
    self->send(self, router_tick_atom::value);
    // Every message of the API's interface, routed by its types.
    auto api_handlers
        = forward_handlers<api_actor>([self, st](auto reply, auto&... xs) ->
                                      typename decltype(reply)::result {
                                        return route(self, st, reply, xs...);
                                      });
    auto own = std::make_tuple(
        [self, st](router_set_atom, uint64_t index, api_actor& api,
                   uint32_t protocol) {
          if (index >= st->apis.size())
            return;
          // Only the joiner, which watches the coordinator, says it is
          // lost (set to null, at once): its messages come in order, where
          // a down message of an old handle could follow a newer one's set.
          lose(*st, index);
          st->apis[index] = api;
          st->protocols[index] = protocol;
          if (api)
            refresh(self, st, nullptr);
        },
        [self, st](router_tick_atom) {
          refresh(self, st, nullptr);
          self->delayed_send(self, map_interval, router_tick_atom::value);
        },
        [self, st](router_retry_atom) { st->subs.retry(self, st->view()); });
    return behavior_of<api_router_actor>(
        std::tuple_cat(std::move(api_handlers), std::move(own)));
  });
}

} // namespace drover::node
