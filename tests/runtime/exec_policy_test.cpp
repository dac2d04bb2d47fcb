// Tests of runtime/exec_policy: resolving programs against the allow-list,
// reserved environment names, limits a job may only lower, and the
// environment a program gets. The exec handler's use of them (what really
// runs, with which limits) is tested in builtin_handlers_control_test.cpp
// and builtin_handlers_exec_test.cpp.

#include "runtime/errors.hpp"
#include "runtime/exec_policy.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

using namespace drover;

namespace {

std::string message_of(const caf::error& err) {
  const auto& ctx = err.context();
  return ctx.match_elements<std::string>() ? ctx.get_as<std::string>(0)
                                           : describe(err);
}

exec_policy allowing(const std::vector<std::string>& entries) {
  exec_policy policy;
  auto allowed = resolve_allow_list(entries);
  REQUIRE(allowed);
  policy.allowed = *allowed;
  return policy;
}

} // namespace

TEST_CASE("resolve_allow_list: absolute paths kept, bare names looked up on "
          "the fixed PATH, anything else refused",
          "[exec_policy]") {
  auto ok = resolve_allow_list({"/bin/sh", "echo", "echo"});
  REQUIRE(ok);
  CHECK(*ok == std::vector<std::string>{"/bin/sh", "/usr/bin/echo"});
  auto bad = [](const std::string& entry) {
    auto result = resolve_allow_list({entry});
    REQUIRE(!result);
    CHECK(is(result.error(), errc::bad_config));
    return message_of(result.error());
  };
  CHECK_THAT(bad("bin/sh"), Catch::Contains("give an absolute path or a bare "
                                            "name"));
  CHECK_THAT(bad("drover-no-such-program"),
             Catch::Contains("not found on /usr/local/bin:/usr/bin:/bin"));
  CHECK_THAT(bad("/etc/passwd"),
             Catch::Contains("is not an executable regular file"));
  CHECK_THAT(bad("/usr/bin"),
             Catch::Contains("is not an executable regular file"));
  CHECK_THAT(bad(""), Catch::Contains("empty entry"));
}

TEST_CASE("resolve_program: the resolved path must be on the list",
          "[exec_policy]") {
  auto policy = allowing({"/bin/sh", "echo"});
  CHECK(resolve_program(policy, "/bin/sh") == std::string{"/bin/sh"});
  CHECK(resolve_program(policy, "echo") == std::string{"/usr/bin/echo"});
  CHECK(resolve_program(policy, "/usr/bin/echo")
        == std::string{"/usr/bin/echo"});
  // `sh` resolves to /usr/bin/sh on the fixed PATH: another string.
  auto sh = resolve_program(policy, "sh");
  REQUIRE(!sh);
  CHECK(message_of(sh.error())
        == "program 'sh' (/usr/bin/sh) is not in this node's exec allow-list");
  auto rel = resolve_program(policy, "../bin/sh");
  REQUIRE(!rel);
  CHECK_THAT(message_of(rel.error()),
             Catch::Contains("must be an absolute path or a bare name"));
  auto missing = resolve_program(policy, "drover-no-such-program");
  REQUIRE(!missing);
  CHECK(is(missing.error(), errc::invalid_request));
}

TEST_CASE("resolve_program: development mode allows any program",
          "[exec_policy]") {
  exec_policy any;
  any.allow_any = true;
  CHECK(resolve_program(any, "sh") == std::string{"/usr/bin/sh"});
  CHECK(resolve_program(any, "./script") == std::string{"./script"});
  auto missing = resolve_program(any, "drover-no-such-program");
  REQUIRE(!missing);
  CHECK(is(missing.error(), errc::not_found)); // the exec reports it
}

TEST_CASE("reserved environment names", "[exec_policy]") {
  for (auto name :
       {"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GCONV_PATH",
        "LOCPATH", "DROVER_CHECKPOINT", "DROVER_ANYTHING"})
    CHECK(reserved_exec_env(name));
  for (auto name : {"HOME", "LANG", "TMPDIR", "MY_LD_PRELOAD", "PATHS"})
    CHECK(!reserved_exec_env(name));
}

TEST_CASE("exec_check: job limits lower the node's, never raise them",
          "[exec_policy]") {
  exec_policy policy;
  policy.allow_any = true;
  policy.limits = {100, 2048, 256, 64};
  exec_request req;
  req.argv = {"true"};
  std::string program;
  CHECK(exec_check(policy, req, program).empty());
  CHECK(program == "/usr/bin/true");
  CHECK(req.limits.cpu_seconds == 100);
  req.requested.cpu_seconds = 10;
  req.requested.processes = 64;
  CHECK(exec_check(policy, req, program).empty());
  CHECK(req.limits.cpu_seconds == 10);
  CHECK(req.limits.processes == 64);
  CHECK(req.limits.address_space_mb == 2048);
  req.requested.address_space_mb = 2049;
  CHECK(exec_check(policy, req, program)
        == "limits.address_space_mb must be within [1, 2048] (this node's "
           "limit), got 2049");
}

TEST_CASE("exec_environment: fixed PATH, the job's env, the DROVER_ "
          "variables last",
          "[exec_policy]") {
  exec_request req;
  req.env = {{"A", "1"}, {"HOME", "/job-home"}};
  auto env = exec_environment(req, "/home/drover", "job-7", 3, "cp");
  auto value = [&env](const std::string& name) -> std::string {
    for (auto& kv : env)
      if (kv.first == name)
        return kv.second;
    return "<unset>";
  };
  CHECK(value("PATH") == fixed_exec_path);
  CHECK(value("HOME") == "/job-home");
  CHECK(value("A") == "1");
  CHECK(value("DROVER_JOB_ID") == "job-7");
  CHECK(value("DROVER_ATTEMPT") == "3");
  CHECK(value("DROVER_CHECKPOINT") == "cp");
  CHECK(value("USER") == "<unset>");
}
