// drover-node: one Drover node. Which roles it plays comes from its config;
// `--roles all` on one machine is the zero-setup default.
//
// Life cycle: parse and validate the config (exit 2 on a bad one), start the
// root supervisor, publish it as the node's admin endpoint (CAF network
// layer, Cap'n Proto payloads), print one "ready" line, then wait. SIGINT or
// SIGTERM starts an orderly shutdown of the tree (exit 0); a root supervisor
// that escalates ends the process with exit 1.

#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <csignal>
#include <iostream>
#include <pthread.h>
#include <thread>

namespace {

/// The node's supervision tree. Later issues hang the store, queues,
/// workers and gateway below the root according to the roles.
drover::supervisor_spec node_tree(const drover::node_config& cfg) {
  drover::supervisor_spec root;
  root.name = "node:" + cfg.node_id;
  root.flags.strat = drover::strategy::one_for_one;
  return root;
}

int run(const drover::node_config& cfg, const sigset_t& signals) {
  caf::actor_system_config caf_cfg;
  drover::register_types(caf_cfg);
  caf_cfg.load<caf::io::middleman>();
  drover::apply(cfg, caf_cfg);
  caf::actor_system sys{caf_cfg};
  auto root = drover::spawn_supervisor(sys, node_tree(cfg));
  if (!root) {
    std::cerr << "drover-node: " << drover::describe(root.error()) << '\n';
    return 1;
  }
  auto port = sys.middleman().publish(*root, cfg.admin_port,
                                      cfg.admin_host.c_str(), true);
  if (!port) {
    std::cerr << "drover-node: cannot listen on " << cfg.admin_host << ':'
              << cfg.admin_port << ": " << sys.render(port.error()) << '\n';
    caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
    return 1;
  }
  std::cout << "drover-node " << cfg.node_id << " ready: roles=";
  for (size_t i = 0; i < cfg.roles.size(); ++i)
    std::cout << (i > 0 ? "," : "") << cfg.roles[i];
  std::cout << " admin=" << cfg.admin_host << ':' << *port << std::endl;
  // Signals are blocked in every thread (the mask was set before CAF
  // started its threads); this one thread takes them synchronously.
  std::atomic<bool> asked_to_stop{false};
  std::mutex mx;
  std::condition_variable cv;
  bool root_down = false;
  std::thread signal_waiter{[&] {
    int sig = 0;
    sigwait(&signals, &sig);
    std::unique_lock<std::mutex> guard{mx};
    if (root_down)
      return; // woken by main after the tree ended on its own
    asked_to_stop = true;
    caf::anon_send_exit(*root, caf::exit_reason::user_shutdown);
    // The tree stops child by child within their own timeouts; this is
    // the backstop for a tree that hangs anyway.
    if (!cv.wait_for(guard, cfg.shutdown_timeout, [&] { return root_down; })) {
      std::cerr << "drover-node: orderly shutdown exceeded "
                << cfg.shutdown_timeout.count() << " ms; exiting hard\n";
      std::_Exit(1);
    }
  }};
  caf::scoped_actor self{sys};
  self->monitor(*root);
  caf::error reason;
  bool down = false;
  self->receive_while([&] { return !down; })(
    [&](caf::down_msg& dm) {
      reason = std::move(dm.reason);
      down = true;
    });
  {
    std::lock_guard<std::mutex> guard{mx};
    root_down = true;
  }
  cv.notify_all();
  if (!asked_to_stop) {
    // The tree gave up on its own: wake the signal thread so it can end.
    pthread_kill(signal_waiter.native_handle(), SIGTERM);
  }
  signal_waiter.join();
  if (asked_to_stop && (!reason || reason == caf::exit_reason::user_shutdown)) {
    std::cout << "drover-node " << cfg.node_id << " stopped" << std::endl;
    return 0;
  }
  std::cerr << "drover-node: root supervisor exited: " << sys.render(reason)
            << '\n';
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  auto parsed = drover::parse_node_config(argc, argv, std::cout);
  if (!parsed) {
    std::cerr << "drover-node: " << drover::describe(parsed.error())
              << "\n(see drover-node --help)\n";
    return 2;
  }
  if (parsed->exit_now)
    return 0;
  // Block the stop signals before any thread exists so every thread
  // inherits the mask and only the waiter thread receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return run(parsed->config, signals);
}
