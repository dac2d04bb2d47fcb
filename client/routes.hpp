#pragma once

// Which of a client's addresses owns which partition (docs/cluster.md,
// "Several active coordinators"): coordinators that share a database each
// own some partitions, and a write about a job (cancel, retry, purge) or a
// keyed submission must reach its partition's owner. The client asks every
// address for the partitions it owns ((client_atom, key, partitions_atom)
// on the client door), keeps the answers here, and asks again after a
// `not_owner` answer. Not thread-safe: the client guards it.

#include "runtime/client_protocol.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace drover::client_detail {

/// What a request is about: a job (its id) or a keyed submission.
struct route_target {
  std::string job_id;
  std::string key;
  /// A submission's concurrency key: it places the job (runtime/partition).
  std::string concurrency_key;
  /// The submission's own tenant (used when the key does not fix one).
  std::string tenant;
  bool about_anything() const {
    return job_id.empty() && key.empty() && concurrency_key.empty();
  }
};

class routes {
public:
  /// Forgets the map: the next routed request loads it again.
  void forget() {
    loaded_ = false;
  }
  bool loaded() const {
    return loaded_;
  }

  /// A new map from each address's answer (nullopt: it did not answer):
  /// its owned partitions as "0,5,17", the database's partition count and
  /// the tenant its API key fixes ("" = the request's own). Answers that
  /// disagree on the count, or lists that do not parse, are ignored.
  struct answer {
    std::string owned;
    int32_t count = 0;
    std::string tenant;
  };
  void load(const std::vector<std::optional<answer>>& answers);

  /// The address owning `t`'s partition, or nullopt (not about a
  /// partition, map not loaded, owner not known).
  std::optional<size_t> owner_of(const route_target& t) const;

  int32_t count() const {
    return count_;
  }

  /// Partitions no answer claimed (all of them before a load).
  int32_t unowned() const {
    return loaded_ ? static_cast<int32_t>(
               std::count(owner_.begin(), owner_.end(), -1))
                   : count_;
  }

private:
  bool loaded_ = false;
  int32_t count_ = 0;
  std::string tenant_;
  /// Address index per partition; -1 = nobody answered for it.
  std::vector<int32_t> owner_;
};

/// Asks `door` which partitions it owns (the client door's partitions
/// request) within `timeout`: the one request both the client and
/// droverctl --nodes read the map with.
caf::expected<routes::answer> ask_map(caf::actor_system& sys,
                                      const client_door_actor& door,
                                      const std::string& api_key,
                                      std::chrono::milliseconds timeout);

} // namespace drover::client_detail
