// drover-node: one Drover node with the built-in job types (exec, sleep).
// Everything it does is drover::node_main (nodes/node_main.cpp); a team's
// own worker program is the same call with its job types added.

#include "drover/worker.hpp"

int main(int argc, char** argv) {
  return drover::node_main(argc, argv);
}
