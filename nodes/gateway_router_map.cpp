// A gateway node's router (nodes/gateway_router.hpp): its partition map,
// learnt from the coordinators' own answers, forgetting a lost coordinator,
// and picking where a request goes.

#include "nodes/gateway_router_state.hpp"

#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/partition.hpp"
#include "runtime/partition_map.hpp"
#include "runtime/type_ids.hpp"

#include <caf/typed_event_based_actor.hpp>

#include <utility>

namespace drover::node::router_detail {

namespace {

/// Coordinator `i`'s answer to (partitions_atom).
void apply_map(router_state& st, size_t i, const std::string& list,
               int32_t count) {
  if (count < 1 || count > max_partitions)
    return;
  auto parts = parse_partition_list(list, count);
  if (!parts) {
    if (!st.warned_bad_map)
      log::warn("gateway",
                "a coordinator sent a malformed partition list; "
                "ignored",
                {{"coordinator", static_cast<int64_t>(i + 1)}});
    st.warned_bad_map = true;
    return;
  }
  if (count != st.count) {
    st.count = count;
    st.owner.assign(static_cast<size_t>(count), -1);
  }
  for (auto& o : st.owner)
    if (o == static_cast<int>(i))
      o = -1;
  for (auto p : *parts)
    st.owner[static_cast<size_t>(p)] = static_cast<int>(i);
  st.owned[i] = parts->size();
}

} // namespace

void lose(router_state& st, size_t i) {
  st.apis[i] = nullptr;
  st.owned[i] = 0;
  for (auto& o : st.owner)
    if (o == static_cast<int>(i))
      o = -1;
  st.subs.lost(i);
  auto pending = std::move(st.inflight[i]);
  st.inflight[i].clear();
  for (auto& [id, on_lost] : pending)
    on_lost();
}

void refresh(self_ptr self, const state_ptr& st, std::function<void()> then) {
  if (then)
    st->after_refresh.push_back(std::move(then));
  if (st->refreshing)
    return;
  st->refreshing = true;
  auto finish = [self, st] {
    st->refreshing = false;
    st->subs.follow(self, st->view());
    auto waiting = std::move(st->after_refresh);
    st->after_refresh.clear();
    for (auto& f : waiting)
      f();
  };
  auto pending = std::make_shared<size_t>(0);
  for (const auto& api : st->apis)
    *pending += api ? 1 : 0;
  if (*pending == 0)
    return finish();
  for (size_t i = 0; i < st->apis.size(); ++i) {
    auto api = st->apis[i];
    if (!api)
      continue;
    self->request(api, map_timeout, partitions_atom::value)
        .then(
            [st, i, api, pending, finish](std::string& list, int32_t count) {
              if (st->apis[i] == api)
                apply_map(*st, i, list, count);
              if (--*pending == 0)
                finish();
            },
            [i, pending, finish](caf::error& err) {
              // Its last map stays in use until the next round (a lost
              // coordinator is forgotten by its joiner, not here).
              log::debug("gateway",
                         "a coordinator did not answer for its "
                         "partitions",
                         {{"coordinator", static_cast<int64_t>(i + 1)},
                          {"error", describe(err)}});
              if (--*pending == 0)
                finish();
            });
  }
}

int pick(router_state& st, int32_t p) {
  if (p >= 0 && static_cast<size_t>(p) < st.owner.size()) {
    auto o = st.owner[static_cast<size_t>(p)];
    if (o >= 0 && st.apis[static_cast<size_t>(o)])
      return o;
  }
  auto n = st.apis.size();
  for (bool need_owned : {true, false})
    for (size_t k = 0; k < n; ++k) {
      auto i = (st.turn + k) % n;
      if (st.apis[i] && (!need_owned || st.owned[i] > 0)) {
        st.turn = i + 1;
        return static_cast<int>(i);
      }
    }
  return -1;
}

} // namespace drover::node::router_detail
