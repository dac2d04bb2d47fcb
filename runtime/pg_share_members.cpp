// Who the partitions are shared among (runtime/pg_share.hpp): the sharing
// coordinators heard from, and the keys their shares are computed over.

#include "runtime/pg_share.hpp"

#include <algorithm>
#include <charconv>
#include <tuple>

namespace drover::pg {

caf::expected<std::vector<sharing_member>>
sharing_members(session& db, std::chrono::milliseconds stale) {
  auto res = db.conn().exec_prepared(
      "drover_sharing_members",
      "SELECT instance, node_id, share_key IS NOT NULL, "
      "(extract(epoch FROM started_at) * 1000000)::bigint "
      "FROM drover.coordinators WHERE shares AND "
      "heartbeat_at >= now() - $1 * interval '1 millisecond' "
      "ORDER BY instance COLLATE \"C\"",
      params{}.int64(stale.count()), false, "reading the coordinators");
  if (!res)
    return std::move(res.error());
  std::vector<sharing_member> out;
  for (int row = 0; row < res->rows(); ++row) {
    sharing_member m;
    m.instance = std::string{res->value(row, 0)};
    m.node_id = std::string{res->value(row, 1)};
    m.keyed = res->value(row, 2) == "t";
    auto started = res->value(row, 3);
    std::from_chars(started.data(), started.data() + started.size(),
                    m.started_us);
    out.push_back(std::move(m));
  }
  return out;
}

share_view share_keys(const std::vector<sharing_member>& members,
                      const lease_owner& me) {
  share_view view;
  const sharing_member* self = nullptr;
  for (const auto& m : members)
    if (m.instance == me.instance)
      self = &m;
  bool all_keyed = std::all_of(members.begin(), members.end(),
                               [](const auto& m) { return m.keyed; });
  for (const auto& m : members)
    view.keys.push_back(all_keyed ? m.node_id : m.instance);
  std::sort(view.keys.begin(), view.keys.end());
  view.keys.erase(std::unique(view.keys.begin(), view.keys.end()),
                  view.keys.end());
  if (self == nullptr)
    return view;
  for (const auto& m : members) {
    if (m.node_id != self->node_id || m.instance == self->instance)
      continue;
    if (std::tie(m.started_us, m.instance)
            > std::tie(self->started_us, self->instance)
        && (!view.newer_twin
            || std::tie(m.started_us, m.instance) > std::tie(
                   view.newer_twin->started_us, view.newer_twin->instance)))
      view.newer_twin = m;
  }
  auto key = all_keyed ? self->node_id : self->instance;
  auto at = std::lower_bound(view.keys.begin(), view.keys.end(), key);
  view.mine = static_cast<size_t>(at - view.keys.begin());
  return view;
}

} // namespace drover::pg
