// Tests of the built-in `sleep` job type, driven through a handler_registry
// and a task_context like the worker drives them (the helpers are in
// tests/support/builtin_jobs.hpp): the handler runs on a thread of its own
// while the test watches its progress reports and cancels it. Nothing
// sleeps: the test waits for events (a progress report, the outcome) with
// generous deadlines.

#include "support/builtin_jobs.hpp"

#include "runtime/task.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace drover;
using namespace drover::testing::builtin_jobs;
using namespace std::chrono_literals;
using std::chrono::milliseconds;
using std::chrono::steady_clock;

// -- sleep --------------------------------------------------------------------

TEST_CASE("sleep: ms 0 succeeds at once", "[sleep]") {
  job_run job{"sleep", R"({"ms": 0, "steps": 5})"};
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::succeeded);
  CHECK(outcome.result() == R"({"slept_ms":0})");
  CHECK(job.sink().updates().empty());
}

TEST_CASE("sleep: reports progress after each of K steps", "[sleep]") {
  SECTION("four steps") {
    job_run job{"sleep", R"({"ms": 40, "steps": 4})"};
    auto outcome = job.outcome();
    CHECK(outcome.result() == R"({"slept_ms":40})");
    CHECK(job.running_time() >= 40ms);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 4);
    for (size_t i = 0; i < 4; ++i) {
      CHECK(updates[i].percent == 25.0 * static_cast<double>(i + 1));
      CHECK(updates[i].stage.empty());
    }
  }
  SECTION("three steps") {
    job_run job{"sleep", R"({"ms": 10, "steps": 3})"};
    CHECK(job.outcome().outcome() == completion_outcome::succeeded);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 3);
    CHECK(updates[0].percent == Approx(100.0 / 3));
    CHECK(updates[1].percent == Approx(200.0 / 3));
    CHECK(updates[2].percent == 100);
  }
  SECTION("steps defaults to 1") {
    job_run job{"sleep", R"({"ms": 5})"};
    CHECK(job.outcome().outcome() == completion_outcome::succeeded);
    auto updates = job.sink().updates();
    REQUIRE(updates.size() == 1);
    CHECK(updates[0].percent == 100);
  }
  SECTION("zero steps report nothing") {
    job_run job{"sleep", R"({"ms": 5, "steps": 0})"};
    CHECK(job.outcome().result() == R"({"slept_ms":5})");
    CHECK(job.sink().updates().empty());
  }
}

TEST_CASE("sleep: cancel interrupts a long sleep at once", "[sleep]") {
  // An hour in 10000 steps: the first report comes after 360 ms.
  job_run job{"sleep", R"({"ms": 3600000, "steps": 10000})"};
  REQUIRE(job.sink().wait_for_count(1));
  auto cancelled_at = steady_clock::now();
  job.ctx().request_cancel();
  auto outcome = job.outcome();
  CHECK(outcome.outcome() == completion_outcome::cancelled);
  CHECK(steady_clock::now() - cancelled_at < 5s);
  CHECK(job.sink().updates().front().percent == Approx(0.01));
}

TEST_CASE("sleep: invalid input fails permanently with a specific message",
          "[sleep]") {
  struct example {
    std::string input;
    std::string message_part;
  };
  std::vector<example> examples{
      {"", "input must be a JSON object, got nothing"},
      {"{", "input is not valid JSON"},
      {"5", "input must be a JSON object, got a number"},
      {R"({})", "'ms' is required"},
      {R"({"ms": "100"})",
       "ms must be an integer in [0, 86400000], got a string"},
      {R"({"ms": -1})", "ms must be an integer in [0, 86400000], got -1"},
      {R"({"ms": 1.5})", "got 1.5"},
      {R"({"ms": 86400001})", "got 86400001"},
      {R"({"ms": 1e400})", "got inf"},
      {R"({"ms": 10, "steps": 10001})",
       "steps must be an integer in [0, 10000], got 10001"},
      {R"({"ms": 10, "steps": null})",
       "steps must be an integer in [0, 10000], got null"},
      {R"({"ms": 10, "seconds": 1})",
       "unknown key 'seconds' (expected: ms, steps, tokens)"},
      {R"({"ms": 10, "ms": 20})", "duplicate key 'ms'"},
      {R"({"ms": 0, "tokens": -1})",
       "tokens must be an integer in [0, 1000000], got -1"},
      {R"({"ms": 0, "tokens": 1000001})", "got 1000001"},
  };
  for (const auto& ex : examples) {
    INFO("input: " << ex.input);
    require_invalid_input(run_job("sleep", ex.input), ex.message_part);
  }
}
