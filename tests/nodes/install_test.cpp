// Drover as a CMake package (issue 14; docs/custom_workers.md,
// docs/client.md): the build is installed into a temporary prefix,
// examples/custom_worker and examples/client are configured and built as
// projects of their own against that prefix only; the worker program joins
// a real coordinator as a worker node and runs its own job type there, and
// the client program submits jobs of that type and follows them.

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

/// The job's record as droverctl prints it (the HTTP API's JSON).
std::string record_of(cluster& c, const std::string& job) {
  auto [rc, out] = droverctl({"get", job, "--port", c.admin, "--json"});
  INFO(out);
  REQUIRE(rc == 0);
  return out;
}

} // namespace

TEST_CASE("install: a worker program and a client program built against "
          "the installed package run a job type of their own on a real "
          "coordinator",
          "[install][cluster]") {
  scratch_dir dir{"drover-install"};
  auto prefix = dir.path() + "/prefix";
  // Only the prefix: CMAKE_PREFIX_PATH is the one place the example
  // projects learn where Drover is, and the source tree is never on their
  // include path.
  step(
      {DROVER_CMAKE_COMMAND, "--install", DROVER_BUILD_DIR, "--prefix", prefix},
      120s);
  auto build_example = [&](const std::string& name) {
    auto build = dir.path() + "/" + name;
    step({DROVER_CMAKE_COMMAND, "-S",
          std::string{DROVER_SOURCE_DIR} + "/examples/" + name, "-B", build,
          "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_BUILD_TYPE=Release"},
         120s);
    step({DROVER_CMAKE_COMMAND, "--build", build}, 300s);
    return build;
  };
  auto worker_bin = build_example("custom_worker") + "/prime_worker";
  auto client_bin = build_example("client") + "/batch_client";

  cluster c;
  c.start_coordinator({"--remote-job-types", "count_primes"});
  std::vector<std::string> args{worker_bin,
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

  // The client program submits a batch of the worker's type and follows
  // each job to its result.
  auto [rc, out] = run_to_exit({client_bin, "--node", "127.0.0.1:" + c.admin,
                                "--type", "count_primes", "--input", "100000",
                                "--count", "3", "--timeout-s", "60"},
                               90s);
  INFO(out);
  INFO(tail_of(log));
  CHECK(rc == 0);
  std::vector<std::string> jobs;
  for (auto at = out.find("submitted "); at != std::string::npos;
       at = out.find("submitted ", at + 1))
    jobs.push_back(out.substr(at + 10, out.find(' ', at + 10) - at - 10));
  REQUIRE(jobs.size() == 3);
  for (const auto& job : jobs) {
    INFO(job);
    // primes below 100,000: 9592
    CHECK_THAT(out, Catch::Contains(
                        job + R"(: completed {"below":100000,"primes":9592})"));
    CHECK(c.events(job, completed_kind) == 1);
    auto rec = record_of(c, job);
    CHECK_THAT(rec, Catch::Contains(R"("worker_id":"primes/)")); // ran there
  }

  // Input its handler refuses fails for good, on the worker: the
  // coordinator has no handler for the type, so it cannot check the input
  // at submit time; no retry follows.
  auto [brc, bout] = run_to_exit(
      {client_bin, "--node", "127.0.0.1:" + c.admin, "--type", "count_primes",
       "--input", R"("many")", "--count", "1", "--timeout-s", "60"},
      90s);
  INFO(bout);
  CHECK(brc == 1);
  CHECK_THAT(bout, Catch::Contains("failed invalid_input: input: an integer"));
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
  refused({"--roles", "coordinator", "--admin-port", "0", "--cluster-port", "0",
           "--remote-job-types", "sleep"},
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
