#pragma once

// Routing by resources (issue 15 item 5, docs/jobs.md "Resources").
//
// A worker has two kinds of capacity:
//   - slots per resource class (--slots cpu=8,gpu=1): how many attempts of
//     each class run at once. A job occupies one slot of its class, the
//     first resource it names (default: its type's class, else cpu);
//   - resource pools (--resources memory_gb=64,scratch_gb=500): amounts
//     that attempts draw from while they run. A pool's name is never also
//     a slot class of the same node.
// A job's other resources (after the first) are drawn from the pools of
// the worker node that runs it: it is leased only to a node with a free
// slot of its class and all of those amounts free. The coordinator's queue
// keeps the books (resource_ledger): what each connected node declares and
// what the attempts it leased there hold, from the lease until the outcome
// is recorded or the attempt is given up.
//
// Order: on each node, the oldest ready job that could ever fit there
// reserves what it lacks: younger jobs drawing from a pool it lacks do not
// start there until it has run (no starvation of large jobs); jobs that
// need none of those pools still start (backfill).
//
// Text form of a set of amounts: "name=amount,..." sorted by name, no
// spaces ("memory_gb=16,scratch_gb=20"); "" = none.

#include "runtime/errors.hpp"

#include <caf/expected.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace drover {

struct resource_request;

/// Bounds of what a job or a node may declare.
constexpr uint32_t max_resource_amount = 1'000'000;
constexpr size_t max_resources = 16;
/// Distinct pool needs among the jobs a queue holds: each is a lane the
/// dispatcher looks at, so a client inventing amounts cannot make every
/// dispatch walk millions of them.
constexpr size_t max_live_shapes = 1024;

/// A set of amounts, sorted by name, names unique.
using resource_amounts = std::vector<std::pair<std::string, uint32_t>>;

/// A job's pool needs, shared by every queue entry of jobs that need the
/// same (null = none).
struct resource_shape {
  /// Canonical text form.
  std::string key;
  resource_amounts needs;
};
using shape_ref = std::shared_ptr<const resource_shape>;

/// True for 1 to 64 letters, digits, '-' and '_' (class and pool names).
bool valid_resource_name(const std::string& name);

/// Canonical text form of `amounts` (sorted by the caller).
std::string to_text(const resource_amounts& amounts);

/// Parses "name=amount,..." (hostile input: names checked, amounts within
/// [1, max_resource_amount], at most max_resources, no name twice). The
/// result is sorted. `what` names the input in errors, of code `code`
/// (an errc).
caf::expected<resource_amounts>
parse_amounts(const std::string& text, const std::string& what, errc code);

/// A job's resources as a client writes them, "class=1,pool=amount,..."
/// in order (the first is the slot class): checked as parse_amounts does.
caf::expected<std::vector<resource_request>>
parse_requests(const std::string& text);

/// `list` as a set of amounts (hostile input, checked as parse_amounts
/// does, errc::invalid_request).
caf::expected<resource_amounts>
amounts_of(const std::vector<resource_request>& list, const std::string& what);

/// As a list of requests (the wire form), sorted by name.
std::vector<resource_request> requests_of(const resource_amounts& amounts);

/// The pool needs of a job's resources (every entry after the first),
/// sorted; errors name the offending entry (names, amounts, duplicates).
caf::expected<resource_amounts>
pool_needs(const std::vector<resource_request>& resources);

/// The books of one queue: nodes' pools and what leased attempts hold.
/// Nodes are named by node id; "" is the coordinator's own workers. Not
/// thread-safe (one queue actor).
class resource_ledger {
public:
  /// The shared shape of `needs` (null when empty).
  shape_ref shape_of(const resource_amounts& needs);

  /// Whether a job needing `needs` may enter: nothing needed, its shape
  /// is held already, or fewer than max_live_shapes are.
  bool admits(const resource_amounts& needs);

  /// A node's pools as it declares them (replaces what it declared before;
  /// amounts held by its attempts stay held).
  void declare(const std::string& node, resource_amounts pools);

  /// Whether `shape` fits the node's free amounts now / its totals ever.
  bool fits_now(const std::string& node, const shape_ref& shape) const;
  bool fits_ever(const std::string& node, const shape_ref& shape) const;

  /// The names of `shape`'s needs that the node lacks now.
  std::vector<std::string> short_of(const std::string& node,
                                    const shape_ref& shape) const;

  /// An attempt leased to `node` holds / gave back `shape`'s amounts.
  void acquire(const std::string& node, const shape_ref& shape);
  void release(const std::string& node, const shape_ref& shape);

  /// Why `shape` can never run on the node ("" = it can): the first need
  /// its totals lack, e.g. "memory_gb=128 (it has 64)".
  std::string never_reason(const std::string& node,
                           const shape_ref& shape) const;

  /// JSON object: node -> {"pool": {"total": T, "used": U}}.
  std::string to_json() const;

private:
  void sweep();

  struct pool {
    uint64_t total = 0;
    uint64_t used = 0;
  };
  std::map<std::string, std::map<std::string, pool>> nodes_;
  std::map<std::string, std::weak_ptr<const resource_shape>> shapes_;
  size_t shapes_swept_at_ = 64;
};

} // namespace drover
