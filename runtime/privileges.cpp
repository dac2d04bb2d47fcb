#include "runtime/privileges.hpp"

#include "runtime/errors.hpp"

#include <caf/expected.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

namespace drover {

namespace {

caf::error bad(std::string what) {
  return make_error(errc::bad_config, std::move(what));
}

} // namespace

caf::expected<unix_account> find_account(const std::string& name) {
  std::vector<char> buf(16 * 1024);
  passwd entry{};
  passwd* found = nullptr;
  int rc;
  while ((rc = getpwnam_r(name.c_str(), &entry, buf.data(), buf.size(), &found))
         == ERANGE)
    buf.resize(buf.size() * 2);
  if (rc != 0)
    return bad("run-as: cannot look up user '" + name
               + "': " + std::strerror(rc));
  if (found == nullptr)
    return bad("run-as: no such user '" + name
               + "' (create it, e.g. useradd --system --no-create-home "
                 "--shell /usr/sbin/nologin "
               + name + ")");
  if (found->pw_uid == 0)
    return bad("run-as: user '" + name
               + "' is root (uid 0); name an unprivileged account");
  unix_account account;
  account.name = name;
  account.uid = found->pw_uid;
  account.gid = found->pw_gid;
  account.home = found->pw_dir != nullptr ? found->pw_dir : "/";
  return account;
}

caf::error enter_run_as(const std::string& name, bool low_ports) {
  if (geteuid() != 0 && getuid() != 0) {
    if (name.empty())
      return caf::none;
    auto account = find_account(name);
    if (!account)
      return std::move(account.error());
    if (account->uid != geteuid())
      return bad("run-as " + name
                 + " needs root to switch users (running as "
                   "uid "
                 + std::to_string(geteuid()) + ")");
    return caf::none;
  }
  if (name.empty())
    return bad("refusing to run as root: jobs would run as root. Pass "
               "--run-as USER (an unprivileged account such as 'drover'; "
               "scripts/run creates it)");
  if (low_ports)
    return bad("run-as: ports below 1024 need root, which the node gives up "
               "before it listens; use a port of 1024 or above (e.g. behind "
               "a reverse proxy)");
  auto account = find_account(name);
  if (!account)
    return std::move(account.error());
  // Groups first: once the uid is gone, they can no longer be changed.
  if (initgroups(account->name.c_str(), account->gid) != 0)
    return bad("run-as " + name
               + ": initgroups failed: " + std::strerror(errno));
  if (setresgid(account->gid, account->gid, account->gid) != 0)
    return bad("run-as " + name
               + ": setresgid failed: " + std::strerror(errno));
  if (setresuid(account->uid, account->uid, account->uid) != 0)
    return bad("run-as " + name
               + ": setresuid failed: " + std::strerror(errno));
  // For good: no way back to root.
  if (setuid(0) == 0 || seteuid(0) == 0 || getuid() != account->uid
      || geteuid() != account->uid || getegid() != account->gid)
    return bad("run-as " + name + ": the switch did not hold; refusing to run");
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer builds only (scripts/test --asan): UBSan reads its
  // options (tests/ubsan.supp) from /proc/self/environ at its first report,
  // and a process whose uid just changed is not dumpable, which makes that
  // file root's: the suppressions would silently not apply. A release
  // build stays non-dumpable (what it read as root stays out of reach).
  prctl(PR_SET_DUMPABLE, 1);
#endif
  // The node's own environment (no thread runs yet); exec children get a
  // fixed environment of their own (runtime/exec_policy.hpp).
  setenv("HOME", account->home.c_str(), 1);
  setenv("USER", account->name.c_str(), 1);
  setenv("LOGNAME", account->name.c_str(), 1);
  return caf::none;
}

} // namespace drover
