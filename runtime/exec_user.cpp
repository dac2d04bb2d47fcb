#include "runtime/exec_user.hpp"

#include "runtime/errors.hpp"
#include "runtime/subprocess.hpp"

#include <cstring>
#include <fstream>
#include <string>

#include <pwd.h>
#include <unistd.h>

namespace drover {

namespace {

constexpr const char* newuidmap = "/usr/bin/newuidmap";
constexpr const char* newgidmap = "/usr/bin/newgidmap";

caf::error bad(uint32_t id, const std::string& what) {
  return make_error(errc::bad_config,
                    "exec-user-id " + std::to_string(id) + ": " + what);
}

/// True when `file` (/etc/subuid format "user:start:count") grants `name`
/// or `uid` a range holding `id`.
bool granted(const char* file, const std::string& name, uid_t uid,
             uint32_t id) {
  std::ifstream in{file};
  for (std::string line; std::getline(in, line);) {
    auto a = line.find(':');
    auto b = line.find(':', a == std::string::npos ? a : a + 1);
    if (a == std::string::npos || b == std::string::npos)
      continue;
    auto who = line.substr(0, a);
    if (who != name && who != std::to_string(uid))
      continue;
    try {
      auto start = std::stoull(line.substr(a + 1, b - a - 1));
      auto count = std::stoull(line.substr(b + 1));
      if (id >= start && id - start < count)
        return true;
    } catch (...) {
      continue; // not a range: ignored, as newuidmap does
    }
  }
  return false;
}

/// Runs `helper pid id id 1`: "" or what it said.
std::string run_map(const char* helper, int pid, uint32_t id) {
  subprocess_spec spec;
  spec.program = helper;
  auto n = std::to_string(id);
  spec.argv = {helper, std::to_string(pid), n, n, "1"};
  spec.clear_env = true;
  spec.kill_grace = std::chrono::milliseconds{1000};
  std::string said;
  auto keep = [&said](std::string_view bytes) {
    if (said.size() < 512)
      said.append(bytes.substr(0, 512 - said.size()));
  };
  auto result = run_subprocess(spec, keep, keep, nullptr);
  if (result.how == subprocess_result::status::exited && result.exit_code == 0)
    return {};
  while (!said.empty() && (said.back() == '\n' || said.back() == ' '))
    said.pop_back();
  return std::string{helper} + " failed"
         + (said.empty() ? std::string{} : ": " + said);
}

} // namespace

std::string map_exec_user(int pid, uint32_t id) {
  if (auto why = run_map(newuidmap, pid, id); !why.empty())
    return why;
  return run_map(newgidmap, pid, id);
}

caf::error check_exec_user(uint32_t id) {
  auto uid = getuid();
  if (id == 0)
    return bad(id, "programs never run as root");
  if (id == uid)
    return bad(id, "is the node's own uid; give an id of the node user's "
                   "subordinate range (/etc/subuid)");
  auto* pw = getpwuid(uid);
  std::string name = pw != nullptr ? pw->pw_name : std::to_string(uid);
  if (access(newuidmap, X_OK) != 0 || access(newgidmap, X_OK) != 0)
    return bad(id, "needs /usr/bin/newuidmap and /usr/bin/newgidmap "
                   "(Debian package uidmap)");
  if (!granted("/etc/subuid", name, uid, id)
      || !granted("/etc/subgid", name, uid, id))
    return bad(id, "not in a range /etc/subuid and /etc/subgid grant user '"
                       + name + "'");
  subprocess_spec spec;
  spec.program = "/bin/true";
  spec.argv = {"true"};
  spec.clear_env = true;
  spec.user_id = id;
  spec.map_user = [id](int pid) { return map_exec_user(pid, id); };
  auto result = run_subprocess(spec, {}, {}, nullptr);
  if (result.how == subprocess_result::status::exited && result.exit_code == 0)
    return caf::none;
  std::string why
      = !result.message.empty() ? result.message
        : result.how == subprocess_result::status::exited
            ? "exited with status " + std::to_string(result.exit_code)
            : result.step + ": " + std::strerror(result.error);
  return bad(id, "cannot run a program as this user (" + why + ")");
}

} // namespace drover
