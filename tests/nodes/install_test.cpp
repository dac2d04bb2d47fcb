// Drover as a CMake package (issue 14; docs/custom_workers.md): the build
// is installed into a temporary prefix, examples/custom_worker is
// configured and built as a project of its own against that prefix only,
// and the program it makes joins a real coordinator as a worker node and
// runs its own job type there.

#include "support/cluster.hpp"
#include "support/process.hpp"
#include "support/scratch.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace std::chrono_literals;

namespace {

/// Runs a build step to completion; its output is shown on failure.
void step(std::vector<std::string> argv, std::chrono::seconds timeout) {
  auto [rc, out] = run_to_exit(std::move(argv), timeout);
  INFO(out);
  REQUIRE(rc == 0);
}

/// The job's record as droverctl prints it.
std::string record_of(cluster& c, const std::string& job) {
  auto [rc, out] = droverctl({"get", job, "--port", c.admin});
  INFO(out);
  REQUIRE(rc == 0);
  return out;
}

} // namespace

TEST_CASE("install: a worker program built against the installed package "
          "runs its own job type on a real coordinator",
          "[install][cluster]") {
  scratch_dir dir{"drover-install"};
  auto prefix = dir.path() + "/prefix";
  auto build = dir.path() + "/custom_worker";
  // Only the prefix: CMAKE_PREFIX_PATH is the one place the example
  // project learns where Drover is, and the source tree is never on its
  // include path.
  step({DROVER_CMAKE_COMMAND, "--install", DROVER_BUILD_DIR, "--prefix",
        prefix},
       120s);
  step({DROVER_CMAKE_COMMAND, "-S",
        std::string{DROVER_SOURCE_DIR} + "/examples/custom_worker", "-B", build,
        "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_BUILD_TYPE=Release"},
       120s);
  step({DROVER_CMAKE_COMMAND, "--build", build}, 300s);

  cluster c;
  c.start_coordinator({"--remote-job-types", "count_primes"});
  std::vector<std::string> args{build + "/prime_worker",
                                "--node-id",
                                "primes",
                                "--roles",
                                "worker",
                                "--coordinator",
                                c.coordinator_list(),
                                "--join-secret",
                                secret,
                                "--slots",
                                "cpu=1"};
  if (const char* user = process::run_as_user())
    args.insert(args.end(), {"--run-as", user});
  auto log = c.logs.path() + "/primes.log";
  process worker{args, log};
  {
    INFO(tail_of(log));
    REQUIRE(worker.wait_for_line("joined the coordinator", 30s));
  }

  SECTION("its job type completes with its result") {
    auto [rc, out] = droverctl(
        {"submit", "count_primes", "--port", c.admin, "--input", "100000"});
    INFO(out);
    REQUIRE(rc == 0);
    auto job = job_id_of(out);
    auto [wrc, wout]
        = run_to_exit({DROVER_CTL_BIN, "wait", job, "--port", c.admin}, 60s);
    INFO(wout);
    CHECK(wrc == 0);
    auto rec = record_of(c, job);
    INFO(rec);
    CHECK_THAT(rec, Catch::Contains("9592")); // primes below 100,000
    CHECK_THAT(rec, Catch::Contains("primes/")); // its worker: this node
    CHECK(c.events(job, completed_kind) == 1);
  }

  SECTION("input its handler refuses fails for good, on the worker") {
    // The coordinator has no handler for the type, so it cannot check the
    // input at submit time: the worker refuses it, and no retry follows.
    auto [rc, out] = droverctl(
        {"submit", "count_primes", "--port", c.admin, "--input", "\"many\""});
    INFO(out);
    REQUIRE(rc == 0);
    auto job = job_id_of(out);
    auto [wrc, wout]
        = run_to_exit({DROVER_CTL_BIN, "wait", job, "--port", c.admin}, 60s);
    INFO(wout);
    CHECK(wrc == 1);
    auto rec = record_of(c, job);
    INFO(rec);
    CHECK_THAT(rec, Catch::Contains("invalid_input"));
    CHECK(c.events(job, started_kind) == 1);
  }
}

TEST_CASE("install: remote job types are the coordinator's, and not the "
          "built-in ones",
          "[install]") {
  // Without --remote-job-types a coordinator refuses the type at submit
  // (nothing is created); naming a type it runs itself is a bad config.
  auto refused = [](std::vector<std::string> argv, const std::string& says) {
    argv.insert(argv.begin(), {DROVER_NODE_BIN, "--node-id", "refused"});
    auto [rc, out] = run_to_exit(std::move(argv));
    INFO(out);
    CHECK(rc == 2);
    CHECK_THAT(out, Catch::Contains(says));
    CHECK(out.find("ready") == std::string::npos);
  };
  refused({"--roles", "coordinator", "--admin-port", "0", "--cluster-port",
           "0", "--remote-job-types", "sleep"},
          "remote-job-types: 'sleep' is a type this program runs");
  refused({"--roles", "worker", "--coordinator", "127.0.0.1:1",
           "--remote-job-types", "x"},
          "--remote-job-types is for coordinators");
  refused({"--roles", "coordinator,worker", "--admin-port", "0",
           "--remote-job-types", "x"},
          "--remote-job-types is for coordinators with a --cluster-port");
  cluster c;
  c.start_coordinator();
  auto [rc, out] = droverctl(
      {"submit", "count_primes", "--port", c.admin, "--input", "100"});
  INFO(out);
  CHECK(rc == 1);
  CHECK_THAT(out, Catch::Contains("unknown job type 'count_primes'"));
  CHECK(scalar(c.url(), "SELECT count(*) FROM drover.jobs") == 0);
}
