#include "nodes/router_subscriptions.hpp"

#include "runtime/errors.hpp"
#include "runtime/partition.hpp"
#include "runtime/send_untyped.hpp"

#include <caf/typed_event_based_actor.hpp>

namespace drover::node {

namespace {

/// How long a subscribe at a coordinator may take.
constexpr auto subscribe_timeout = std::chrono::seconds{5};
/// Subscriptions one router keeps at most (each HTTP stream has one; the
/// gateway's per-key stream limit comes first).
constexpr size_t max_subscriptions = 100'000;
/// Subscriptions moved by one follow() (once a second): a failover of a
/// gateway with many streams does not send the new owner all their
/// subscribes, and the log reads they start, at once.
constexpr size_t max_moves_per_follow = 1'000;

/// The index of `partition`'s owner if it is known and joined, else -1.
int owner_of(const router_view& view, int32_t partition) {
  if (view.owner.empty())
    return view.apis.size() == 1 && view.apis[0] ? 0 : -1;
  if (partition < 0 || static_cast<size_t>(partition) >= view.owner.size())
    return -1;
  auto o = view.owner[static_cast<size_t>(partition)];
  if (o < 0 || static_cast<size_t>(o) >= view.apis.size()
      || !view.apis[static_cast<size_t>(o)])
    return -1;
  return o;
}

} // namespace

std::optional<caf::typed_response_promise<ok_atom>>
router_subscriptions::take_first(entry& e) {
  auto rp = std::move(e.first);
  e.first.reset();
  return rp;
}

caf::result<ok_atom> router_subscriptions::subscribe(self_ptr self,
                                                     const router_view& view,
                                                     std::string id,
                                                     caf::actor who,
                                                     bool wants_changes) {
  if (!who)
    return make_error(errc::invalid_value,
                      "progress subscription needs a subscriber");
  key k{id, who.address()};
  auto it = subs_.find(k);
  if (it == subs_.end()) {
    if (subs_.size() >= max_subscriptions)
      return make_error(errc::unavailable,
                        "this gateway holds too many progress subscriptions; "
                        "retry later");
    it = subs_.emplace(k, entry{}).first;
    it->second.subscriber = who;
    it->second.partition = partition_of_id(id);
    auto& jobs = by_subscriber_[k.second];
    if (jobs.empty())
      self->monitor(who);
    jobs.insert(id);
  }
  auto& e = it->second;
  e.wants_changes = e.wants_changes || wants_changes;
  auto target = owner_of(view, e.partition);
  if (target < 0)
    // No owner known yet: the subscriber reads the log from any
    // coordinator now, and follow() subscribes at the owner and tells it.
    return ok_atom::value;
  if (auto old = take_first(e))
    old->deliver(ok_atom::value); // superseded by this one
  auto rp = self->make_response_promise<ok_atom>();
  e.first = rp;
  move_to(self, view, k, e, target);
  return rp;
}

void router_subscriptions::move_to(self_ptr self, const router_view& view,
                                   const key& k, entry& e, int target) {
  const auto& next = view.apis[static_cast<size_t>(target)];
  if (e.at_api && e.at_api != next)
    self->send(e.at_api, unsubscribe_atom::value, k.first, e.subscriber);
  e.at = target;
  e.at_api = next;
  auto generation = ++e.generation;
  auto reply = [this, self, k, generation](caf::error err) {
    auto it = subs_.find(k);
    if (it == subs_.end() || it->second.generation != generation)
      return; // moved on (or gone) since
    auto& e = it->second;
    if (err) {
      // Made again at the next follow(); the unsubscribe undoes a
      // subscribe that timed out here but is still made later.
      if (e.at_api)
        self->send(e.at_api, unsubscribe_atom::value, k.first, e.subscriber);
      e.at = -1;
      e.at_api = nullptr;
      e.candidate = -1;
      if (auto rp = take_first(e)) {
        // Its own subscribe failed: the subscriber hears why.
        forget(self, k);
        rp->deliver(std::move(err));
      } else {
        retry_later(self);
      }
      return;
    }
    if (auto rp = take_first(e)) {
      rp->deliver(ok_atom::value);
    } else if (e.wants_changes) {
      // Moved: whatever was committed while no publisher had the job is
      // in the log.
      send_untyped(self, e.subscriber, changed_atom::value, k.first);
    }
  };
  auto req
      = e.wants_changes
            ? self->request(e.at_api, subscribe_timeout, subscribe_atom::value,
                            k.first, e.subscriber, changed_atom::value)
            : self->request(e.at_api, subscribe_timeout, subscribe_atom::value,
                            k.first, e.subscriber);
  req.then([reply](ok_atom) { reply(caf::none); },
           [reply](caf::error& err) { reply(std::move(err)); });
}

void router_subscriptions::unsubscribe(self_ptr self, const std::string& id,
                                       const caf::actor& who) {
  key k{id, who.address()};
  auto it = subs_.find(k);
  if (it == subs_.end())
    return;
  if (it->second.at_api)
    self->send(it->second.at_api, unsubscribe_atom::value, id,
               it->second.subscriber);
  forget(self, k);
}

void router_subscriptions::subscriber_down(self_ptr self,
                                           const caf::actor_addr& who) {
  auto i = by_subscriber_.find(who);
  if (i == by_subscriber_.end())
    return;
  auto jobs = i->second;
  for (const auto& id : jobs) {
    key k{id, who};
    if (auto it = subs_.find(k); it != subs_.end() && it->second.at_api)
      self->send(it->second.at_api, unsubscribe_atom::value, id,
                 it->second.subscriber);
    forget(self, k);
  }
}

void router_subscriptions::lost(size_t index) {
  for (auto& [k, e] : subs_) {
    if (e.at != static_cast<int>(index))
      continue;
    e.at = -1;
    e.at_api = nullptr;
    ++e.generation;
    // Subscribed nowhere for now; the subscriber reads the log and hears
    // again once the next owner has it.
    if (auto rp = take_first(e))
      rp->deliver(ok_atom::value);
  }
}

void router_subscriptions::follow(self_ptr self, const router_view& view) {
  size_t moves = 0;
  for (auto& [k, e] : subs_) {
    auto target = owner_of(view, e.partition);
    if (target < 0 || (target == e.at && e.at_api == view.apis[target])) {
      e.candidate = -1;
      continue;
    }
    // A subscription that has a live owner moves once the map has named
    // the new one twice in a row: two coordinators that both still list
    // the partition during a hand-off do not make it flap between them.
    if (e.at >= 0 && e.candidate != target) {
      e.candidate = target;
      continue;
    }
    if (moves++ >= max_moves_per_follow) {
      retry_later(self); // the rest then, or at the next refresh
      return;
    }
    e.candidate = -1;
    move_to(self, view, k, e, target);
  }
}

void router_subscriptions::retry_later(self_ptr self) {
  if (retry_armed_)
    return;
  retry_armed_ = true;
  self->delayed_send(self, std::chrono::seconds{1}, router_retry_atom::value);
}

void router_subscriptions::forget(self_ptr self, const key& k) {
  auto it = subs_.find(k);
  if (it == subs_.end())
    return;
  if (auto rp = take_first(it->second))
    rp->deliver(ok_atom::value);
  subs_.erase(it);
  auto j = by_subscriber_.find(k.second);
  if (j == by_subscriber_.end())
    return;
  j->second.erase(k.first);
  if (j->second.empty()) {
    self->demonitor(k.second);
    by_subscriber_.erase(j);
  }
}

} // namespace drover::node
