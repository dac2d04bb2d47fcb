#pragma once

// The client's internals (include/drover/client.hpp): the connection, the
// retries and the routing to a partition's owner, shared by
// client/client.cpp (the calls) and client/client_wait.cpp (wait).
// Internal.

#include "drover/client.hpp"

#include "client/routes.hpp"
#include "runtime/backoff.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>

#include <functional>

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <thread>

namespace drover::client_detail {

using clock_type = std::chrono::steady_clock;

/// The node does not know the request: a door older than this client
/// (CAF's unexpected_message). Definite: sending it again changes nothing.
inline bool unknown_request(const caf::error& err) {
  // (CAF 0.17: an empty error has no category to read.)
  return err && err.category() == caf::atom("system")
         && err.code() == static_cast<uint8_t>(caf::sec::unexpected_message);
}

/// A failure of the connection, not an answer: CAF's own errors
/// ("system": timeouts, lost connections; not unknown_request) and exit
/// reasons ("exit": a request whose receiver became unreachable, e.g. a
/// coordinator killed while it was pending).
inline bool transport_failure(const caf::error& err) {
  static const auto exit_category
      = caf::make_error(caf::exit_reason::unreachable).category();
  return (err.category() == caf::atom("system") && !unknown_request(err))
         || err.category() == exit_category;
}

/// What a request holds until a handler sets it: a request answered by
/// neither handler counts as unanswered (transient), never as success.
inline caf::error unanswered() {
  return make_error(errc::unavailable, "the node did not answer");
}

/// Worth trying again: the connection failed, or the node said it cannot
/// serve right now (its store reconnects, this key's rate is spent, or
/// admission control refuses more work for now).
inline bool transient(const caf::error& err) {
  return transport_failure(err) || is(err, errc::unavailable)
         || is(err, errc::rate_limited) || is(err, errc::overloaded);
}

/// Whether a request that ended with `err` may still have taken effect:
/// its answer was lost, or the node's store failed while writing (a commit
/// cut off). Every other answer is definite.
inline bool may_have_acted(const caf::error& err) {
  return transport_failure(err) || is(err, errc::unavailable);
}

inline std::chrono::milliseconds left(clock_type::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - clock_type::now());
}

/// A key for a submission that came without one: random, so that only a
/// resend of this very submission finds its job.
inline std::string generated_key() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string key = "drover-client-";
  for (int i = 0; i < 32; ++i)
    key += hex[rng() % 16];
  return key;
}

struct address {
  std::string host;
  uint16_t port = 0;
};

/// How often a request refused `not_owner` is sent again at once to the
/// owner a fresh read of the partition map names; after that (or while no
/// coordinator owns the partition: a takeover under way) it goes again
/// after the reconnect backoff, until the call's deadline.
inline constexpr int not_owner_resends = 3;

/// What connecting to one more address, or reading one's partition map,
/// may take of a call's time: at most 2 s (the rest is for the request).
inline std::chrono::milliseconds short_budget(clock_type::time_point deadline) {
  return std::clamp(left(deadline), std::chrono::milliseconds{1},
                    std::chrono::milliseconds{2000});
}

/// The longest one attempt of a call waits for its answer when it has more
/// time: CAF does not fail a request whose node died just before or while
/// it was sent (it waits for the timeout), so an attempt that gets no
/// answer is given up and sent again (on the next address, or the new
/// owner) well within the call's time. Every request a client sends again
/// is safe to repeat (submissions carry an idempotency key; a change whose
/// earlier attempt acted is recognised).
inline std::chrono::milliseconds
attempt_budget(std::chrono::milliseconds call_timeout) {
  return std::max(std::chrono::milliseconds{5000}, call_timeout / 4);
}

/// The least time left for which a call sends a request again after a
/// transient answer (a tenth of the call's timeout, within [10 ms, 500
/// ms]); with less, the call ends with that answer.
inline std::chrono::milliseconds
retry_budget(std::chrono::milliseconds call_timeout) {
  return std::clamp(call_timeout / 10, std::chrono::milliseconds{10},
                    std::chrono::milliseconds{500});
}

} // namespace drover::client_detail

namespace drover {

// An internal header of three files: the helpers above by their names.
using namespace client_detail;

struct client::impl {
  client_options opts;
  std::vector<address> addresses;
  caf::actor_system_config cfg;
  /// The client's own actor system (make), or the embedding program's
  /// (attach: `owned_sys` stays null).
  std::unique_ptr<caf::actor_system> owned_sys;
  caf::actor_system* sys = nullptr;
  /// Attached: the one door, in this process; never dropped, no other.
  bool attached = false;
  /// Runs when the client goes (attach's `on_close`).
  std::function<void()> on_close;
  std::mutex mx;
  client_door_actor door;
  size_t turn = 0;
  /// With several addresses: which one owns which partition, and a door
  /// per address that requests were routed to (both under mx).
  client_detail::routes map;
  std::map<size_t, client_door_actor> doors_at;
  std::optional<clock_type::time_point> map_read_at;

  backoff_schedule schedule() const {
    return {opts.reconnect_initial, opts.reconnect_max, 2.0, 1.0};
  }

  /// Sleeps the next backoff delay (at least 10 ms: a client set to 0 ms
  /// does not send a thousand retries a second to a node answering
  /// `overloaded`), but not past the deadline; false if no time is left.
  /// Only the deadline ends a retry loop: the delay is drawn with full
  /// jitter, so 0 ms is a delay like any other (taking it for "no time
  /// left" gave up a reconnect about one draw in a hundred, with most of
  /// the call's time unspent).
  static bool pause(backoff_counter& bo, clock_type::time_point deadline) {
    auto rest = left(deadline);
    if (rest.count() <= 0)
      return false;
    auto wait
        = std::min(std::max(bo.next(), std::chrono::milliseconds{10}), rest);
    std::this_thread::sleep_for(wait);
    return clock_type::now() < deadline;
  }

  /// The door, connecting (the next address after each failure) until
  /// `deadline`.
  caf::expected<client_door_actor> connect(clock_type::time_point deadline) {
    if (attached)
      return door;
    backoff_counter bo{schedule()};
    std::string last;
    for (;;) {
      address a;
      {
        std::lock_guard<std::mutex> guard{mx};
        if (door)
          return door;
        a = addresses[turn % addresses.size()];
      }
      auto d = connect_client_door(
          *sys, a.host, a.port,
          std::min(left(deadline), std::chrono::milliseconds{5000}),
          opts.tls.enabled());
      if (d) {
        std::lock_guard<std::mutex> guard{mx};
        if (!door)
          door = *d;
        return door;
      }
      last = a.host + ':' + std::to_string(a.port) + ": " + describe(d.error());
      {
        std::lock_guard<std::mutex> guard{mx};
        ++turn;
      }
      if (!pause(bo, deadline))
        return make_error(errc::unavailable,
                          "no node answered (last: " + last + ")");
    }
  }

  /// Forgets a door whose connection failed; the next call connects to the
  /// next address (and routes with a fresh partition map).
  void drop(const client_door_actor& failed) {
    if (attached)
      return; // a local door does not lose its connection
    std::lock_guard<std::mutex> guard{mx};
    if (door == failed) {
      door = nullptr;
      ++turn;
    }
    for (auto i = doors_at.begin(); i != doors_at.end();)
      if (i->second == failed) {
        i = doors_at.erase(i);
        map.forget();
      } else {
        ++i;
      }
  }

  /// The door at address `i`, connecting within at most 2 s.
  caf::expected<client_door_actor> door_at(size_t i,
                                           clock_type::time_point deadline) {
    {
      std::lock_guard<std::mutex> guard{mx};
      auto f = doors_at.find(i);
      if (f != doors_at.end())
        return f->second;
    }
    auto d = connect_client_door(*sys, addresses[i].host, addresses[i].port,
                                 short_budget(deadline), opts.tls.enabled());
    if (!d)
      return d;
    std::lock_guard<std::mutex> guard{mx};
    return doors_at.emplace(i, *d).first->second;
  }

  /// Reads the partition map from every address (at most once a second
  /// unless `now`: after a not_owner answer).
  void read_map(clock_type::time_point deadline, bool now) {
    {
      std::lock_guard<std::mutex> guard{mx};
      if (!now && map_read_at
          && clock_type::now() - *map_read_at < std::chrono::seconds{1})
        return;
      map_read_at = clock_type::now();
    }
    std::vector<std::optional<client_detail::routes::answer>> answers(
        addresses.size());
    for (size_t i = 0; i < addresses.size(); ++i) {
      auto d = door_at(i, deadline);
      if (!d)
        continue;
      auto a = ask_map(*sys, *d, opts.api_key, short_budget(deadline));
      if (a)
        answers[i] = std::move(*a);
      else if (transport_failure(a.error()))
        drop(*d);
    }
    std::lock_guard<std::mutex> guard{mx};
    map.load(answers);
  }

  /// The door of `t`'s partition's owner when the map (as loaded now)
  /// names one and it connects; nullopt otherwise.
  std::optional<client_door_actor> owner_door(const route_target& t,
                                              clock_type::time_point deadline) {
    std::optional<size_t> owner;
    {
      std::lock_guard<std::mutex> guard{mx};
      owner = map.owner_of(t);
    }
    if (!owner)
      return std::nullopt;
    auto d = door_at(*owner, deadline);
    if (!d)
      return std::nullopt;
    return *d;
  }

  /// The door for a request about `t`: its partition's owner when several
  /// addresses are given and the map knows it, else the current door.
  caf::expected<client_door_actor> pick(const route_target& t,
                                        clock_type::time_point deadline) {
    if (addresses.size() > 1 && !t.about_anything()) {
      bool loaded = false;
      {
        std::lock_guard<std::mutex> guard{mx};
        loaded = map.loaded();
      }
      if (!loaded)
        read_map(deadline, false);
      if (auto d = owner_door(t, deadline))
        return *d;
    }
    return connect(deadline);
  }

  bool owner_known(const route_target& t) {
    std::lock_guard<std::mutex> guard{mx};
    return map.owner_of(t).has_value();
  }

  /// The owner of each item's partition (nullopt: not known), for a batch.
  std::map<std::optional<size_t>, std::vector<size_t>>
  group(const std::vector<submit_request>& reqs,
        const std::vector<size_t>& items, clock_type::time_point deadline) {
    std::map<std::optional<size_t>, std::vector<size_t>> out;
    if (addresses.size() > 1) {
      bool loaded = false;
      {
        std::lock_guard<std::mutex> guard{mx};
        loaded = map.loaded();
      }
      if (!loaded)
        read_map(deadline, false);
    }
    std::lock_guard<std::mutex> guard{mx};
    for (auto i : items)
      out[addresses.size() > 1 ? map.owner_of(target_of(reqs[i]))
                               : std::nullopt]
          .push_back(i);
    return out;
  }

  static route_target target_of(const submit_request& r) {
    route_target t;
    t.key = r.idempotency_key;
    t.concurrency_key = r.concurrency_key;
    t.tenant = r.tenant;
    return t;
  }

  /// What became of a call's attempts.
  struct attempts {
    int sent = 0;
    /// An attempt may have acted without its answer arriving.
    bool maybe_acted = false;
  };

  /// One request, sent again after transient failures until `deadline`.
  template <class T, class... Ts>
  caf::expected<T> call(clock_type::time_point deadline, attempts* info,
                        const route_target& target, Ts... xs) {
    backoff_counter bo{schedule()};
    // The previous attempt's transient answer: what the call ends with if
    // no time is left for another (an `overloaded` stays itself).
    caf::error previous;
    int resends = not_owner_resends;
    for (;;) {
      auto d = pick(target, deadline);
      if (!d)
        return std::move(d.error());
      auto budget = std::min(left(deadline), attempt_budget(opts.timeout));
      // A resend with too little time to be answered would turn a definite
      // answer (`overloaded`: nothing was made) into outcome_unknown.
      if (budget.count() <= 0
          || (previous && budget < retry_budget(opts.timeout)))
        return previous ? std::move(previous)
                        : make_error(errc::unavailable, "no answer in time");
      caf::expected<T> result{unanswered()};
      {
        caf::scoped_actor self{*sys};
        self->request(*d, budget, client_atom::value, opts.api_key, xs...)
            .receive([&](T& x) { result = std::move(x); },
                     [&](caf::error& err) { result = std::move(err); });
      }
      if (info) {
        ++info->sent;
        if (!result && may_have_acted(result.error()))
          info->maybe_acted = true;
      }
      if (!result && is(result.error(), errc::not_owner) && addresses.size() > 1
          && !target.about_anything()) {
        // Nothing was done: the partition has another owner now, or none
        // yet (a takeover under way).
        read_map(deadline, true);
        if (resends-- > 0 && owner_known(target))
          continue;
        if (!pause(bo, deadline))
          return result;
        previous = result.error();
        continue;
      }
      if (result || !transient(result.error()))
        return result;
      if (transport_failure(result.error()))
        drop(*d);
      if (!pause(bo, deadline))
        return result;
      previous = result.error();
    }
  }

  /// call() with the options' timeout, for requests that change nothing.
  template <class T, class... Ts>
  caf::expected<T> ask(const route_target& target, Ts... xs) {
    attempts* none = nullptr;
    return call<T>(clock_type::now() + opts.timeout, none, target, xs...);
  }

  /// A call that changes a job. When an earlier attempt may have acted
  /// unanswered, a conflict may be that attempt's own effect: the job is
  /// then read (within the same deadline) and returned if `done(record)`
  /// holds. A conflict on a first, answered attempt is the answer.
  template <class... Ts>
  caf::expected<job_record> change(const std::string& id,
                                   bool (*done)(const job_record&), Ts... xs) {
    auto deadline = clock_type::now() + opts.timeout;
    attempts info;
    route_target t;
    t.job_id = id;
    auto r = call<job_record>(deadline, &info, t, xs...);
    if (!r && is(r.error(), errc::conflict) && info.maybe_acted) {
      attempts* none = nullptr;
      auto now = call<job_record>(deadline, none, t, get_atom::value, id);
      if (now && done(*now))
        return now;
    }
    return r;
  }
};

} // namespace drover
