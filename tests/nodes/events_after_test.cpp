// A page of a job's log through a gateway node's relay (nodes/events_after.hpp)
// whichever node-protocol version its coordinator speaks: a coordinator
// older than (events_atom, job_id, after, limit) (version 3) answers it
// `unexpected_message`, so the relay reads the whole log there and cuts
// the page itself; a version-3 coordinator is asked for the page. The
// coordinators are stand-ins that record what they are asked and answer
// from a log the test wrote.

#include "gateway/job_stream.hpp"
#include "nodes/events_after.hpp"
#include "nodes/node_roles.hpp"
#include "runtime/cluster_protocol.hpp"
#include "runtime/errors.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;

namespace {

constexpr uint32_t before_pages = paged_events_protocol - 1;

/// What a stand-in coordinator was asked: "whole <id>" or
/// "page <id> <after> <limit>".
struct recorder {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<std::string> calls;

  void add(std::string call) {
    std::lock_guard<std::mutex> guard{mx};
    calls.push_back(std::move(call));
    cv.notify_all();
  }

  /// Waits (at most 10 s) until `n` calls start with `prefix`.
  bool wait_for(const std::string& prefix, size_t n) {
    std::unique_lock<std::mutex> lock{mx};
    return cv.wait_for(lock, 10s, [&] { return counted(prefix) >= n; });
  }

  size_t count_starting(const std::string& prefix) {
    std::lock_guard<std::mutex> guard{mx};
    return counted(prefix);
  }

  /// (Under `mx`.)
  size_t counted(const std::string& prefix) const {
    return static_cast<size_t>(
        std::count_if(calls.begin(), calls.end(), [&](const std::string& c) {
          return c.compare(0, prefix.size(), prefix) == 0;
        }));
  }

  std::string all() {
    std::lock_guard<std::mutex> guard{mx};
    std::string out;
    for (const auto& c : calls)
      out += c + "; ";
    return out;
  }
};

/// Job `id`'s log of `n` events (n >= 2): submitted, checkpoints, completed.
std::vector<job_event> make_log(const std::string& id, uint64_t n) {
  std::vector<job_event> log;
  for (uint64_t seq = 1; seq <= n; ++seq) {
    job_event e;
    e.job_id = id;
    e.sequence = seq;
    e.attempt = 1;
    e.kind = seq == 1   ? event_kind::submitted
             : seq == n ? event_kind::completed
                        : event_kind::checkpointed;
    log.push_back(std::move(e));
  }
  return log;
}

/// A coordinator's node API holding the log `log` (of one job): the whole
/// log (not_found for another job), progress subscriptions (accepted), and
/// the page request only if `pages` (else CAF answers it
/// `unexpected_message`, as a coordinator of node protocol 2 does). Untyped
/// and typed as the API on arrival, as a gateway node types the handle any
/// coordinator's join returns.
api_actor spawn_coordinator(caf::actor_system& sys,
                            std::shared_ptr<const std::vector<job_event>> log,
                            std::shared_ptr<recorder> rec, bool pages) {
  auto whole =
      [log, rec](events_atom,
                 const std::string& id) -> caf::result<std::vector<job_event>> {
    rec->add("whole " + id);
    if (log->empty() || log->front().job_id != id)
      return make_error(errc::not_found, "no events of job '" + id + "'");
    return *log;
  };
  auto page = [log, rec](events_atom, const std::string& id, uint64_t after,
                         uint32_t limit) {
    rec->add("page " + id + " " + std::to_string(after) + " "
             + std::to_string(limit));
    std::vector<job_event> out;
    for (const auto& e : *log)
      if (e.job_id == id && e.sequence > after && out.size() < limit)
        out.push_back(e);
    return out;
  };
  auto subscribe_changes
      = [](subscribe_atom, const std::string&, const caf::actor&,
           changed_atom) { return ok_atom::value; };
  auto subscribe = [](subscribe_atom, const std::string&, const caf::actor&) {
    return ok_atom::value;
  };
  auto unsubscribe
      = [](unsubscribe_atom, const std::string&, const caf::actor&) {};
  caf::actor a;
  if (pages)
    a = sys.spawn([=](caf::event_based_actor*) -> caf::behavior {
      return {whole, page, subscribe_changes, subscribe, unsubscribe};
    });
  else
    a = sys.spawn([=](caf::event_based_actor*) -> caf::behavior {
      return {whole, subscribe_changes, subscribe, unsubscribe};
    });
  return caf::actor_cast<api_actor>(a);
}

/// An older coordinator's node API (no page request) that holds its
/// whole-log answers until it is pinged: the log `log` of one job, an
/// empty one (not_found) for any other; each read recorded.
api_actor
spawn_holding_coordinator(caf::actor_system& sys,
                          std::shared_ptr<const std::vector<job_event>> log,
                          std::shared_ptr<recorder> rec) {
  using promise = caf::typed_response_promise<std::vector<job_event>>;
  auto a = sys.spawn([=](caf::event_based_actor* self) -> caf::behavior {
    auto held
        = std::make_shared<std::vector<std::pair<promise, std::string>>>();
    return {[=](events_atom, const std::string& id) {
              rec->add("whole " + id);
              held->emplace_back(
                  self->make_response_promise<std::vector<job_event>>(), id);
              return held->back().first;
            },
            [=](ping_atom) {
              for (auto& [rp, id] : *held)
                if (!log->empty() && log->front().job_id == id)
                  rp.deliver(*log);
                else
                  rp.deliver(make_error(errc::not_found, "no events of " + id));
              held->clear();
              return ok_atom::value;
            }};
  });
  return caf::actor_cast<api_actor>(a);
}

/// A relay (a gateway node's stand-in for its coordinator's API) and the
/// log of job j1-7 its coordinator holds.
struct relay_fixture {
  explicit relay_fixture(uint64_t events = 10)
      : log{std::make_shared<std::vector<job_event>>(make_log(id, events))} {}
  caf::actor_system_config cfg;
  caf::actor_system sys{testing::real_config(cfg)};
  const std::string id = "j1-7";
  std::shared_ptr<const std::vector<job_event>> log;
  std::shared_ptr<recorder> rec = std::make_shared<recorder>();
  node::api_relay relay{sys};
};

/// The sequences of (events_atom, id, after, limit) through `api`; a
/// failure fails the test, naming the error.
std::vector<uint64_t> page_of(caf::scoped_actor& self, const api_actor& api,
                              const std::string& id, uint64_t after,
                              uint32_t limit) {
  std::vector<uint64_t> out;
  self->request(api, 10s, events_atom::value, id, after, limit)
      .receive(
          [&](std::vector<job_event>& evs) {
            for (const auto& e : evs)
              out.push_back(e.sequence);
          },
          [](caf::error& err) { FAIL(describe(err)); });
  return out;
}

/// The error (events_atom, id, after, limit) through `api` is answered
/// with (none if a page).
caf::error error_of(caf::scoped_actor& self, const api_actor& api,
                    const std::string& id, uint64_t after, uint32_t limit) {
  caf::error out;
  self->request(api, 10s, events_atom::value, id, after, limit)
      .receive([](std::vector<job_event>&) {},
               [&](caf::error& err) { out = std::move(err); });
  return out;
}

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> out;
  for (auto s = first; s <= last; ++s)
    out.push_back(s);
  return out;
}

/// What a stream sent (the ids of its events) and whether it ended.
struct collected {
  std::mutex mx;
  std::condition_variable cv;
  std::vector<uint64_t> ids;
  bool ended = false;

  http::stream_sink sink() {
    http::stream_sink s;
    s.emit = [this](const std::string&, uint64_t id, const std::string&) {
      std::lock_guard<std::mutex> guard{mx};
      if (id != 0)
        ids.push_back(id);
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

  /// Waits (at most 30 s) until the stream ended.
  bool wait_end() {
    std::unique_lock<std::mutex> lock{mx};
    return cv.wait_for(lock, 30s, [this] { return ended; });
  }
};

} // namespace

TEST_CASE("a gateway node reads a page of an older coordinator's log from "
          "its whole log",
          "[router][events]") {
  relay_fixture f;
  f.relay.set({spawn_coordinator(f.sys, f.log, f.rec, false), before_pages});
  caf::scoped_actor self{f.sys};
  auto api = f.relay.handle();
  CHECK(page_of(self, api, f.id, 0, 4) == range(1, 4));
  CHECK(page_of(self, api, f.id, 3, 4) == range(4, 7));
  CHECK(page_of(self, api, f.id, 8, 1000) == range(9, 10));
  CHECK(page_of(self, api, f.id, 10, 5).empty());
  // An unknown job's page is empty (the whole log's answer is not_found).
  CHECK(page_of(self, api, "j9-9", 0, 5).empty());
  // The limits the coordinator's API would have checked.
  CHECK(is(error_of(self, api, f.id, 0, 0), errc::invalid_request));
  CHECK(is(error_of(self, api, f.id, 0, max_events_page + 1),
           errc::invalid_request));
  INFO("the coordinator was asked: " << f.rec->all());
  CHECK(f.rec->count_starting("whole ") == 5);
  CHECK(f.rec->count_starting("page ") == 0);
}

TEST_CASE("a gateway node asks a coordinator of node protocol 3 for the page "
          "itself",
          "[router][events]") {
  relay_fixture f;
  f.relay.set(
      {spawn_coordinator(f.sys, f.log, f.rec, true), paged_events_protocol});
  caf::scoped_actor self{f.sys};
  CHECK(page_of(self, f.relay.handle(), f.id, 3, 4) == range(4, 7));
  INFO("the coordinator was asked: " << f.rec->all());
  CHECK(f.rec->count_starting("page j1-7 3 4") == 1);
  CHECK(f.rec->count_starting("whole ") == 0);
}

TEST_CASE("an event stream through a gateway node reads an older "
          "coordinator's long log across pages and ends",
          "[router][events][stream]") {
  relay_fixture f{2500}; // two and a half of the stream's pages
  f.relay.set({spawn_coordinator(f.sys, f.log, f.rec, false), before_pages});
  collected c;
  // Resumed after sequence 3; no keep-alive read within the test.
  http::spawn_job_stream(f.sys, f.relay.handle(), 10s, 60s, f.id, 3, c.sink());
  REQUIRE(c.wait_end());
  std::lock_guard<std::mutex> guard{c.mx};
  INFO("the coordinator was asked: " << f.rec->all());
  INFO(c.ids.size() << " events sent");
  bool each_once_in_order = c.ids == range(4, 2500);
  CHECK(each_once_in_order);
  CHECK(f.rec->count_starting("page ") == 0);
}

TEST_CASE("a gateway node's pages of an older coordinator's log share one "
          "whole-log read per job, and such reads are bounded",
          "[router][events]") {
  // Found by review: each page was a whole-log read of its own, held in
  // the gateway's memory; N readers of a long log cost N whole logs.
  relay_fixture f;
  auto coordinator = spawn_holding_coordinator(f.sys, f.log, f.rec);
  f.relay.set({coordinator, before_pages});
  caf::scoped_actor self{f.sys};
  auto api = f.relay.handle();
  for (uint64_t after : {0, 2, 4, 6, 8})
    self->send(api, events_atom::value, f.id, after, uint32_t{2});
  // Another job's read, sent last: once the coordinator has it, the relay
  // has handled the five before it (in order).
  self->send(api, events_atom::value, std::string{"j2-1"}, uint64_t{0},
             uint32_t{5});
  REQUIRE(f.rec->wait_for("whole j2-1", 1));
  CHECK(f.rec->count_starting("whole j1-7") == 1);
  // At most max_whole_log_reads jobs at once: 2 so far, 30 more fit.
  for (size_t n = 0; n < node::max_whole_log_reads - 2; ++n)
    self->send(api, events_atom::value, "j3-" + std::to_string(n), uint64_t{0},
               uint32_t{5});
  REQUIRE(f.rec->wait_for("whole j3-", node::max_whole_log_reads - 2));
  auto refused = error_of(self, api, "j4-1", 0, 5);
  INFO(describe(refused));
  CHECK(is(refused, errc::unavailable));
  // The held reads answered: every page cut from the one log.
  self->send(coordinator, ping_atom::value);
  std::map<uint64_t, std::vector<uint64_t>> pages;
  size_t empty = 0;
  for (size_t n = 0; n < 5 + 1 + node::max_whole_log_reads - 2; ++n)
    self->receive(
        [&](std::vector<job_event>& evs) {
          if (evs.empty())
            ++empty;
          else
            for (const auto& e : evs)
              pages[evs.front().sequence].push_back(e.sequence);
        },
        [](caf::error& err) { FAIL(describe(err)); },
        caf::after(10s) >> [] { FAIL("a page was not answered"); });
  self->receive([](ok_atom) {}, caf::after(10s) >> [] { FAIL("no ping"); });
  CHECK(pages.size() == 5);
  CHECK(pages[1] == range(1, 2));
  CHECK(pages[9] == range(9, 10));
  CHECK(empty == 1 + node::max_whole_log_reads - 2);
  CHECK(f.rec->count_starting("whole j1-7") == 1);
  // Nothing in flight now: the next page reads the log again.
  self->send(api, events_atom::value, f.id, uint64_t{0}, uint32_t{3});
  REQUIRE(f.rec->wait_for("whole j1-7", 2));
  self->send(coordinator, ping_atom::value);
  std::vector<uint64_t> again;
  self->receive(
      [&](std::vector<job_event>& evs) {
        for (const auto& e : evs)
          again.push_back(e.sequence);
      },
      [](caf::error& err) { FAIL(describe(err)); },
      caf::after(10s) >> [] { FAIL("the page was not answered"); });
  CHECK(again == range(1, 3));
}
