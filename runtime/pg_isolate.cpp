// session::write_isolated: group commit that survives data errors. One
// operation whose data PostgreSQL refuses (text that is not UTF-8, a value
// out of range, a key too long for its index) rolls back the transaction it
// shares with everybody else's; this file finds the refused operations by
// bisection and commits the rest. See runtime/pg.hpp for the contract.

#include "runtime/pg.hpp"

#include "runtime/errors.hpp"
#include "runtime/partition.hpp"

#include <algorithm>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

namespace drover::pg {

namespace {

/// The batch's jobs grouped into units: a job with everything the batch
/// writes for it; jobs linked by one operation form one unit. Units are in
/// order of first appearance.
std::vector<std::vector<std::string>> units_of(const write_batch& batch) {
  // Union-find over job ids.
  std::unordered_map<std::string, size_t> index;
  std::vector<size_t> parent;
  std::vector<std::string> ids;
  auto id_of = [&](const std::string& job) {
    auto [i, fresh] = index.emplace(job, ids.size());
    if (fresh) {
      parent.push_back(ids.size());
      ids.push_back(job);
    }
    return i->second;
  };
  std::function<size_t(size_t)> root = [&](size_t x) {
    while (parent[x] != x)
      x = parent[x] = parent[parent[x]];
    return x;
  };
  for (const auto& rec : batch.submits)
    id_of(rec.job_id);
  for (const auto& rec : batch.updates)
    id_of(rec.job_id);
  for (const auto& ev : batch.events)
    id_of(ev.job_id);
  for (const auto& group : batch.linked) {
    if (group.empty())
      continue;
    auto first = root(id_of(group.front()));
    for (const auto& job : group) {
      auto r = root(id_of(job));
      if (r != first)
        parent[r] = first;
    }
  }
  std::unordered_map<size_t, size_t> unit_of_root;
  std::vector<std::vector<std::string>> units;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto [u, fresh] = unit_of_root.emplace(root(i), units.size());
    if (fresh)
      units.emplace_back();
    units[u->second].push_back(ids[i]);
  }
  return units;
}

/// What `batch` writes for the jobs of `units[i]`, i in `which`, in the
/// batch's order.
write_batch part_of(const write_batch& batch,
                    const std::vector<std::vector<std::string>>& units,
                    const std::vector<size_t>& which) {
  std::unordered_set<std::string_view> jobs;
  for (auto u : which)
    for (const auto& job : units[u])
      jobs.insert(job);
  write_batch part;
  for (const auto& rec : batch.submits)
    if (jobs.count(rec.job_id) > 0)
      part.submits.push_back(rec);
  for (const auto& ev : batch.events)
    if (jobs.count(ev.job_id) > 0)
      part.events.push_back(ev);
  for (const auto& rec : batch.updates)
    if (jobs.count(rec.job_id) > 0)
      part.updates.push_back(rec);
  return part;
}

} // namespace

caf::expected<isolated_write_result>
session::write_isolated(const write_batch& batch) {
  isolated_write_result out;
  out.transactions = 1;
  auto whole = write(batch);
  if (whole) {
    out.committed = std::move(*whole);
    return out;
  }
  bool stale
      = is(whole.error(), errc::not_owner) && !stale_partitions().empty();
  if (!stale && failure_class_of(whole.error()) != failure_class::data)
    return std::move(whole.error());
  auto units = units_of(batch);
  std::vector<size_t> all(units.size());
  for (size_t i = 0; i < all.size(); ++i)
    all[i] = i;
  // Partitions that are not ours (any more): their units are refused with
  // not_owner, the rest is written again. Each round drops at least one
  // partition, so this ends.
  while (!whole && is(whole.error(), errc::not_owner)
         && !stale_partitions().empty()) {
    auto stale = stale_partitions();
    std::vector<size_t> rest;
    for (auto u : all) {
      bool ours = std::none_of(
          units[u].begin(), units[u].end(), [&stale](const std::string& job) {
            return std::binary_search(stale.begin(), stale.end(),
                                      partition_of_id(job));
          });
      if (ours)
        rest.push_back(u);
      else
        for (const auto& job : units[u])
          out.failed.emplace_back(job, whole.error());
    }
    if (rest.size() == all.size())
      break; // no unit of ours is in a stale partition: fails whole below
    all = std::move(rest);
    if (all.empty())
      return out;
    ++out.transactions;
    whole = write(part_of(batch, units, all));
    if (whole) {
      out.committed = std::move(*whole);
      return out;
    }
  }
  if (failure_class_of(whole.error()) != failure_class::data) {
    if (out.failed.empty())
      return std::move(whole.error());
    // Some units were refused as not ours; the rest failed as a whole.
    for (auto u : all)
      for (const auto& job : units[u])
        out.failed.emplace_back(job, whole.error());
    return out;
  }
  // Facts only: a set of units is "known bad" when a transaction holding
  // exactly them failed with a data error, so a known-bad single unit is
  // refused without another transaction and no innocent unit is ever
  // refused, however many offenders the batch holds. Halves whose fate is
  // unknown (the other half of a failed try) are written together at the
  // end. One offender among n units: one try per halving (ceil(log2(n)))
  // plus, at most, the final write of the unknown halves.
  caf::error stopped; // a connection- or other-class failure: give up
  std::vector<size_t> unknown;
  auto fail_all = [&](const std::vector<size_t>& which, const caf::error& err) {
    for (auto u : which)
      for (const auto& job : units[u])
        out.failed.emplace_back(job, err);
  };
  auto try_write
      = [&](const std::vector<size_t>& which) -> caf::expected<write_result> {
    ++out.transactions;
    return write(part_of(batch, units, which));
  };
  auto commit = [&](write_result& r) {
    auto& dups = out.committed.duplicate_submits;
    dups.insert(dups.end(), r.duplicate_submits.begin(),
                r.duplicate_submits.end());
  };
  std::function<void(std::vector<size_t>, caf::error)> isolate =
      [&](std::vector<size_t> bad, caf::error why) {
        while (!stopped) {
          if (bad.size() == 1) {
            fail_all(bad, why);
            return;
          }
          auto mid = bad.begin() + static_cast<std::ptrdiff_t>(bad.size() / 2);
          std::vector<size_t> left(bad.begin(), mid);
          std::vector<size_t> right(mid, bad.end());
          auto r = try_write(left);
          if (r) {
            commit(*r);
            bad = std::move(right);
          } else if (failure_class_of(r.error()) == failure_class::data) {
            unknown.insert(unknown.end(), right.begin(), right.end());
            bad = std::move(left);
            why = std::move(r.error());
          } else {
            stopped = std::move(r.error());
            fail_all(left, stopped);
            fail_all(right, stopped);
            return;
          }
        }
        fail_all(bad, stopped);
      };
  isolate(std::move(all), std::move(whole.error()));
  while (!unknown.empty()) {
    auto rest = std::move(unknown);
    unknown.clear();
    if (stopped) {
      fail_all(rest, stopped);
      break;
    }
    auto r = try_write(rest);
    if (r)
      commit(*r);
    else if (failure_class_of(r.error()) == failure_class::data)
      isolate(std::move(rest), std::move(r.error()));
    else {
      stopped = std::move(r.error());
      fail_all(rest, stopped);
    }
  }
  return out;
}

} // namespace drover::pg
