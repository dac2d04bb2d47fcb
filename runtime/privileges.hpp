#pragma once

// Who a node runs as (issue 11 item 3; docs/security.md, "exec").
//
// A node never runs jobs as root. Started as root, it needs --run-as USER:
// right after parsing its configuration (the config file may be readable
// by root only) and before it starts a thread, opens a port or connects to
// PostgreSQL, it switches to that account for good — supplementary groups,
// real, effective and saved group and user ids — and checks that it cannot
// switch back. Everything after that, in-process handlers and exec children
// included, runs unprivileged; ports below 1024 are therefore refused
// (put a reverse proxy in front). Started as root without --run-as it
// refuses to start. Started as an ordinary user, --run-as may only name
// that same user.
//
// Linux (glibc): setresuid applies to every thread, but this is meant to
// run while the process has one.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <string>
#include <sys/types.h>

namespace drover {

struct unix_account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};

/// Looks `name` up in the user database. errc::bad_config if it does not
/// exist or is root (uid 0).
caf::expected<unix_account> find_account(const std::string& name);

/// Applies --run-as as described above; `name` empty = not given.
/// `low_ports` = the node would listen on a port below 1024. caf::none when
/// the process may go on (switched, or nothing to switch), else
/// errc::bad_config with one line saying why and what to do.
caf::error enter_run_as(const std::string& name, bool low_ports);

} // namespace drover
