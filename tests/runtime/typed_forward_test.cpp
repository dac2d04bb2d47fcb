// forward_handlers: a stand-in built from an interface answers every
// message of it through its target, with the target's answer, and nothing
// else.

#include "runtime/typed_forward.hpp"

#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

using namespace drover;

namespace {

using echo_actor = caf::typed_actor<
    caf::replies_to<get_atom, std::string>::with<std::string>,
    caf::replies_to<stats_atom>::with<std::string, int32_t>,
    caf::reacts_to<stop_atom, std::string>>;

/// The target: answers get with what it got and the last stop's text.
echo_actor::behavior_type echo(echo_actor::stateful_pointer<std::string> self) {
  return {
      [self](get_atom, const std::string& x) {
        return "got " + x + " after '" + self->state + "'";
      },
      [](stats_atom) { return std::make_tuple(std::string{"n"}, int32_t{3}); },
      [self](stop_atom, const std::string& why) { self->state = why; },
  };
}

struct target_box {
  echo_actor target;
  std::atomic<int> forwarded{0};
};

/// The stand-in: sends every message of echo_actor to the box's target.
echo_actor::behavior_type stand_in(echo_actor::pointer self,
                                   std::shared_ptr<target_box> box) {
  self->set_default_handler(log_and_drop);
  return behavior_of<echo_actor>(forward_handlers<echo_actor>(
      [self, box](auto reply, auto&... xs) -> typename decltype(reply)::result {
        if (!box->target)
          return make_error(errc::unavailable, "no target");
        ++box->forwarded;
        return self->delegate(box->target, std::move(xs)...);
      }));
}

caf::actor_system_config& config(caf::actor_system_config& cfg) {
  register_types(cfg);
  return cfg;
}

} // namespace

TEST_CASE("a stand-in made by forward_handlers answers through its target",
          "[typed_forward]") {
  caf::actor_system_config cfg;
  caf::actor_system sys{config(cfg)};
  caf::scoped_actor self{sys};
  auto box = std::make_shared<target_box>();
  auto proxy = sys.spawn(stand_in, box);
  constexpr auto patience = std::chrono::seconds{10};

  SECTION("without a target every request fails, typed") {
    caf::error got;
    self->request(proxy, patience, get_atom::value, std::string{"a"})
        .receive([](std::string&) { FAIL("answered without a target"); },
                 [&](caf::error& err) { got = std::move(err); });
    CHECK(is(got, errc::unavailable));
  }

  SECTION("each message reaches the target and its answer comes back") {
    box->target = sys.spawn(echo);
    // reacts_to, then replies_to: in order through the stand-in.
    self->send(proxy, stop_atom::value, std::string{"first"});
    std::string answer;
    self->request(proxy, patience, get_atom::value, std::string{"x"})
        .receive([&](std::string& s) { answer = s; },
                 [](caf::error& err) { FAIL(describe(err)); });
    CHECK(answer == "got x after 'first'");
    std::string name;
    int32_t n = 0;
    self->request(proxy, patience, stats_atom::value)
        .receive(
            [&](std::string& s, int32_t k) {
              name = s;
              n = k;
            },
            [](caf::error& err) { FAIL(describe(err)); });
    CHECK(name == "n");
    CHECK(n == 3);
    CHECK(box->forwarded == 3);
  }

  SECTION("a message outside the interface is refused, not forwarded") {
    box->target = sys.spawn(echo);
    // As a peer that ignores the interface would send it.
    auto untyped = caf::actor_cast<caf::actor>(proxy);
    caf::error got;
    self->request(untyped, patience, ping_atom::value)
        .receive([](ok_atom) { FAIL("answered a foreign message"); },
                 [&](caf::error& err) { got = std::move(err); });
    CHECK(got == caf::sec::unexpected_message);
    CHECK(box->forwarded == 0);
    // And the stand-in is still there.
    std::string answer;
    self->request(proxy, patience, get_atom::value, std::string{"y"})
        .receive([&](std::string& s) { answer = s; },
                 [](caf::error& err) { FAIL(describe(err)); });
    CHECK(answer == "got y after ''");
  }
  self->send_exit(proxy, caf::exit_reason::user_shutdown);
  if (box->target)
    self->send_exit(box->target, caf::exit_reason::user_shutdown);
}
