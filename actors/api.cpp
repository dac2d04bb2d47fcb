#include "actors/api.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

namespace drover {

namespace {

caf::error unavailable(const char* part) {
  return make_error(errc::unavailable,
                    std::string{"the "} + part + " is restarting; retry");
}

/// Hands the current request to `dest`, whose answer goes straight back to
/// the client; fails at once if `dest` is down.
template <class Handle, class... Ts>
caf::response_promise forward_to(caf::event_based_actor* self,
                                 const Handle& dest, const char* part,
                                 Ts&&... xs) {
  auto rp = self->make_response_promise();
  if (!dest)
    rp.deliver(unavailable(part));
  else
    rp.delegate(caf::actor_cast<caf::actor>(dest), std::forward<Ts>(xs)...);
  return rp;
}

} // namespace

caf::actor spawn_api(caf::actor_system& sys,
                     std::shared_ptr<const job_system_handles> handles,
                     supervisor_actor root) {
  return sys.spawn([handles, root](caf::event_based_actor* self)
                     -> caf::behavior {
    // Clients' mistakes must not kill the node's entry point.
    self->set_error_handler([](caf::error&) {});
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
      [q](cancel_atom a, std::string& id) { return q(a, std::move(id)); },
      [q](cancel_atom a, std::string& id, std::string& reason) {
        return q(a, std::move(id), std::move(reason));
      },
      [q](redrive_atom a, std::string& id) { return q(a, std::move(id)); },
      [q](redrive_atom a, all_atom b) { return q(a, b); },
      [q](purge_atom a, std::string& id) { return q(a, std::move(id)); },
      [q](purge_atom a, all_atom b) { return q(a, b); },
      [q](stats_atom a) { return q(a); },
      [s](ping_atom a) { return s(a); },
      [s](get_atom a, std::string& id) { return s(a, std::move(id)); },
      [s](events_atom a, std::string& id) { return s(a, std::move(id)); },
      [s](list_atom a, job_query& x) { return s(a, std::move(x)); },
      [p](subscribe_atom a, std::string& id, caf::actor& who) {
        return p(a, std::move(id), std::move(who));
      },
      [p](subscribe_atom a, std::string& id, caf::actor& who, changed_atom c) {
        return p(a, std::move(id), std::move(who), c);
      },
      [p](unsubscribe_atom a, std::string& id, caf::actor& who) {
        return p(a, std::move(id), std::move(who));
      },
      [self, root](describe_atom a) {
        return forward_to(self, root, "node", a);
      },
    };
  });
}

} // namespace drover
