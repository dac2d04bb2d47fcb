// A gateway node's router (nodes/gateway_router.hpp): joining every
// coordinator of its --coordinator list, each again after a loss, on a
// thread of its own; the router actor hears of each join and loss.

#include "nodes/gateway_router.hpp"

#include "nodes/node_roles.hpp"
#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <algorithm>

namespace drover::node {

namespace {

constexpr auto join_timeout = std::chrono::seconds{2};

} // namespace

api_router::~api_router() {
  std::vector<caf::actor> watching;
  {
    std::lock_guard<std::mutex> guard{mx_};
    stopping_ = true;
    watching = watchers_;
  }
  cv_.notify_all();
  for (const auto& w : watching)
    if (w)
      caf::anon_send(w, stop_atom::value);
  for (auto& t : joiners_)
    if (t.joinable())
      t.join();
  caf::anon_send_exit(router_, caf::exit_reason::user_shutdown);
}

void api_router::join_loop(size_t index) {
  const auto& target = cfg_.coordinators[index];
  backoff_counter backoff{backoff_schedule{std::chrono::milliseconds{100},
                                           std::chrono::milliseconds{2000}, 2.0,
                                           0.5}};
  auto stopping = [this] {
    std::lock_guard<std::mutex> guard{mx_};
    return stopping_;
  };
  bool logged_failure = false;
  while (!stopping()) {
    // Short requests: a stopping node waits for this join to end.
    auto joined = join_gateway_at(sys_, cfg_, target, join_timeout);
    if (!joined) {
      if (is(joined.error(), errc::forbidden)) {
        log::error("node", "a coordinator refused this gateway",
                   {{"coordinator", target.text()},
                    {"error", describe(joined.error())}});
        {
          std::lock_guard<std::mutex> guard{mx_};
          refused_ = true;
        }
        cv_.notify_all();
        return;
      }
      if (!logged_failure)
        log::warn("node", "cannot join a coordinator; retrying with backoff",
                  {{"coordinator", target.text()},
                   {"error", describe(joined.error())}});
      logged_failure = true;
      std::unique_lock<std::mutex> guard{mx_};
      cv_.wait_for(guard, backoff.next(), [this] { return stopping_; });
      continue;
    }
    backoff.reset();
    logged_failure = false;
    log::info("node", "the gateway joined a coordinator",
              {{"coordinator", target.text()}, {"protocol", joined->protocol}});
    const auto& api = joined->api;
    caf::anon_send(router_, router_set_atom::value, uint64_t{index}, api,
                   joined->protocol);
    // Until it is lost, or the node stops (the destructor's stop_atom).
    caf::scoped_actor watcher{sys_};
    watcher->monitor(api);
    {
      std::lock_guard<std::mutex> guard{mx_};
      ++joined_;
      if (stopping_)
        return;
      watchers_.push_back(caf::actor_cast<caf::actor>(watcher));
    }
    cv_.notify_all();
    bool lost = false;
    watcher->receive([&](caf::down_msg&) { lost = true; }, [](stop_atom) {});
    {
      std::lock_guard<std::mutex> guard{mx_};
      auto me = caf::actor_cast<caf::actor>(watcher);
      watchers_.erase(std::remove(watchers_.begin(), watchers_.end(), me),
                      watchers_.end());
    }
    if (lost) {
      log::warn("node", "the gateway lost a coordinator; joining it again",
                {{"coordinator", target.text()}});
      caf::anon_send(router_, router_set_atom::value, uint64_t{index},
                     api_actor{}, uint32_t{0});
    }
  }
}

caf::error api_router::start(std::chrono::milliseconds patience) {
  for (size_t i = 0; i < cfg_.coordinators.size(); ++i)
    joiners_.emplace_back([this, i] { join_loop(i); });
  std::unique_lock<std::mutex> guard{mx_};
  cv_.wait_for(guard, patience, [this] { return joined_ > 0 || refused_; });
  if (joined_ > 0)
    return caf::none;
  if (refused_)
    return make_error(errc::forbidden,
                      "a coordinator refused this gateway (see the log)");
  return make_error(errc::unavailable,
                    "the gateway could not join any coordinator of "
                    "--coordinator in time");
}

} // namespace drover::node
