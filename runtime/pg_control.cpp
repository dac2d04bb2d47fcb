// The control log of rate limiters and circuit breakers (runtime/pg.hpp,
// session::append_control; schema version 6).

#include "runtime/detail/pg_common.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg.hpp"

#include <string>

namespace drover::pg {

namespace {

/// An answer's values, row by row.
std::vector<std::string> flattened(const result& res) {
  std::vector<std::string> out;
  for (int row = 0; row < res.rows(); ++row)
    for (int col = 0; col < res.columns(); ++col)
      out.emplace_back(res.value(row, col));
  return out;
}

/// An entry's time in Unix ms; 0 for one PostgreSQL cannot turn into ms
/// (infinity, written by hand).
const std::string at_ms_sql = "CASE WHEN isfinite(at) THEN (extract(epoch "
                              "FROM at) * 1000)::bigint ELSE 0 END";

} // namespace

caf::error session::append_control(int64_t at_ms, const std::string& kind,
                                   const std::string& key,
                                   const std::string& state,
                                   const std::string& detail) {
  if (kind != "rate_limit" && kind != "breaker")
    return make_error(errc::invalid_request,
                      "control log: kind must be rate_limit or breaker");
  if (key.empty() || key.size() > 1024 || state.empty() || state.size() > 64)
    return make_error(errc::invalid_request,
                      "control log: key or state out of bounds");
  // P is fixed for the database's life: read once per write (changes are
  // rare: a breaker opening, a coordinator starting).
  auto count = conn_.exec("SELECT partitions FROM drover.partitioning", {},
                          false, "reading the partition count");
  if (!count)
    return std::move(count.error());
  int64_t p_count = 0;
  if (count->rows() == 1) {
    auto text = std::string{count->value(0, 0)};
    if (!text.empty() && text.size() <= 4
        && text.find_first_not_of("0123456789") == std::string::npos)
      p_count = std::stoll(text);
  }
  if (p_count < 1 || p_count > max_partitions)
    return make_error(errc::malformed, "unreadable partition count");
  auto partition = partition_of_key(kind, key, static_cast<int32_t>(p_count));
  // A setting is written by the key's partition's owner alone (one order
  // per key). A state change is the writer's own (each coordinator sharing
  // the partitions keeps its limiters and breakers): one of a key whose
  // partition is elsewhere is fenced by a partition the writer holds.
  if (fence_ && state != "configured" && fence_->epoch_of(partition) < 0
      && !fence_->partitions.empty())
    partition = fence_->partitions.front();
  if (auto err = begin_write({partition}, "recording a flow-control change"))
    return err;
  auto fail = [this](caf::error err) {
    rollback_quietly();
    return err;
  };
  int64_t epoch = 0;
  std::string owner_node;
  if (fence_) {
    epoch = fence_->epoch_of(partition);
    if (epoch < 0)
      return fail(make_error(errc::not_owner, "partition "
                                                  + std::to_string(partition)
                                                  + " is not held"));
  }
  auto res = conn_.exec(
      "INSERT INTO drover.control_log (at, kind, key, state, detail, "
      "partition, epoch, owner_node) VALUES (to_timestamp($1::bigint / "
      "1000.0), $2, $3, $4, $5, $6, $7, coalesce((SELECT owner_node FROM "
      "drover.partition_leases WHERE partition = $6), ''))",
      params{}
          .int64(at_ms)
          .text(kind)
          .text(key)
          .text(state)
          .text(valid_utf8(detail.substr(0, 4000)))
          .int32(partition)
          .int64(epoch),
      false, "recording a flow-control change");
  if (!res)
    return fail(std::move(res.error()));
  if (auto done
      = conn_.exec("COMMIT", {}, false, "committing a flow-control change");
      !done)
    return fail(std::move(done.error()));
  return caf::none;
}

caf::expected<std::vector<std::string>>
session::control_last(const std::string& kind) {
  // A time PostgreSQL cannot turn into ms (infinity, written by hand) reads
  // as 0: a read failing every time would keep the coordinator from ever
  // recovering its jobs.
  auto res = conn_.exec(
      "SELECT DISTINCT ON (key, state = 'configured') key, state, " + at_ms_sql
          + ", detail FROM drover.control_log WHERE kind = $1 ORDER BY "
            "key, state = 'configured', sequence DESC",
      params{}.text(kind), false, "reading the control log's last states");
  if (!res)
    return std::move(res.error());
  return flattened(*res);
}

caf::expected<std::vector<std::string>>
session::control_followed(int64_t after, uint32_t limit) {
  if (limit == 0 || limit > 10000)
    return make_error(errc::invalid_request,
                      "control log: limit must be within [1, 10000]");
  // A time PostgreSQL cannot turn into ms (infinity, written by hand) reads
  // as 0: an opening long over, not a read failing at every poll.
  auto res = conn_.exec(
      "SELECT sequence, kind, key, state, " + at_ms_sql
          + ", detail FROM drover.control_log WHERE sequence > $1 AND (state = "
            "'configured' OR (kind = 'breaker' AND state = 'open')) ORDER BY "
            "sequence LIMIT $2",
      params{}.int64(after).int32(static_cast<int32_t>(limit)), false,
      "reading the control log's settings and breaker openings");
  if (!res)
    return std::move(res.error());
  return flattened(*res);
}

caf::expected<std::vector<std::string>> session::control_settings() {
  auto res = conn_.exec(
      "SELECT DISTINCT ON (kind, key) sequence, kind, key, state, " + at_ms_sql
          + ", detail FROM drover.control_log WHERE state = 'configured' "
            "ORDER BY kind, key, sequence DESC",
      {}, false, "reading the control log's settings");
  if (!res)
    return std::move(res.error());
  return flattened(*res);
}

caf::expected<int64_t> session::control_sequence() {
  auto res = conn_.exec("SELECT coalesce(max(sequence), 0) FROM "
                        "drover.control_log",
                        {}, false, "reading the control log's last sequence");
  if (!res)
    return std::move(res.error());
  int64_t last = 0;
  if (!detail::parse_number(res->value(0, 0), last))
    return make_error(errc::malformed, "unreadable control-log sequence");
  return last;
}

caf::expected<std::string> session::control_json(uint32_t limit) {
  if (limit == 0 || limit > 1000)
    return make_error(errc::invalid_request,
                      "control log: limit must be within [1, 1000]");
  // Built by PostgreSQL: json_build_object escapes.
  auto res = conn_.exec(
      "SELECT coalesce(json_agg(json_build_object('sequence', sequence, "
      "'at', to_char(at AT TIME ZONE 'UTC', "
      "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), 'kind', kind, 'key', key, "
      "'state', state, 'detail', detail, 'partition', partition, 'epoch', "
      "epoch, 'node', owner_node) ORDER BY sequence DESC), '[]')::text FROM "
      "(SELECT * FROM drover.control_log ORDER BY sequence DESC LIMIT $1) c",
      params{}.int32(static_cast<int32_t>(limit)), false,
      "reading the control log");
  if (!res)
    return std::move(res.error());
  return std::string{res->value(0, 0)};
}

} // namespace drover::pg
