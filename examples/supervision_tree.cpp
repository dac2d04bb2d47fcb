// Supervision in one file: a small tree whose flaky worker crashes and is
// restarted with backoff, printed as the supervisors describe it, then an
// orderly shutdown.
//
//   build/examples/supervision_tree

#include "runtime/errors.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <iostream>

using namespace drover;
using namespace std::chrono_literals;

namespace {

using crash_atom = caf::atom_constant<caf::atom("crash")>;

/// A worker that dies when told to.
caf::behavior flaky(caf::event_based_actor* self) {
  return {[self](crash_atom) { self->quit(caf::sec::runtime_error); }};
}

using started_atom = caf::atom_constant<caf::atom("started")>;

/// Each incarnation announces itself to `observer`, so main() can wait for
/// restarts as events instead of sleeping.
child_spec flaky_child(std::string name, caf::actor observer) {
  child_spec spec;
  spec.name = name;
  spec.start
      = [name, observer](caf::actor_system& sys, const caf::actor_addr&) {
          auto h = sys.spawn(flaky);
          caf::anon_send(observer, started_atom::value, name, h);
          return h;
        };
  return spec;
}

void print(const tree_node& n, int depth) {
  std::cout << std::string(static_cast<size_t>(depth) * 2, ' ') << n.name
            << " (" << to_string(n.kind) << ", " << to_string(n.state)
            << ", restarts " << n.restarts << ")\n";
  for (const auto& c : n.children)
    print(c, depth + 1);
}

tree_node describe_tree(caf::scoped_actor& self, const supervisor_actor& sup) {
  tree_node result;
  self->request(sup, 5s, describe_atom::value)
      .receive([&](tree_node& t) { result = std::move(t); },
               [&](caf::error& err) {
                 std::cerr << "describe failed: " << describe(err) << '\n';
               });
  return result;
}

} // namespace

int main() {
  caf::actor_system_config cfg;
  register_types(cfg);
  caf::actor_system sys{cfg};
  caf::scoped_actor self{sys};
  auto observer = caf::actor{self};

  supervisor_spec pool{
      "pool", {}, {flaky_child("w1", observer), flaky_child("w2", observer)}};
  pool.flags.strat = strategy::one_for_all;
  supervisor_spec root{
      "root", {}, {flaky_child("ingest", observer), supervisor_child(pool)}};
  root.flags.intensity = 5;
  root.flags.period = 10s;
  auto sup = spawn_supervisor(sys, root);
  if (!sup) {
    std::cerr << describe(sup.error()) << '\n';
    return 1;
  }
  // Wait until the three workers announced themselves.
  auto await_start = [&](const std::string& who) {
    caf::actor handle;
    bool done = false;
    self->receive_while([&] { return !done; })(
        [&](started_atom, const std::string& name, caf::actor h) {
          if (name == who) {
            handle = std::move(h);
            done = true;
          }
        },
        caf::after(5s) >> [&] { done = true; });
    return handle;
  };
  auto ingest = await_start("ingest");
  auto w2 = await_start("w2");
  std::cout << "started:\n";
  print(describe_tree(self, *sup), 1);

  std::cout << "crashing 'ingest' twice and 'w2' once...\n";
  for (int i = 0; i < 2; ++i) {
    self->send(ingest, crash_atom::value);
    ingest = await_start("ingest"); // restarted after its backoff
  }
  self->send(w2, crash_atom::value);
  await_start("w2"); // one_for_all: w1 and w2 both restarted
  std::cout << "after the crashes:\n";
  print(describe_tree(self, *sup), 1);

  self->monitor(*sup);
  self->send_exit(*sup, caf::exit_reason::user_shutdown);
  self->receive([](caf::down_msg& dm) {
    std::cout << "root stopped: " << caf::to_string(dm.reason) << '\n';
  });
}
