#include "client/routes.hpp"

#include "runtime/partition.hpp"
#include "runtime/partition_map.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

namespace drover::client_detail {

void routes::load(const std::vector<std::optional<answer>>& answers) {
  int32_t count = 0;
  std::string tenant;
  for (const auto& a : answers)
    if (a && a->count >= 1 && a->count <= max_partitions) {
      if (count == 0) {
        count = a->count;
        tenant = a->tenant;
      } else if (a->count != count) {
        return; // two databases? keep the old map
      }
    }
  if (count == 0)
    return;
  std::vector<int32_t> owner(static_cast<size_t>(count), -1);
  for (size_t i = 0; i < answers.size(); ++i) {
    if (!answers[i] || answers[i]->count != count
        || answers[i]->owned.size() > 6 * static_cast<size_t>(count))
      continue;
    auto list = parse_partition_list(answers[i]->owned, count);
    if (!list)
      continue;
    for (auto p : *list)
      owner[static_cast<size_t>(p)] = static_cast<int32_t>(i);
  }
  count_ = count;
  tenant_ = std::move(tenant);
  owner_ = std::move(owner);
  loaded_ = true;
}

std::optional<size_t> routes::owner_of(const route_target& t) const {
  if (!loaded_ || count_ < 1 || t.about_anything())
    return std::nullopt;
  int32_t p = -1;
  if (!t.job_id.empty()) {
    p = partition_of_id(t.job_id);
  } else {
    p = partition_of_submission(tenant_.empty() ? t.tenant : tenant_, t.key,
                                t.concurrency_key, count_);
  }
  if (p < 0 || p >= count_ || owner_[static_cast<size_t>(p)] < 0)
    return std::nullopt;
  return static_cast<size_t>(owner_[static_cast<size_t>(p)]);
}

caf::expected<routes::answer> ask_map(caf::actor_system& sys,
                                      const client_door_actor& door,
                                      const std::string& api_key,
                                      std::chrono::milliseconds timeout) {
  caf::expected<routes::answer> out{caf::error{}};
  caf::scoped_actor self{sys};
  self->request(door, timeout, client_atom::value, api_key,
                partitions_atom::value)
      .receive(
          [&](std::string& owned, int32_t count, std::string& tenant) {
            out = routes::answer{std::move(owned), count, std::move(tenant)};
          },
          [&](caf::error& err) { out = std::move(err); });
  return out;
}

} // namespace drover::client_detail
