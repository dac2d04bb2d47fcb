// The write fence of a session (runtime/pg.hpp, write_fence; decision
// 0006): every write transaction first proves that this process still owns
// the partitions it writes, at the epochs it was granted, by PostgreSQL's
// clock, and locks their lease rows FOR SHARE so that no takeover commits
// before it does.

#include "runtime/detail/pg_fence.hpp"
#include "runtime/errors.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace drover::pg {

int64_t write_fence::epoch_of(int32_t partition) const {
  auto i = std::lower_bound(partitions.begin(), partitions.end(), partition);
  if (i == partitions.end() || *i != partition)
    return -1;
  return epochs[static_cast<size_t>(i - partitions.begin())];
}

std::vector<int32_t> partitions_of(const write_batch& batch) {
  std::vector<int32_t> out;
  auto add = [&out](const std::string& job_id) {
    out.push_back(partition_of_id(job_id));
  };
  for (const auto& rec : batch.submits)
    add(rec.job_id);
  for (const auto& rec : batch.updates)
    add(rec.job_id);
  for (const auto& ev : batch.events)
    add(ev.job_id);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

caf::error session::begin_write(const std::vector<int32_t>& touched,
                                const char* what) {
  stale_partitions_.clear();
  if (auto err = rollback_quietly())
    return err;
  if (auto err = apply_fence_settings())
    return err;
  if (auto res = conn_.exec("BEGIN", {}, false, what); !res)
    return std::move(res.error());
  if (auto err = check_partitions(touched)) {
    rollback_quietly();
    return err;
  }
  return {};
}

caf::error session::apply_fence_settings() {
  if (!fence_ || fence_applied_)
    return caf::none;
  if (fence_->idle_limit_ms > 0) {
    auto res = conn_.exec(
        "SELECT set_config('idle_in_transaction_session_timeout', $1, false)",
        params{}.text(std::to_string(fence_->idle_limit_ms)), false,
        "limiting the fenced session's idle transactions");
    if (!res)
      return std::move(res.error());
  }
  fence_applied_ = true;
  return caf::none;
}

caf::error session::check_partitions(const std::vector<int32_t>& touched) {
  if (!fence_ || touched.empty())
    return caf::none;
  const auto& f = *fence_;
  array_param parts{array_param::element::int4, touched.size()};
  array_param epochs{array_param::element::int8, touched.size()};
  for (auto p : touched) {
    parts.int32(p);
    epochs.int64(f.epoch_of(p));
  }
  // The rows of exactly the partitions written, locked FOR SHARE in
  // partition order: a takeover of one of them (an UPDATE of its row) waits
  // until this transaction ends, so no write of ours lands after a
  // successor's epoch; if a takeover committed while we waited for a lock,
  // READ COMMITTED re-reads the row in its new version and the comparison
  // fails. Writers share the locks and never wait for each other.
  auto res = conn_.exec_prepared(
      "drover_check_partitions",
      "SELECT l.partition, coalesce(l.owner = $1 AND l.epoch = h.epoch, "
      "false), l.expires_at > now(), l.epoch, coalesce(l.owner_node, '') "
      "FROM drover.partition_leases AS l "
      "JOIN unnest($2::int4[], $3::int8[]) AS h(partition, epoch) "
      "ON l.partition = h.partition ORDER BY l.partition FOR SHARE OF l",
      params{}.text(f.instance).array(parts).array(epochs), false,
      "checking the partition leases");
  if (!res)
    return std::move(res.error());
  std::string why;
  std::vector<int32_t> found;
  bool expired = false;
  for (int row = 0; row < res->rows(); ++row) {
    auto p = std::stoi(std::string{res->value(row, 0)});
    found.push_back(p);
    if (res->value(row, 1) != "t") {
      stale_partitions_.push_back(p);
      if (why.empty())
        why = f.epoch_of(p) < 0
                  ? "partition " + std::to_string(p)
                        + " is not owned by this coordinator (node '"
                        + std::string{res->value(row, 4)} + "')"
                  : "partition " + std::to_string(p) + " was taken over (epoch "
                        + std::string{res->value(row, 3)} + ", node '"
                        + std::string{res->value(row, 4)} + "')";
      continue;
    }
    expired = expired || res->value(row, 2) != "t";
  }
  // `found` is ascending (ORDER BY partition).
  for (auto p : touched)
    if (!std::binary_search(found.begin(), found.end(), p)) {
      stale_partitions_.push_back(p);
      if (why.empty())
        why = "partition " + std::to_string(p) + " does not exist";
    }
  if (!stale_partitions_.empty()) {
    std::sort(stale_partitions_.begin(), stale_partitions_.end());
    if (stale_partitions_.size() > 1)
      why += " (" + std::to_string(stale_partitions_.size())
             + " partitions of the write are not ours)";
    return make_error(errc::not_owner, why);
  }
  if (expired)
    return make_error(errc::unavailable,
                      std::string{detail::expired_lease_marker}
                          + " before its renewal; writes wait for it");
  return caf::none;
}

} // namespace drover::pg
