#include "nodes/node_share.hpp"

#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <caf/scoped_actor.hpp>

namespace drover::node {

namespace {

/// Asks the store, then the queue (`store_first`) or the other way round,
/// to own `held`; false (logged) if either did not answer ok.
bool tell(caf::actor_system& sys, const job_system_handles& handles,
          const pg::lease_grant& held, bool store_first,
          std::chrono::milliseconds timeout, const char* what) {
  caf::scoped_actor self{sys};
  caf::error failed;
  auto ask_store = [&] {
    auto store = handles.store();
    if (!store) {
      failed = make_error(errc::unavailable, "the store is not running");
      return;
    }
    self->request(store, timeout, partitions_atom::value, held.partitions,
                  held.epochs)
        .receive([](ok_atom) {}, [&](caf::error& err) { failed = err; });
  };
  auto ask_queue = [&] {
    auto queue = handles.queue();
    if (!queue) {
      failed = make_error(errc::unavailable, "the queue is not running");
      return;
    }
    self->request(queue, timeout, partitions_atom::value, held.partitions)
        .receive([](ok_atom) {}, [&](caf::error& err) { failed = err; });
  };
  if (store_first) {
    ask_store();
    if (!failed)
      ask_queue();
  } else {
    ask_queue();
    if (!failed)
      ask_store();
  }
  if (failed)
    log::warn("node", what, {{"error", describe(failed)}});
  return !failed;
}

} // namespace

pg::share_keeper::hooks share_hooks(caf::actor_system& sys,
                                    std::shared_ptr<job_system_handles> handles,
                                    std::chrono::milliseconds timeout,
                                    std::shared_ptr<partition_epochs> epochs,
                                    std::function<void()> taken) {
  pg::share_keeper::hooks h;
  h.acquired
      = [&sys, handles, timeout, epochs, taken](
            const pg::lease_grant& held, const std::vector<int32_t>& added) {
          // Before the queue dispatches any of them.
          epochs->hold(held.partitions, held.epochs);
          auto ok = tell(sys, *handles, held, true, timeout,
                         "taking partitions into the job system failed");
          if (ok && !added.empty())
            taken();
          return ok;
        };
  h.releasing = [&sys, handles, timeout](const pg::lease_grant& held,
                                         const std::vector<int32_t>&) {
    return tell(sys, *handles, held, false, timeout,
                "handing partitions over failed (kept; tried again)");
  };
  return h;
}

} // namespace drover::node
