// Who the partitions are shared among (runtime/pg_share.hpp): the sharing
// coordinators heard from, and the keys their shares are computed over.

#include "runtime/pg_share.hpp"

#include "runtime/detail/pg_common.hpp"
#include "runtime/errors.hpp"

#include <algorithm>
#include <cerrno>
#include <map>
#include <signal.h>
#include <thread>
#include <tuple>

namespace drover::pg {

namespace {

/// A bigint column of a row read here (PostgreSQL's text; 0 if it is not
/// one, which no query here produces).
int64_t number(std::string_view str) {
  int64_t out = 0;
  return detail::parse_number(str, out) ? out : 0;
}

} // namespace

caf::expected<std::vector<sharing_member>>
sharing_members(session& db, std::chrono::milliseconds stale) {
  auto res = db.conn().exec_prepared(
      "drover_sharing_members",
      "SELECT instance, node_id, coalesce(share_key, ''), "
      "share_key IS NOT NULL, "
      "(extract(epoch FROM started_at) * 1000000)::bigint "
      "FROM drover.coordinators WHERE shares AND heartbeat_at >= now() - "
          + announced_ttl_sql("lease_ttl_ms", "$1")
          + " * interval '1 millisecond' ORDER BY instance COLLATE \"C\"",
      params{}.int64(stale.count()), false, "reading the coordinators");
  if (!res)
    return std::move(res.error());
  std::vector<sharing_member> out;
  for (int row = 0; row < res->rows(); ++row) {
    sharing_member m;
    m.instance = std::string{res->value(row, 0)};
    m.node_id = std::string{res->value(row, 1)};
    m.key = std::string{res->value(row, 2)};
    m.keyed = res->value(row, 3) == "t";
    m.started_us = number(res->value(row, 4));
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
    view.keys.push_back(all_keyed ? m.key : m.instance);
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
  auto key = all_keyed ? self->key : self->instance;
  auto at = std::lower_bound(view.keys.begin(), view.keys.end(), key);
  view.mine = static_cast<size_t>(at - view.keys.begin());
  return view;
}

caf::expected<std::string> other_lease_ttls(session& db, const lease_owner& me,
                                            std::chrono::milliseconds ttl) {
  auto res = db.conn().exec(
      "SELECT node_id, lease_ttl_ms FROM drover.coordinators WHERE shares "
      "AND instance <> $1 AND lease_ttl_ms IS NOT NULL AND lease_ttl_ms <> "
      "$2 AND heartbeat_at >= now() - "
          + announced_ttl_sql("lease_ttl_ms", "$2")
          + " * interval '1 millisecond' ORDER BY node_id COLLATE \"C\", "
            "instance COLLATE \"C\" LIMIT 16",
      params{}.text(me.instance).int64(ttl.count()), false,
      "reading the coordinators' lease TTLs");
  if (!res)
    return std::move(res.error());
  std::string out;
  for (int row = 0; row < res->rows(); ++row) {
    if (!out.empty())
      out += ", ";
    out += std::string{res->value(row, 0)} + "="
           + std::to_string(number(res->value(row, 1)));
  }
  return out;
}

caf::expected<std::optional<sharing_member>>
live_twin(session& db, const lease_owner& me, std::chrono::milliseconds ttl,
          std::chrono::milliseconds patience) {
  using clock = std::chrono::steady_clock;
  auto asked = clock::now();
  auto give_up = asked + patience;
  // Each instance's first heartbeat seen (server clock, microseconds).
  std::map<std::string, int64_t> first_seen;
  for (;;) {
    auto res = db.conn().exec(
        "SELECT instance, coalesce(process_space, ''), pid, "
        "(extract(epoch FROM heartbeat_at) * 1000000)::bigint, "
        "(extract(epoch FROM now() - heartbeat_at) * 1000)::bigint, "
        "(extract(epoch FROM started_at) * 1000000)::bigint, "
            // None announced: the least there is, under any patience.
            + announced_ttl_sql("lease_ttl_ms", "0")
            + " FROM drover.coordinators WHERE shares AND node_id = $1 AND "
              "instance <> $2 AND heartbeat_at >= now() - "
            + announced_ttl_sql("lease_ttl_ms", "$3")
            + " * interval '1 millisecond'",
        params{}.text(me.node_id).text(me.instance).int64(ttl.count()), false,
        "looking for another coordinator under this node id");
    if (!res)
      return std::move(res.error());
    bool waiting = false;
    for (int row = 0; row < res->rows(); ++row) {
      sharing_member m;
      m.instance = std::string{res->value(row, 0)};
      m.node_id = me.node_id;
      m.keyed = true;
      m.started_us = number(res->value(row, 5));
      auto pid = number(res->value(row, 2));
      if (!me.process_space.empty() && res->value(row, 1) == me.process_space
          && pid > 0 && pid != me.pid && ::kill(static_cast<pid_t>(pid), 0) != 0
          && errno == ESRCH)
        continue; // it ran where this one runs, and is gone
      auto beat = number(res->value(row, 3));
      auto [seen, fresh] = first_seen.emplace(m.instance, beat);
      if (!fresh && beat > seen->second)
        return std::optional<sharing_member>{std::move(m)}; // it beats
      // It renews more often than every half of its own TTL (checked at
      // its start): a twin that announced a longer TTL than ours is waited
      // for that long (one that announced none: `patience`).
      auto its_patience
          = std::max<int64_t>(patience.count(), number(res->value(row, 6)) / 2);
      give_up
          = std::max(give_up, asked + std::chrono::milliseconds{its_patience});
      if (number(res->value(row, 4)) < its_patience)
        waiting = true; // heard from lately: wait for its next beat
    }
    if (!waiting || clock::now() >= give_up)
      return std::optional<sharing_member>{};
    std::this_thread::sleep_for(std::chrono::milliseconds{100});
  }
}

} // namespace drover::pg
