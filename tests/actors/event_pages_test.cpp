// Reading a job's log on from a sequence, a page at a time: the stores'
// (events_atom, job_id, after, limit) (actors/store.hpp) and the event
// stream that reads a long log that way (gateway/job_stream.hpp): each
// read asks for the events after the last one read, a full page is
// followed at once, and whether the job ended is learnt across pages.

#include "actors/api.hpp"
#include "actors/job_system.hpp"
#include "gateway/job_stream.hpp"
#include "runtime/errors.hpp"
#include "runtime/task.hpp"
#include "runtime/typed_forward.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;

namespace {

/// A job system in this process (memory store, one slot) whose one job
/// type, `hold`, runs until cancelled.
struct node {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  supervisor_actor root;
  api_actor api;

  node() : sys(testing::real_config(cfg)) {
    auto handlers = std::make_shared<handler_registry>();
    REQUIRE_FALSE(handlers->register_handler("hold", [](task_context& ctx) {
      while (!ctx.wait_for_cancel(20ms)) {
      }
      return task_outcome::cancelled();
    }));
    job_system_config jc;
    jc.slots = {{"cpu", 1}};
    jc.handlers = handlers;
    auto sup = spawn_supervisor(
        sys, {"node:local", {}, {job_system_child(jc, handles)}});
    REQUIRE(sup);
    root = *sup;
    api = spawn_api(sys, handles, root);
  }

  ~node() {
    caf::scoped_actor self{sys};
    self->send_exit(api, caf::exit_reason::user_shutdown);
    self->monitor(root);
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
  }
};

/// What a stream sent: (event name, id) pairs, and whether it ended.
struct collected {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<std::pair<std::string, uint64_t>> events;
  bool ended = false;

  http::stream_sink sink() {
    http::stream_sink s;
    s.emit = [this](const std::string& name, uint64_t id, const std::string&) {
      std::lock_guard<std::mutex> guard{mx};
      events.emplace_back(name, id);
      cv.notify_all();
      return true;
    };
    s.keepalive = [] { return true; };
    s.end = [this] {
      std::lock_guard<std::mutex> guard{mx};
      ended = true;
      cv.notify_all();
    };
    return s;
  }

  /// Waits (at most 30 s) until `done` holds of what was sent.
  template <class Pred>
  bool wait(Pred done) {
    std::unique_lock<std::mutex> lock{mx};
    return cv.wait_for(lock, 30s, [&] { return done(*this); });
  }
};

template <class T, class... Ts>
T ask(caf::scoped_actor& self, const api_actor& api, Ts&&... xs) {
  T out{};
  self->request(api, 10s, std::forward<Ts>(xs)...)
      .receive([&](T& x) { out = std::move(x); },
               [](caf::error& err) { FAIL(describe(err)); });
  return out;
}

/// The log reads a stream made: `after` of each read of a range, and how
/// many reads of the whole log.
struct reads {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<uint64_t> afters;
  int whole = 0;
};

/// A node API in front of `api` that records the stream's log reads.
api_actor spawn_recorder(caf::actor_system& sys, api_actor api,
                         std::shared_ptr<reads> r) {
  return sys.spawn([api, r](api_actor::pointer self) {
    return behavior_of<api_actor>(forward_handlers<api_actor>(
        [self, api, r](auto reply, auto&... xs) ->
        typename decltype(reply)::result {
          using args_t = std::tuple<std::decay_t<decltype(xs)>...>;
          if constexpr (std::is_same_v<args_t,
                                       std::tuple<events_atom, std::string,
                                                  uint64_t, uint32_t>>) {
            std::lock_guard<std::mutex> guard{r->mx};
            r->afters.push_back(std::get<2>(std::tie(xs...)));
            r->cv.notify_all();
          } else if constexpr (std::is_same_v<
                                   args_t,
                                   std::tuple<events_atom, std::string>>) {
            std::lock_guard<std::mutex> guard{r->mx};
            ++r->whole;
          }
          return self->delegate(api, std::move(xs)...);
        }));
  });
}

std::vector<uint64_t> ids_of(collected& c) {
  std::lock_guard<std::mutex> guard{c.mx};
  std::vector<uint64_t> ids;
  for (const auto& [name, id] : c.events)
    if (id != 0)
      ids.push_back(id);
  return ids;
}

} // namespace

TEST_CASE("a long log is read a page at a time: by the stores' ranges and "
          "by a stream, which learns the job's end across pages",
          "[stream][store]") {
  node n;
  caf::scoped_actor self{n.sys};
  submit_request req;
  req.type = "hold";
  req.input = "{}";
  // While the job system starts, the queue answers `unavailable` (retry):
  // the submit is retried as a client would, for 30 s at most.
  job_record rec;
  auto start_deadline = std::chrono::steady_clock::now() + 30s;
  for (bool retry = true; retry;) {
    retry = false;
    self->request(n.api, 10s, submit_atom::value, req)
        .receive([&](job_record& r) { rec = std::move(r); },
                 [&](caf::error& err) {
                   retry = is(err, errc::unavailable)
                           && std::chrono::steady_clock::now() < start_deadline;
                   if (!retry)
                     FAIL(describe(err));
                 });
    if (retry) // the client's backoff
      self->receive(caf::after(20ms) >> [] {});
  }
  const auto id = rec.job_id;
  auto store = n.handles->store();
  // Running: `submitted`, `started` (and maybe `queued`) are in the log.
  // Its transitions are announced to subscribers: waited for, 30 s at most.
  CHECK(ask<ok_atom>(self, n.api, subscribe_atom::value, id, caf::actor{self},
                     changed_atom::value)
        == ok_atom::value);
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (ask<job_record>(self, n.api, get_atom::value, id).status
             != job_status::processing
         && std::chrono::steady_clock::now() < deadline)
    self->receive([](changed_atom, std::string&) {},
                  [](progress_atom, progress_update&) {},
                  caf::after(1s) >> [] {});
  auto running = ask<job_record>(self, n.api, get_atom::value, id);
  REQUIRE(running.status == job_status::processing);
  // 2,500 progress snapshots more, written as a worker's would be.
  std::vector<job_event> snapshots;
  for (int i = 1; i <= 2500; ++i) {
    job_event ev;
    ev.job_id = id;
    ev.kind = event_kind::progressed;
    ev.attempt = running.attempt;
    ev.at_ms = running.started_at_ms + i;
    ev.progress.job_id = id;
    ev.progress.attempt = running.attempt;
    ev.progress.percent = i / 50.0;
    ev.progress.at_ms = ev.at_ms;
    snapshots.push_back(std::move(ev));
  }
  self->request(store, 10s, append_atom::value, std::move(snapshots))
      .receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); });
  auto all = ask<std::vector<job_event>>(self, n.api, events_atom::value, id);
  REQUIRE(all.size() > 2500);
  const auto last = all.back().sequence;

  // The node API's (the store's) ranges: the same events, page by page.
  std::vector<job_event> paged;
  for (uint64_t after = 0;;) {
    auto page = ask<std::vector<job_event>>(self, n.api, events_atom::value, id,
                                            after, uint32_t{1000});
    REQUIRE(page.size() <= 1000);
    if (page.empty())
      break;
    CHECK(page.front().sequence == after + 1);
    after = page.back().sequence;
    paged.insert(paged.end(), page.begin(), page.end());
  }
  CHECK(paged == all);
  for (uint32_t bad : {uint32_t{0}, uint32_t{10001}}) {
    caf::error refused;
    self->request(n.api, 10s, events_atom::value, id, uint64_t{0}, bad)
        .receive([](std::vector<job_event>&) {},
                 [&](caf::error& err) { refused = err; });
    CHECK(is(refused, errc::invalid_request));
  }
  CHECK(ask<std::vector<job_event>>(self, n.api, events_atom::value,
                                    std::string{"jnosuchjob00000"}, uint64_t{0},
                                    uint32_t{10})
            .empty());

  // A stream from the start sends every event of the three pages once, in
  // order (progress snapshots directly followed by another may be skipped),
  // and the last one; it stays open while the job runs.
  // It reads the log from the start once (three pages), then only what
  // follows the last event read: its keep-alive reads ask for the events
  // after `last` (before, each read was the whole log).
  collected live;
  auto seen = std::make_shared<reads>();
  auto recorder = spawn_recorder(n.sys, n.api, seen);
  auto stream
      = http::spawn_job_stream(n.sys, recorder, 10s, 100ms, id, 0, live.sink());
  REQUIRE(live.wait([&](collected& c) {
    return !c.events.empty() && c.events.back().second == last;
  }));
  {
    std::unique_lock<std::mutex> lock{seen->mx};
    REQUIRE(seen->cv.wait_for(lock, 30s, [&] {
      return std::count(seen->afters.begin(), seen->afters.end(), last) >= 2;
    }));
    CHECK(seen->whole == 0);
    CHECK(std::count(seen->afters.begin(), seen->afters.end(), 0) == 1);
    for (size_t i = 1; i < seen->afters.size(); ++i)
      CHECK(seen->afters[i] >= seen->afters[i - 1]);
  }
  auto ids = ids_of(live);
  for (size_t i = 1; i < ids.size(); ++i)
    CHECK(ids[i] > ids[i - 1]);
  CHECK(ids.front() == 1);
  {
    std::lock_guard<std::mutex> guard{live.mx};
    CHECK_FALSE(live.ended);
  }
  // Cancelled: the rest of the log, then the end.
  CHECK(ask<ok_atom>(self, n.api, cancel_atom::value, id) == ok_atom::value);
  REQUIRE(live.wait([](collected& c) { return c.ended; }));
  {
    std::lock_guard<std::mutex> guard{live.mx};
    REQUIRE_FALSE(live.events.empty());
    CHECK(live.events.back().first == "cancelled");
  }

  // Resumed after sequence 2,000 of the finished job: the end was written
  // after it, learnt from the later pages; the events after it, then the
  // end. Resumed after its last event: nothing, then the end (its terminal
  // event lies before, in the first pages).
  auto final_log
      = ask<std::vector<job_event>>(self, n.api, events_atom::value, id);
  for (uint64_t after : {uint64_t{2000}, final_log.back().sequence}) {
    INFO("after " << after);
    collected resumed;
    http::spawn_job_stream(n.sys, n.api, 10s, 100ms, id, after, resumed.sink());
    REQUIRE(resumed.wait([](collected& c) { return c.ended; }));
    for (auto x : ids_of(resumed))
      CHECK(x > after);
    auto got = ids_of(resumed);
    if (after < final_log.back().sequence) {
      REQUIRE_FALSE(got.empty());
      CHECK(got.back() == final_log.back().sequence);
    } else {
      CHECK(got.empty());
    }
  }
  self->send(n.api, unsubscribe_atom::value, id, caf::actor{self});
  self->send_exit(stream, caf::exit_reason::user_shutdown);
  self->send_exit(recorder, caf::exit_reason::user_shutdown);
}
