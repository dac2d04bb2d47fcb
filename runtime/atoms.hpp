#pragma once

// Message tags shared by Drover's actors. CAF 0.17 atoms: at most 10 chars.

#include <caf/atom.hpp>

namespace drover {

/// Ask an actor to describe itself (supervisors answer with a tree_node).
using describe_atom = caf::atom_constant<caf::atom("describe")>;

/// Ask for an orderly stop (a gate: refuse new work, finish what runs).
using stop_atom = caf::atom_constant<caf::atom("stop")>;

/// Liveness probe; the answer is `ok_atom`.
using ping_atom = caf::atom_constant<caf::atom("ping")>;

using ok_atom = caf::atom_constant<caf::atom("ok")>;

} // namespace drover
