#pragma once

// The ready jobs of one resource class, job type and priority, shared fairly
// between tenants (issue 15 item 4, docs/jobs.md "Fairness between
// tenants"). Internal to the queue (actors/detail/queue_state.hpp).
//
// Each tenant with ready jobs has its own FIFO (ordered by the entries'
// aging key) and a pass (stride scheduling): the next job is the head of
// the tenant with the smallest pass, and taking it advances that tenant's
// pass by 1 / weight. A tenant that had nothing ready starts at the pass of
// the last job taken, so idle time earns no credit. While several tenants
// have ready jobs here, each is served in proportion to its weight: over
// any stretch, the jobs taken of tenants A and B differ from the ratio of
// their weights by at most one job each. A tenant whose FIFO empties keeps
// its pass: one that has a job ready at every turn (a chain of jobs each
// submitting the next) is still held to its weight; the kept pass is
// dropped once every other tenant has passed it (no credit for idle time
// either way). With one tenant it is a FIFO.
//
// A tenant's jobs are a multiset ordered by key, not a sorted deque: a
// coordinator that takes partitions recovers them one at a time in job id
// order, and the ids of one partition span the whole time range of the
// others, so recovered jobs arrive out of key order. Inserting those into
// the middle of a deque moved O(n) entries each (quadratic: minutes for a
// third of a million jobs, docs/benchmarks.md). A multiset inserts at the
// upper bound of the equal keys, so jobs with the same key stay in arrival
// order as before, in O(log n) (amortized O(1) when the key is not smaller
// than the last, the hint), and takes its first in amortized O(1). The
// price is a tree node per job (three pointers and a colour) on top of the
// entry. Sorting a recovered page and merging it once would keep the
// deque, but still move all of it once a page, and every other out-of-order
// insert (a job going back from behind a concurrency key or a gate,
// queue_dispatch.cpp back_to_ready) would stay O(n).

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/concurrency.hpp"

namespace drover::detail {

/// One ready job: all the queue keeps per queued job. The generator's ids
/// (16-17 characters) do not fit libstdc++'s 15-character small buffer: each
/// costs an allocation of 32 B (docs/benchmarks.md).
struct ready_entry {
  std::string job_id;
  /// ready-since + priority * aging interval, Unix ms: smaller runs first
  /// (within a tenant; across priorities, see queue.hpp).
  int64_t key;
  /// Its tenant (admission_control::tenant).
  uint32_t tenant = 0;
  /// Its rate-limit and breaker keys (flow_control::intern; 0 = none).
  uint32_t flow = 0;
  /// Its own concurrency key (null = none).
  own_key_ref own;
  /// How many of its concurrency slots it holds (concurrency_slots::
  /// keys_of, in order): woken from behind a key, it holds that key's slot
  /// (and the ones before it) until it is dispatched, or leaves and gives
  /// them to the next.
  uint8_t holds = 0;
  /// Woken from behind a gate of its flow, not taken yet
  /// (flow_control::woke): the gate's place in flow_control::gates_of, from
  /// 1; 0 = not.
  uint8_t woken_gate = 0;
  /// Tokens of its first rate limits it took and keeps (it waits at a
  /// later one: flow_control::take_rates).
  uint8_t rate_taken = 0;
  /// Its concurrency keys (a bit per place in keys_of) whose permit across
  /// coordinators it was granted and has not started under (it took the
  /// slot, or left its line, and then waited at a rate limit or breaker),
  /// as of the queue's grants generation `permit_gen`: it takes the slot
  /// again without asking (the permit counts until it starts).
  uint8_t permits = 0;
  uint32_t permit_gen = 0;
};

class ready_queue {
public:
  bool empty() const {
    return size_ == 0;
  }

  size_t size() const {
    return size_;
  }

  /// Adds `e` where its key puts it among its tenant's jobs; `weight` (>
  /// 0) is its tenant's, used if the tenant has nothing ready yet.
  void insert(ready_entry e, double weight) {
    auto [i, fresh] = tenants_.try_emplace(e.tenant);
    auto& t = i->second;
    if (fresh) {
      t.pass = pass_;
      if (auto kept = kept_.find(e.tenant); kept != kept_.end()) {
        t.pass = std::max(pass_, kept->second);
        kept_.erase(kept);
      }
      t.stride = 1.0 / weight;
      order_.emplace(t.pass, e.tenant);
    }
    // Placed as close before end() as the order allows: after every job
    // with the same key either way.
    t.jobs.emplace_hint(t.jobs.end(), std::move(e));
    ++size_;
  }

  /// The next job (not empty()).
  const ready_entry& front() const {
    return *tenants_.at(order_.begin()->second).jobs.begin();
  }

  /// Takes the next job (not empty()).
  ready_entry pop_front() {
    auto first = order_.begin();
    auto tenant = first->second;
    auto& t = tenants_.at(tenant);
    auto out = std::move(t.jobs.extract(t.jobs.begin()).value());
    --size_;
    pass_ = first->first;
    order_.erase(first);
    t.pass += t.stride;
    if (t.jobs.empty()) {
      // Kept until the others pass it; few: pruned as it grows.
      if (t.pass > pass_)
        kept_[tenant] = t.pass;
      tenants_.erase(tenant);
      if (kept_.size() > 4096)
        for (auto k = kept_.begin(); k != kept_.end();)
          k = k->second <= pass_ ? kept_.erase(k) : std::next(k);
    } else {
      order_.emplace(t.pass, tenant);
    }
    return out;
  }

  /// Removes the job `job_id` into `out`; false if it is not here.
  bool erase(const std::string& job_id, ready_entry& out) {
    for (auto i = tenants_.begin(); i != tenants_.end(); ++i) {
      auto& dq = i->second.jobs;
      for (auto j = dq.begin(); j != dq.end(); ++j) {
        if (j->job_id != job_id)
          continue;
        out = std::move(dq.extract(j).value());
        --size_;
        if (dq.empty()) {
          order_.erase({i->second.pass, i->first});
          tenants_.erase(i);
        }
        return true;
      }
    }
    return false;
  }

  /// Moves every job for which `pred` holds into `out`, in one pass.
  template <class Pred>
  void extract_if(Pred pred, std::vector<ready_entry>& out) {
    for (auto i = tenants_.begin(); i != tenants_.end();) {
      auto& dq = i->second.jobs;
      for (auto j = dq.begin(); j != dq.end();) {
        if (pred(*j)) {
          out.push_back(std::move(dq.extract(j++).value()));
          --size_;
        } else {
          ++j;
        }
      }
      if (dq.empty()) {
        order_.erase({i->second.pass, i->first});
        i = tenants_.erase(i);
      } else {
        ++i;
      }
    }
  }

  /// The smallest key of any job here (not empty()): the oldest.
  int64_t oldest_key() const {
    auto out = tenants_.begin()->second.jobs.begin()->key;
    for (const auto& kv : tenants_)
      out = std::min(out, kv.second.jobs.begin()->key);
    return out;
  }

private:
  struct by_key {
    bool operator()(const ready_entry& x, const ready_entry& y) const {
      return x.key < y.key;
    }
  };

  struct tenant_jobs {
    /// Ordered by key, equal keys in arrival order.
    std::multiset<ready_entry, by_key> jobs;
    double pass = 0;
    double stride = 1;
  };

  std::unordered_map<uint32_t, tenant_jobs> tenants_;
  /// (pass, tenant) of every tenant with ready jobs here.
  std::set<std::pair<double, uint32_t>> order_;
  /// The pass of the last job taken: where a newly ready tenant starts.
  double pass_ = 0;
  /// Passes of tenants whose FIFO emptied, ahead of pass_.
  std::unordered_map<uint32_t, double> kept_;
  size_t size_ = 0;
};

} // namespace drover::detail
