#include "runtime/exec_policy.hpp"

#include "runtime/errors.hpp"

#include <algorithm>
#include <cstdlib>

#include <sys/stat.h>

namespace drover {

const char* const fixed_exec_path = "/usr/local/bin:/usr/bin:/bin";

namespace {

/// What glibc removes from the environment of set-user-ID programs
/// (sysdeps/generic/unsecvars.h), minus TMPDIR: each makes the dynamic
/// loader or libc load code or data from a path the variable names.
/// LD_* is refused as a prefix on top of these.
constexpr const char* unsafe_variables[]
    = {"GCONV_PATH",       "GETCONF_DIR",  "HOSTALIASES", "LOCALDOMAIN",
       "LOCPATH",          "MALLOC_TRACE", "NIS_PATH",    "NLSPATH",
       "RESOLV_HOST_CONF", "RES_OPTIONS",  "TZDIR",       "PATH"};

/// A regular file with at least one execute bit.
bool executable_file(const std::string& path) {
  struct stat info;
  return stat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)
         && (info.st_mode & 0111) != 0;
}

/// `name` (no slash) on fixed_exec_path; "" if not found.
std::string look_up(const std::string& name) {
  std::string path_list = fixed_exec_path;
  size_t start = 0;
  while (start <= path_list.size()) {
    auto colon = path_list.find(':', start);
    auto dir = path_list.substr(
        start, colon == std::string::npos ? std::string::npos : colon - start);
    auto candidate = dir + "/" + name;
    if (executable_file(candidate))
      return candidate;
    if (colon == std::string::npos)
      break;
    start = colon + 1;
  }
  return {};
}

/// Short, printable rendering of a user-supplied program name.
std::string quoted(const std::string& text) {
  std::string out;
  for (auto c : text.substr(0, 200))
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7F) ? '?' : c;
  return "'" + out + (text.size() > 200 ? "...'" : "'");
}

} // namespace

caf::expected<std::vector<std::string>>
resolve_allow_list(const std::vector<std::string>& entries) {
  std::vector<std::string> result;
  for (const auto& entry : entries) {
    auto bad = [&entry](const std::string& why) {
      return make_error(errc::bad_config,
                        "exec-allow " + quoted(entry) + ": " + why);
    };
    if (entry.empty())
      return bad("empty entry");
    std::string path;
    if (entry.front() == '/') {
      path = entry;
    } else if (entry.find('/') != std::string::npos) {
      return bad("give an absolute path or a bare name looked up on "
                 + std::string{fixed_exec_path});
    } else {
      path = look_up(entry);
      if (path.empty())
        return bad("not found on " + std::string{fixed_exec_path});
    }
    if (!executable_file(path))
      return bad("'" + path + "' is not an executable regular file");
    if (std::find(result.begin(), result.end(), path) == result.end())
      result.push_back(std::move(path));
  }
  return result;
}

caf::expected<std::string> resolve_program(const exec_policy& policy,
                                           const std::string& program) {
  auto refuse = [](std::string why) {
    return make_error(errc::invalid_request, std::move(why));
  };
  if (program.empty())
    return refuse("argv[0] (the program) must not be empty");
  std::string path;
  if (program.find('/') != std::string::npos) {
    if (program.front() != '/' && !policy.allow_any)
      return refuse("program " + quoted(program)
                    + " must be an absolute path or a bare name");
    path = program;
  } else {
    path = look_up(program);
    if (path.empty()) {
      if (policy.allow_any)
        return make_error(errc::not_found, "cannot execute " + quoted(program)
                                               + ": not found on "
                                               + fixed_exec_path);
      return refuse("program " + quoted(program)
                    + " is not in this node's exec allow-list");
    }
  }
  if (policy.allow_any)
    return path;
  if (std::find(policy.allowed.begin(), policy.allowed.end(), path)
      == policy.allowed.end()) {
    auto what = path == program ? quoted(program)
                                : quoted(program) + " (" + path + ")";
    return refuse("program " + what + " is not in this node's exec allow-list"
                  + (policy.allowed.empty() ? " (exec is disabled: no "
                                              "--exec-allow is configured)"
                                            : ""));
  }
  return path;
}

bool reserved_exec_env(const std::string& name) {
  if (name.compare(0, 3, "LD_") == 0 || name.compare(0, 7, "DROVER_") == 0)
    return true;
  return std::any_of(std::begin(unsafe_variables), std::end(unsafe_variables),
                     [&name](const char* unsafe) { return name == unsafe; });
}

std::string exec_check(const exec_policy& policy, exec_request& req,
                       std::string& program_path) {
  if (req.argv.empty())
    return "argv must not be empty: its first element is the program";
  auto resolved = resolve_program(policy, req.argv.front());
  if (!resolved && !is(resolved.error(), errc::not_found)) {
    const auto& ctx = resolved.error().context();
    return ctx.match_elements<std::string>() ? ctx.get_as<std::string>(0)
                                             : describe(resolved.error());
  }
  // Not found in development mode: the exec itself reports it.
  program_path = resolved ? *resolved : req.argv.front();
  for (const auto& kv : req.env)
    if (reserved_exec_env(kv.first))
      return "env name " + quoted(kv.first)
             + " is reserved (PATH, LD_*, DROVER_* and the loader's "
               "variables are set by the node)";
  req.limits = policy.limits;
  auto lower = [](const char* name, const std::optional<uint64_t>& asked,
                  uint64_t node, uint64_t& out) -> std::string {
    if (!asked)
      return {};
    if (*asked < 1 || *asked > node)
      return std::string{"limits."} + name + " must be within [1, "
             + std::to_string(node) + "] (this node's limit), got "
             + std::to_string(*asked);
    out = *asked;
    return {};
  };
  const auto& node = policy.limits;
  auto& eff = req.limits;
  const auto& asked = req.requested;
  for (auto err :
       {lower("cpu_seconds", asked.cpu_seconds, node.cpu_seconds,
              eff.cpu_seconds),
        lower("address_space_mb", asked.address_space_mb, node.address_space_mb,
              eff.address_space_mb),
        lower("open_files", asked.open_files, node.open_files, eff.open_files),
        lower("processes", asked.processes, node.processes, eff.processes)})
    if (!err.empty())
      return err;
  return {};
}

std::vector<std::pair<std::string, std::string>>
exec_environment(const exec_request& req, const std::string& home,
                 const std::string& job_id, uint32_t attempt,
                 const std::string& checkpoint) {
  std::vector<std::pair<std::string, std::string>> env;
  auto set = [&env](const std::string& name, std::string value) {
    for (auto& kv : env)
      if (kv.first == name) {
        kv.second = std::move(value);
        return;
      }
    env.emplace_back(name, std::move(value));
  };
  set("PATH", fixed_exec_path);
  set("HOME", home.empty() ? "/" : home);
  for (const char* passed : {"LANG", "LC_ALL", "TZ"})
    if (const char* value = std::getenv(passed))
      set(passed, value);
  for (const auto& kv : req.env)
    set(kv.first, kv.second);
  set("DROVER_JOB_ID", job_id);
  set("DROVER_ATTEMPT", std::to_string(attempt));
  set("DROVER_CHECKPOINT", checkpoint);
  return env;
}

} // namespace drover
