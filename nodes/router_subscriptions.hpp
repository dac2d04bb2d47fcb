#pragma once

// Progress subscriptions made through a sharing gateway's router
// (nodes/gateway_router.hpp): each follows its job's partition to the
// coordinator that owns it now. A subscription lives in the owner's
// progress publisher; when the partition moves (a kill -9 and a takeover,
// an orderly hand-off to a coordinator that joined) the old owner's
// publisher hears nothing more of the job, so the router subscribes again
// at the new owner once its partition map names it, drops the old one,
// and tells the subscriber (changed_atom, job id) so that it reads the
// job's log again: a transition or the end committed while no publisher
// had it is not missed. A subscribe while the partition has no known owner
// is answered at once (the log is read from any coordinator) and made at
// the owner when one is known, followed by that same notice.
//
// One instance belongs to the router actor (not thread-safe). Every entry
// goes when its subscriber unsubscribes or its actor goes (the router
// monitors each subscriber once). Only a subscriber that asked for
// changed_atom is told of a move (the gateway's streams all do); one that
// did not gets the new owner's snapshot and final only, so it misses an
// end committed while no publisher had the job.

#include "nodes/gateway_router.hpp"
#include "runtime/api_protocol.hpp"

#include <caf/actor.hpp>
#include <caf/actor_addr.hpp>
#include <caf/typed_response_promise.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace drover::node {

/// What the router knows of the coordinators, for a subscription's owner.
struct router_view {
  /// By coordinator; null while not joined.
  const std::vector<api_actor>& apis;
  /// By partition: its owner's index, -1 = not known. Empty with one
  /// coordinator: it owns every partition (a relay to the active one).
  const std::vector<int>& owner;
};

/// Whether a message of the node API whose first element is a `T` is one
/// router_subscriptions::on takes.
template <class T>
constexpr bool is_subscription_v
    = std::is_same_v<T, subscribe_atom> || std::is_same_v<T, unsubscribe_atom>;

class router_subscriptions {
public:
  using self_ptr = api_router_actor::pointer;

  /// (subscribe_atom, id, who[, changed_atom]) through the router.
  caf::result<ok_atom> on(self_ptr self, const router_view& view,
                          subscribe_atom, std::string& id, caf::actor& who) {
    return subscribe(self, view, std::move(id), std::move(who), false);
  }
  caf::result<ok_atom> on(self_ptr self, const router_view& view,
                          subscribe_atom, std::string& id, caf::actor& who,
                          changed_atom) {
    return subscribe(self, view, std::move(id), std::move(who), true);
  }

  /// (unsubscribe_atom, id, who) through the router.
  caf::result<void> on(self_ptr self, const router_view&, unsubscribe_atom,
                       std::string& id, caf::actor& who) {
    unsubscribe(self, id, who);
    return caf::unit;
  }

  /// A monitored subscriber is gone: its subscriptions go too.
  void subscriber_down(self_ptr self, const caf::actor_addr& who);

  /// Coordinator `index` is lost: what was subscribed there waits for the
  /// next owner (a first subscribe still in flight there is answered).
  void lost(size_t index);

  /// After a map refresh (once a second): a subscription not at its
  /// partition's owner moves there — at once if it is subscribed nowhere
  /// (its coordinator was lost, a subscribe failed), else once the map
  /// named the new owner twice in a row; at most a thousand a call (the
  /// rest are made at the next call, or at retry()).
  void follow(self_ptr self, const router_view& view);

  /// (router_retry_atom), which a failed subscribe or a follow() cut short
  /// arms once, a second later: follow() again. A failed subscribe is so
  /// tried again every second while its subscriber lives, also where no
  /// map refresh calls follow() (a relay).
  void retry(self_ptr self, const router_view& view) {
    retry_armed_ = false;
    follow(self, view);
  }

  /// Subscriptions kept (for tests and the node's log).
  size_t size() const {
    return subs_.size();
  }

private:
  caf::result<ok_atom> subscribe(self_ptr self, const router_view& view,
                                 std::string id, caf::actor who,
                                 bool wants_changes);
  void unsubscribe(self_ptr self, const std::string& id, const caf::actor& who);

  struct entry {
    caf::actor subscriber;
    int32_t partition = -1;
    bool wants_changes = false;
    /// Where it is subscribed: coordinator index and its handle (-1/null:
    /// nowhere yet).
    int at = -1;
    api_actor at_api;
    /// Bumped at every move: an older subscribe's late reply is ignored.
    uint64_t generation = 0;
    /// The owner the last follow() found, if not `at` (-1: none): a move
    /// waits for the map to name it twice.
    int candidate = -1;
    /// The subscriber's own subscribe, answered once the owner took it.
    std::optional<caf::typed_response_promise<ok_atom>> first;
  };
  using key = std::pair<std::string, caf::actor_addr>;

  void move_to(self_ptr self, const router_view& view, const key& k, entry& e,
               int target);
  void forget(self_ptr self, const key& k);
  /// The pending first subscribe's promise, taken out of `e`.
  static std::optional<caf::typed_response_promise<ok_atom>>
  take_first(entry& e);

  /// Arms retry() once.
  void retry_later(self_ptr self);

  std::map<key, entry> subs_;
  bool retry_armed_ = false;
  std::map<caf::actor_addr, std::set<std::string>> by_subscriber_;
};

} // namespace drover::node
