// Tokens taken mid-attempt (task_context::take_tokens): the authority's
// grants (flow_control::take_tokens), a worker node's coalescing
// (token_relay) and the handler's blocking take.

#include "runtime/errors.hpp"
#include "runtime/flow_control.hpp"
#include "runtime/task.hpp"
#include "runtime/token_relay.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;

namespace {

flow_control limiter(double rate, double burst, int64_t now) {
  flow_limits limits;
  limits.rates["smtp"] = rate_limit{rate, burst, {}};
  return flow_control{limits, now};
}

} // namespace

TEST_CASE("tokens: the authority grants nothing in its first block, then at "
          "most one block of its rate per answer",
          "[tokens]") {
  auto fc = limiter(100, 50, 0);
  auto flow = fc.intern("smtp", "");
  // A new authority (a restart, a takeover) waits one block: a grant of
  // the previous one may still be spent.
  auto g = fc.take_tokens(flow, 10, 50);
  REQUIRE(g);
  CHECK(g->granted == 0);
  CHECK(g->retry_ms == token_block_ms - 50);
  // At 1 s the bucket is full (50): 100/s grants 10 per answer at most.
  g = fc.take_tokens(flow, 40, 1000);
  REQUIRE(g);
  CHECK(g->granted == 10);
  CHECK(g->retry_ms >= 1);
  g = fc.take_tokens(flow, 3, 1000);
  REQUIRE(g);
  CHECK(g->granted == 3);
  CHECK(g->retry_ms == 0);
  // 37 left: the bucket never gives more than it holds.
  uint32_t total = 0;
  for (int i = 0; i < 10; ++i)
    total += fc.take_tokens(flow, 10, 1000)->granted;
  CHECK(total == 37);
  g = fc.take_tokens(flow, 1, 1000);
  REQUIRE(g);
  CHECK(g->granted == 0);
  CHECK(g->retry_ms == 10); // one token per 10 ms at 100/s
  // Dispatch and takes share one bucket: granted counts both.
  CHECK(fc.take_tokens(flow, 1, 1010)->granted == 1);
}

TEST_CASE("tokens: a slow limit grants one token per answer, and a job without "
          "a rate limit is refused",
          "[tokens]") {
  auto fc = limiter(2, 1, 0);
  auto flow = fc.intern("smtp", "");
  auto g = fc.take_tokens(flow, 5, 500); // one token by now, burst 1
  REQUIRE(g);
  CHECK(g->granted == 1);
  CHECK(g->retry_ms == 500);
  auto none = fc.take_tokens(fc.intern("", ""), 1, 500);
  REQUIRE_FALSE(none);
  CHECK(is(none.error(), errc::invalid_request));
  auto unknown = fc.take_tokens(99, 1, 500);
  REQUIRE_FALSE(unknown);
}

TEST_CASE("tokens: a node coalesces its takes per key, one request on its "
          "way, and shares each answer out in order",
          "[tokens]") {
  token_relay relay;
  struct got {
    uint32_t granted = 0;
    int64_t retry_ms = -1;
    caf::error err;
    bool answered = false;
  };
  std::vector<got> answers(4);
  auto fn = [&](size_t i) {
    return [&answers, i](uint32_t g, int64_t r, caf::error e) {
      answers[i] = {g, r, std::move(e), true};
    };
  };
  auto first = relay.add("smtp", "j1", 1, 2, fn(0));
  REQUIRE(first);
  CHECK(first->key == "smtp");
  CHECK(first->job_id == "j1");
  CHECK(first->wanted == 2);
  // While it is on its way, two more takes wait; another key goes at once.
  CHECK_FALSE(relay.add("smtp", "j2", 1, 3, fn(1)));
  CHECK_FALSE(relay.add("smtp", "j3", 4, 1, fn(2)));
  auto other = relay.add("push", "j4", 1, 1, fn(3));
  REQUIRE(other);
  CHECK(other->key == "push");
  CHECK(relay.waiting() == 4);
  // The answer goes to the first take; the two waiting go as one request.
  auto next = relay.answered("smtp", 2, 0, {});
  CHECK(answers[0].answered);
  CHECK(answers[0].granted == 2);
  CHECK(answers[0].retry_ms == 0);
  REQUIRE(next);
  CHECK(next->job_id == "j2");
  CHECK(next->attempt == 1);
  CHECK(next->wanted == 4);
  // 3 of 4 granted: j2 gets its 3, j3 nothing, and asks again later.
  CHECK_FALSE(relay.answered("smtp", 3, 25, {}));
  CHECK(answers[1].granted == 3);
  CHECK(answers[1].retry_ms == 0);
  CHECK(answers[2].answered);
  CHECK(answers[2].granted == 0);
  CHECK(answers[2].retry_ms == 25);
  // A lost connection: the take asks again after the reconnect delay.
  CHECK_FALSE(relay.answered("push", 0, 0,
                             make_error(errc::unavailable, "connection lost")));
  CHECK(answers[3].granted == 0);
  CHECK_FALSE(answers[3].err);
  CHECK(answers[3].retry_ms == token_relay::reconnect_retry_ms);
  CHECK(relay.waiting() == 0);
  // An answer nobody asked for changes nothing.
  CHECK_FALSE(relay.answered("smtp", 5, 0, {}));
}

TEST_CASE("tokens: a stale attempt's error reaches its own takes only",
          "[tokens]") {
  token_relay relay;
  std::vector<caf::error> errors(2);
  std::vector<int64_t> retries(2, -1);
  auto fn = [&](size_t i) {
    return [&, i](uint32_t, int64_t r, caf::error e) {
      errors[i] = std::move(e);
      retries[i] = r;
    };
  };
  REQUIRE(relay.add("smtp", "old", 1, 1, fn(0)));
  REQUIRE_FALSE(relay.add("smtp", "live", 2, 1, fn(1)));
  // The request names "old": its error is old's; "live" goes next.
  auto next = relay.answered("smtp", 0, 0,
                             make_error(errc::stale_attempt, "superseded"));
  CHECK(is(errors[0], errc::stale_attempt));
  REQUIRE(next);
  CHECK(next->job_id == "live");
  auto none = relay.answered("smtp", 0, 0,
                             make_error(errc::stale_attempt, "superseded"));
  CHECK_FALSE(none);
  CHECK(is(errors[1], errc::stale_attempt));
}

namespace {

/// Answers each take on another thread, as the worker's actor would.
class granting_sink : public task_sink {
public:
  explicit granting_sink(std::vector<std::pair<uint32_t, int64_t>> answers)
      : answers_(std::move(answers)) {}
  void on_progress(const progress_update&) override {}
  void on_checkpoint(const std::string&, uint32_t,
                     const std::string&) override {}
  bool on_take(const std::string&, uint32_t, uint64_t seq,
               uint32_t wanted) override {
    if (on_ask)
      on_ask();
    std::lock_guard<std::mutex> guard{mx_};
    asked.push_back(wanted);
    if (next_ >= answers_.size())
      return true; // never answered
    auto a = answers_[next_++];
    threads_.emplace_back(
        [this, seq, a] { ctx->tokens_answered(seq, a.first, a.second, {}); });
    return true;
  }
  ~granting_sink() override {
    for (auto& t : threads_)
      t.join();
  }
  task_context* ctx = nullptr;
  std::vector<uint32_t> asked;
  std::function<void()> on_ask;

private:
  std::mutex mx_;
  std::vector<std::pair<uint32_t, int64_t>> answers_;
  size_t next_ = 0;
  std::vector<std::thread> threads_;
};

int64_t no_clock() {
  return 0;
}

} // namespace

TEST_CASE("tokens: a handler's take waits for every token, asking again "
          "after each partial grant",
          "[tokens]") {
  auto sink = std::make_shared<granting_sink>(
      std::vector<std::pair<uint32_t, int64_t>>{{2, 5}, {0, 5}, {3, 0}});
  task_context ctx{"j", 1, "", "", sink, no_clock};
  sink->ctx = &ctx;
  CHECK_FALSE(ctx.take_tokens(5, 10s));
  CHECK(sink->asked == std::vector<uint32_t>{5, 3, 3});
  // Nothing more is answered: the deadline says how many were taken.
  auto err = ctx.take_tokens(2, 50ms);
  REQUIRE(err);
  CHECK(is(err, errc::rate_limited));
  CHECK(describe(err).find("0 of 2 tokens taken") != std::string::npos);
}

TEST_CASE("tokens: a cancel ends a waiting take, and a sink without a limiter "
          "refuses at once",
          "[tokens]") {
  auto sink = std::make_shared<granting_sink>(
      std::vector<std::pair<uint32_t, int64_t>>{});
  task_context ctx{"j", 1, "", "", sink, no_clock};
  sink->ctx = &ctx;
  // Cancelled while the take is on its way (never answered).
  sink->on_ask = [&] { ctx.request_cancel(); };
  auto err = ctx.take_tokens(1, 60s);
  REQUIRE(err);
  CHECK(is(err, errc::unavailable));
  CHECK(describe(err).find("cancelled") != std::string::npos);
  // The progress-only sinks of tests and tools have no limiter.
  struct plain_sink : task_sink {
    void on_progress(const progress_update&) override {}
    void on_checkpoint(const std::string&, uint32_t,
                       const std::string&) override {}
  };
  task_context plain{"j", 1, "", "", std::make_shared<plain_sink>(), no_clock};
  err = plain.take_tokens(1, 60s);
  REQUIRE(err);
  CHECK(is(err, errc::unavailable));
  CHECK_FALSE(plain.take_tokens(0, 1ms)); // nothing to take
}

TEST_CASE("tokens: a running job's takes leave the tokens promised to "
          "parked jobs woken for them",
          "[tokens]") {
  auto fc = limiter(10, 5, 0);
  auto flow = fc.intern("smtp", "");
  // Full (5) at 1 s; three jobs were woken from the gate for 3 of them.
  fc.woke("rsmtp", 3);
  auto g = fc.take_tokens(flow, 5, 1000);
  REQUIRE(g);
  CHECK(g->granted == 1); // block of 1 at 10/s, and only 2 are spare
  g = fc.take_tokens(flow, 5, 1000);
  CHECK(g->granted == 1);
  g = fc.take_tokens(flow, 5, 1000);
  CHECK(g->granted == 0);
  // 3 tokens, all promised: one more is 100 ms away.
  CHECK(g->retry_ms == 100);
  fc.unwoke("rsmtp");
  fc.unwoke("rsmtp");
  fc.unwoke("rsmtp");
  CHECK(fc.take_tokens(flow, 5, 1000)->granted == 1);
}
