// droverctl: the operator's command line for a running Drover node.
//
//   droverctl tree [--host H] [--port P] [--json]
//       prints the node's live supervision tree, as the supervisors
//       describe themselves (fetched over CAF's network layer).
//
// Exit codes: 0 success, 1 the node could not be reached or answered with
// an error, 2 bad usage.

#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/program_options.hpp>

#include <iostream>

namespace po = boost::program_options;

namespace {

void print_tree(const drover::tree_node& n, int depth) {
  std::cout << std::string(static_cast<size_t>(depth) * 2, ' ') << n.name
            << " [" << to_string(n.kind);
  if (n.kind == drover::child_kind::supervisor)
    std::cout << ' ' << to_string(n.strat);
  std::cout << "] " << to_string(n.state) << " restarts=" << n.restarts
            << " uptime=" << n.uptime_ms << "ms";
  if (depth > 0)
    std::cout << " restart=" << to_string(n.restart);
  if (!n.last_exit.empty())
    std::cout << " last_exit=\"" << n.last_exit << '"';
  std::cout << '\n';
  for (const auto& c : n.children)
    print_tree(c, depth + 1);
}

} // namespace

int main(int argc, char** argv) {
  std::string command;
  std::string host = "127.0.0.1";
  int port = 7411;
  int timeout_ms = 5000;
  po::options_description opts{"droverctl tree [options]"};
  opts.add_options()("help,h", "print this help")
    ("command", po::value(&command), "tree")
    ("host", po::value(&host)->default_value(host), "node admin host")
    ("port", po::value(&port)->default_value(port), "node admin port")
    ("timeout-ms", po::value(&timeout_ms)->default_value(timeout_ms),
     "give up after this long")
    ("json", "print JSON instead of an indented tree");
  po::positional_options_description pos;
  pos.add("command", 1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv)
                .options(opts)
                .positional(pos)
                .run(),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "droverctl: " << e.what() << '\n';
    return 2;
  }
  if (vm.count("help")) {
    std::cout << opts << '\n';
    return 0;
  }
  if (command != "tree") {
    std::cerr << "droverctl: unknown command '" << command
              << "' (known: tree)\n";
    return 2;
  }
  if (port < 1 || port > 65535 || timeout_ms < 1) {
    std::cerr << "droverctl: --port must be within [1, 65535] and "
                 "--timeout-ms positive\n";
    return 2;
  }
  caf::actor_system_config cfg;
  drover::register_types(cfg);
  cfg.load<caf::io::middleman>();
  cfg.set("scheduler.max-threads", size_t{1});
  caf::actor_system sys{cfg};
  auto node = sys.middleman().remote_actor<drover::supervisor_actor>(
    host, static_cast<uint16_t>(port));
  if (!node) {
    std::cerr << "droverctl: cannot reach " << host << ':' << port << ": "
              << sys.render(node.error()) << '\n';
    return 1;
  }
  int rc = 1;
  caf::scoped_actor self{sys};
  self
    ->request(*node, std::chrono::milliseconds{timeout_ms},
              drover::describe_atom::value)
    .receive(
      [&](drover::tree_node& tree) {
        if (vm.count("json"))
          std::cout << drover::to_json(tree) << '\n';
        else
          print_tree(tree, 0);
        rc = 0;
      },
      [&](caf::error& err) {
        std::cerr << "droverctl: " << sys.render(err) << '\n';
      });
  return rc;
}
