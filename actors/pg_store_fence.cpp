// The PostgreSQL store's partitions changes: the fence it writes under
// follows partitions_atom in mailbox order, through a gate that holds later
// writes while appends received before a change are still being accepted.
// See actors/detail/pg_store_state.hpp.

#include "actors/detail/pg_store_state.hpp"

namespace drover::pg_store_detail {

/// Runs `write` now or, while a partitions change waits for appends
/// received before it (the gate is closed), after that change: every write
/// is accepted under the fence of the moment it was received.
void admit(self_ptr self, std::function<void()> write) {
  auto& st = self->state;
  if (st.gate_closed)
    st.held.push_back(std::move(write));
  else
    write();
}

/// An append received earlier has been accepted or refused.
void append_settled(self_ptr self) {
  auto& st = self->state;
  --st.unaccepted;
  // Reopened from the mailbox, not from inside the load that got here.
  if (st.gate_closed && st.unaccepted == 0)
    self->send(self, reopen_atom::value);
}

/// The appends the waiting change waited for are settled: applies it, then
/// what was held behind it, in order, until a held change must wait again.
void reopen(self_ptr self) {
  auto& st = self->state;
  if (!st.gate_closed || st.unaccepted > 0)
    return;
  st.gate_closed = false;
  auto change = std::move(st.waiting_change);
  st.waiting_change = nullptr;
  change();
  while (!st.gate_closed && !st.held.empty()) {
    auto next = std::move(st.held.front());
    st.held.pop_front();
    next();
  }
}

/// partitions_atom's arguments: as many epochs as partitions, partitions
/// strictly ascending within [0, max_partitions), epochs not negative.
caf::error check_partition_set(const std::vector<int32_t>& partitions,
                               const std::vector<int64_t>& epochs) {
  if (partitions.size() != epochs.size())
    return make_error(errc::invalid_request,
                      "partitions and epochs must be of the same length");
  for (size_t i = 0; i < partitions.size(); ++i) {
    if (partitions[i] < 0 || partitions[i] >= max_partitions)
      return make_error(errc::invalid_request,
                        "partition " + std::to_string(partitions[i])
                            + " is outside [0, "
                            + std::to_string(max_partitions) + ")");
    if (i > 0 && partitions[i] <= partitions[i - 1])
      return make_error(errc::invalid_request,
                        "partitions must be strictly ascending");
    if (epochs[i] < 0)
      return make_error(errc::invalid_request,
                        "epoch " + std::to_string(epochs[i]) + " of partition "
                            + std::to_string(partitions[i]) + " is negative");
  }
  return caf::none;
}

/// Drops the cached records (and idempotency keys) of jobs in partitions
/// the store no longer writes: their next reader reads PostgreSQL. Batches
/// in flight or sealed hold their own copies (frozen snapshots).
void evict_unowned(self_ptr self) {
  auto& st = self->state;
  for (auto i = st.cache.begin(); i != st.cache.end();) {
    if (owns_job(st, i->first)) {
      ++i;
      continue;
    }
    const auto& spec = i->second.spec;
    if (!spec.idempotency_key.empty())
      st.keys.erase({spec.tenant, spec.idempotency_key});
    i = st.cache.erase(i);
  }
}

/// Makes `partitions` at `epochs` the store's fence, answering `rp` once
/// every write accepted under the previous fences has committed or failed.
/// Waits first for the appends received before it (the gate).
void change_partitions(self_ptr self, std::vector<int32_t> partitions,
                       std::vector<int64_t> epochs,
                       caf::typed_response_promise<ok_atom> rp) {
  auto& st = self->state;
  if (st.unaccepted > 0) {
    st.gate_closed = true;
    st.waiting_change = [self, partitions, epochs, rp]() mutable {
      change_partitions(self, std::move(partitions), std::move(epochs), rp);
    };
    return;
  }
  // What was accepted until now leaves under the old fence, as one sealed
  // batch that goes before anything accepted from now on.
  if (!st.pending.empty()) {
    st.pending.frozen = snapshot(self, st.pending);
    st.sealed.push_back(std::move(st.pending));
  }
  auto next = std::make_shared<pg::write_fence>(*st.fence);
  next->partitions = std::move(partitions);
  next->epochs = std::move(epochs);
  st.fence = std::move(next);
  ++st.fence_seq;
  open_pending(st);
  evict_unowned(self);
  st.changes.push_back({st.fence_seq, std::move(rp)});
  log("now writing " + std::to_string(st.fence->partitions.size())
          + " partitions",
      log::level::info);
  flush(self);
}

} // namespace drover::pg_store_detail
