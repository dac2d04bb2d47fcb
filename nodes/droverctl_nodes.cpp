#include "nodes/droverctl_nodes.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <iostream>
#include <optional>

namespace drover::ctl {

door_set connect_all(caf::actor_system& sys,
                     const std::vector<coordinator_address>& addresses,
                     std::chrono::milliseconds timeout) {
  door_set out;
  for (const auto& a : addresses) {
    auto d = connect_client_door(sys, a.host, a.port, timeout);
    if (d)
      out.doors.push_back(*d);
    else
      out.failures += (out.failures.empty() ? "" : "; ") + a.text() + ": "
                      + describe(d.error());
  }
  return out;
}

client_detail::routes read_routes(caf::actor_system& sys, const door_set& set,
                                  const std::string& api_key,
                                  std::chrono::milliseconds timeout) {
  std::vector<std::optional<client_detail::routes::answer>> answers(
      set.doors.size());
  caf::scoped_actor self{sys};
  for (size_t i = 0; i < set.doors.size(); ++i)
    self->request(set.doors[i], timeout, client_atom::value, api_key,
                  partitions_atom::value)
        .receive(
            [&](std::string& owned, int32_t count, std::string& tenant) {
              answers[i] = client_detail::routes::answer{
                  std::move(owned), count, std::move(tenant)};
            },
            [&](caf::error& err) {
              std::cerr << "droverctl: no partition map from node " << i + 1
                        << ": " << describe(err) << '\n';
            });
  client_detail::routes map;
  map.load(answers);
  return map;
}

client_door_actor pick_door(caf::actor_system& sys, const door_set& set,
                            const client_detail::route_target& t,
                            const std::string& api_key,
                            std::chrono::milliseconds timeout) {
  if (set.doors.size() < 2 || t.about_anything())
    return set.doors.front();
  auto owner = read_routes(sys, set, api_key, timeout).owner_of(t);
  return owner ? set.doors[*owner] : set.doors.front();
}

} // namespace drover::ctl
