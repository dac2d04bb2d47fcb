#pragma once

// Running `exec` programs as a user separate from the node's, without
// privileges (issue 11 item 3; docs/handlers.md "A user of their own",
// docs/security.md).
//
// The node keeps no capability (it never could setuid without becoming
// root again). Instead each program's child enters a user namespace of its
// own, and the node maps one id there to the same id outside with Debian's
// newuidmap/newgidmap (package uidmap; set-user-ID helpers that allow a
// user exactly the subordinate ids /etc/subuid and /etc/subgid grant it).
// The child then becomes that uid and gid and has no capability anywhere:
// outside its namespace it is an ordinary, different user. So the program
// cannot signal, ptrace or read the files of the node (mode 0600 and
// 0700 files of the node's user are closed to it), and RLIMIT_NPROC counts
// the programs' user, not the node's threads (still one user for all jobs:
// per-user, unless a pids cgroup limits each job). The node, which created
// the namespace, still signals the program and its group.
//
// What it needs: /usr/bin/newuidmap and /usr/bin/newgidmap, a range of the
// node user's in /etc/subuid and in /etc/subgid containing the id, and a
// kernel that lets unprivileged users create user namespaces (Debian's
// default). `check_exec_user` checks all three at start, the last by
// running /bin/true as that user.

#include <caf/error.hpp>

#include <cstdint>
#include <string>

namespace drover {

/// Checks that programs can run as `id` (see the file comment): not 0, not
/// this process's uid, within the subordinate ranges of this process's
/// user, the helpers installed, and /bin/true runs as it. errc::bad_config
/// naming what is missing.
caf::error check_exec_user(uint32_t id);

/// Maps `id` to itself (uid and gid) in the user namespace of process
/// `pid`, which must not be mapped yet: "" or why it could not.
std::string map_exec_user(int pid, uint32_t id);

} // namespace drover
