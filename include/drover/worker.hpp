#pragma once

// Drover as a library: a program of your own that is a Drover node with
// your job types added (docs/custom_workers.md). Link Drover::worker.
//
//   #include <drover/worker.hpp>
//
//   int main(int argc, char** argv) {
//     drover::node_program program;
//     program.name = "thumbnailer";
//     program.register_handlers = [](drover::handler_registry& handlers) {
//       return handlers.register_handler(
//           "thumbnail", [](drover::task_context& ctx) {
//             ctx.progress(50, "resize");
//             return drover::task_outcome::success(R"({"ok": true})");
//           });
//     };
//     return drover::node_main(argc, argv, program);
//   }
//
// The program takes every option of drover-node and behaves the same; run
// it as a worker node of an existing cluster with
// `--roles worker --coordinator host:port ...`, and start the cluster's
// coordinators with `--remote-job-types thumbnail` so that they accept
// submissions of a type they do not run themselves.

#include "runtime/task.hpp"

#include <caf/error.hpp>

#include <functional>
#include <string>

namespace drover {

/// What a program adds to a plain drover-node.
struct node_program {
  /// Its name in messages (a bad option: "<name>: ... (see <name> --help)").
  std::string name = "drover-node";
  /// Registers its own job types next to the built-in exec and sleep; an
  /// error (a duplicate or invalid type) stops the start with exit 2.
  std::function<caf::error(handler_registry&)> register_handlers;
};

/// Runs the node until it is stopped (SIGINT or SIGTERM); returns the exit
/// code drover-node documents (0 stopped, 1 failed, 2 bad configuration,
/// 3 deposed coordinator). Call it once, from main, before any other thread
/// exists: it blocks the stop signals for every thread it starts.
int node_main(int argc, char** argv, const node_program& program = {});

} // namespace drover
