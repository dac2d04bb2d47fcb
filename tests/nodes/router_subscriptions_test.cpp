// Progress subscriptions through a gateway node follow the coordinator
// (nodes/router_subscriptions.hpp), here through the relay of a gateway
// node in front of an active coordinator (api_relay): made again at the
// next coordinator, the subscriber told to read the log, dropped when the
// subscriber unsubscribes or goes. The coordinators are stand-ins that
// record what they are asked; the multi-process tests (failover_test,
// share_gateway_test) show the same with real nodes.

#include "nodes/node_roles.hpp"
#include "runtime/errors.hpp"
#include "runtime/typed_forward.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;

namespace {

/// What a stand-in coordinator was asked: "sub <id>", "sub+ <id>" (with
/// changed_atom), "unsub <id>".
struct recorder {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<std::string> calls;

  void add(std::string call) {
    {
      std::lock_guard<std::mutex> guard{mx};
      calls.push_back(std::move(call));
    }
    cv.notify_all();
  }

  /// Waits until `call` was recorded (up to 5 s).
  bool saw(const std::string& call) {
    std::unique_lock<std::mutex> guard{mx};
    return cv.wait_for(guard, 5s, [&] {
      return std::find(calls.begin(), calls.end(), call) != calls.end();
    });
  }

  std::string all() {
    std::lock_guard<std::mutex> guard{mx};
    std::string out;
    for (const auto& c : calls)
      out += c + "; ";
    return out;
  }

  size_t count(const std::string& call) {
    std::lock_guard<std::mutex> guard{mx};
    return static_cast<size_t>(std::count(calls.begin(), calls.end(), call));
  }
};

/// A coordinator's node API that records (un)subscriptions and refuses
/// everything else, and the first `refuse` subscribes too.
api_actor spawn_coordinator(caf::actor_system& sys,
                            std::shared_ptr<recorder> rec, int refuse = 0) {
  auto refusals = std::make_shared<int>(refuse);
  return sys.spawn([rec, refusals](api_actor::pointer) {
    return behavior_of<api_actor>(forward_handlers<api_actor>(
        [rec, refusals](auto reply, auto& first, auto&... xs) ->
        typename decltype(reply)::result {
          using first_t = std::decay_t<decltype(first)>;
          auto args = std::tie(xs...);
          if constexpr (std::is_same_v<first_t, subscribe_atom>) {
            rec->add((sizeof...(xs) == 3 ? "sub+ " : "sub ")
                     + std::get<0>(args));
            if (*refusals > 0) {
              --*refusals;
              return make_error(errc::unavailable, "refused by the test");
            }
            return ok_atom::value;
          } else if constexpr (std::is_same_v<first_t, unsubscribe_atom>) {
            rec->add("unsub " + std::get<0>(args));
            return caf::unit;
          } else {
            return make_error(errc::unavailable, "a stand-in");
          }
        }));
  });
}

/// Subscribes `self` to `id` through `relay` (with changed_atom if
/// `changes`); true if answered ok.
bool subscribe(caf::scoped_actor& self, const api_actor& relay,
               const std::string& id, bool changes = false) {
  bool ok = false;
  auto who = caf::actor_cast<caf::actor>(self);
  auto on_ok = [&](ok_atom) { ok = true; };
  auto on_error = [](caf::error&) {};
  if (changes)
    self->request(relay, 5s, subscribe_atom::value, id, who,
                  changed_atom::value)
        .receive(on_ok, on_error);
  else
    self->request(relay, 5s, subscribe_atom::value, id, who)
        .receive(on_ok, on_error);
  return ok;
}

/// Whether `self` receives (changed_atom, id) within `timeout`.
bool told_changed(caf::scoped_actor& self, const std::string& id,
                  std::chrono::seconds timeout = 5s) {
  bool told = false;
  self->receive([&](changed_atom, const std::string& got) { told = got == id; },
                caf::after(timeout) >> [] {});
  return told;
}

/// Whether `self` is not told to read a log again within `quiet`.
bool told_nothing(caf::scoped_actor& self, std::chrono::milliseconds quiet) {
  bool nothing = true;
  self->receive([&](changed_atom, const std::string&) { nothing = false; },
                caf::after(quiet) >> [] {});
  return nothing;
}

/// Two stand-in coordinators, a and b (b refuses its first `b_refuses`
/// subscribes), and a relay.
struct relay_fixture {
  explicit relay_fixture(int b_refuses = 0)
      : b{spawn_coordinator(sys, b_rec, b_refuses)} {}
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::shared_ptr<recorder> a_rec = std::make_shared<recorder>();
  std::shared_ptr<recorder> b_rec = std::make_shared<recorder>();
  api_actor a = spawn_coordinator(sys, a_rec);
  api_actor b;
  node::api_relay relay{sys};
};

} // namespace

TEST_CASE("a relay makes a progress subscription again at the next "
          "coordinator and tells the subscriber to read the log",
          "[router]") {
  relay_fixture f;
  f.relay.set({f.a, cluster_protocol_max});
  caf::scoped_actor stream{f.sys};
  REQUIRE(subscribe(stream, f.relay.handle(), "j1-3", true));
  CHECK(f.a_rec->saw("sub+ j1-3"));
  // Not moved: nothing to read again.
  CHECK(told_nothing(stream, 200ms));

  // The failover: the relay is pointed at b.
  f.relay.set({f.b, cluster_protocol_max});
  CHECK(f.b_rec->saw("sub+ j1-3"));
  CHECK(told_changed(stream, "j1-3"));

  // Unsubscribed through the relay: at b, once, and not again later.
  caf::anon_send(f.relay.handle(), unsubscribe_atom::value, std::string{"j1-3"},
                 caf::actor_cast<caf::actor>(stream));
  CHECK(f.b_rec->saw("unsub j1-3"));
  f.relay.set({f.a, cluster_protocol_max});
  f.relay.set({f.b, cluster_protocol_max});
  // A subscribe after the two moves: once b has it, whatever the moves
  // made is made. b heard its first subscribe only: the entry is gone.
  CHECK(subscribe(stream, f.relay.handle(), "probe-1"));
  CHECK(f.b_rec->saw("sub probe-1"));
  CHECK(f.b_rec->count("sub+ j1-3") == 1);
  CHECK(f.a_rec->count("sub+ j1-3") == 1);
}

TEST_CASE("a subscribe through a relay without a coordinator is answered "
          "at once and made once there is one",
          "[router]") {
  relay_fixture f;
  caf::scoped_actor stream{f.sys};
  CHECK(subscribe(stream, f.relay.handle(), "j2-0", true));
  f.relay.set({f.a, cluster_protocol_max});
  CHECK(f.a_rec->saw("sub+ j2-0"));
  CHECK(told_changed(stream, "j2-0"));
}

TEST_CASE("a relay drops the subscriptions of a subscriber that is gone",
          "[router]") {
  relay_fixture f;
  f.relay.set({f.a, cluster_protocol_max});
  {
    caf::scoped_actor stream{f.sys};
    for (const auto* id : {"j3-1", "j4-1"})
      CHECK(subscribe(stream, f.relay.handle(), id));
    CHECK(f.a_rec->saw("sub j3-1"));
    CHECK(f.a_rec->saw("sub j4-1"));
  } // the subscriber goes
  CHECK(f.a_rec->saw("unsub j3-1"));
  CHECK(f.a_rec->saw("unsub j4-1"));
  // Nothing is made again at the next coordinator.
  f.relay.set({f.b, cluster_protocol_max});
  caf::scoped_actor probe{f.sys};
  CHECK(subscribe(probe, f.relay.handle(), "j5-1"));
  CHECK(f.b_rec->saw("sub j5-1"));
  CHECK(f.b_rec->count("sub j3-1") == 0);
  CHECK(f.b_rec->count("sub j4-1") == 0);
}

TEST_CASE("a relay tries a failed subscribe at the next coordinator again "
          "until it is made",
          "[router]") {
  relay_fixture f{2}; // b refuses twice
  f.relay.set({f.a, cluster_protocol_max});
  caf::scoped_actor stream{f.sys};
  REQUIRE(subscribe(stream, f.relay.handle(), "j6-2", true));
  f.relay.set({f.b, cluster_protocol_max});
  // Refused twice, made the third time (once a second), then told.
  auto told = told_changed(stream, "j6-2", 10s);
  INFO("b was asked: " << f.b_rec->all());
  CHECK(told);
  CHECK(f.b_rec->count("sub+ j6-2") == 3);
  // Each refused one was undone (it might have been made after all).
  CHECK(f.b_rec->count("unsub j6-2") == 2);
}
