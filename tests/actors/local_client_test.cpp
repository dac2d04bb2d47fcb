// The client API in process (gateway/local_client.hpp): the same calls as
// over the network on a job system of this process, through a client door
// of its own, with the same key checks.

#include "gateway/local_client.hpp"

#include "actors/api.hpp"
#include "actors/job_system.hpp"
#include "gateway/auth.hpp"
#include "gateway/client_door.hpp"
#include "runtime/errors.hpp"
#include "runtime/task.hpp"
#include "support/actor_config.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;

namespace {

std::shared_ptr<handler_registry> handlers() {
  auto r = std::make_shared<handler_registry>();
  // Reports 25, 50, 75 (stage "work"), then succeeds.
  REQUIRE_FALSE(r->register_handler("steps", [](task_context& ctx) {
    for (int p : {25, 50, 75})
      if (auto err = ctx.progress(p, "work"))
        return task_outcome::permanent("progress", describe(err));
    return task_outcome::success(R"({"steps":3})");
  }));
  // Runs until cancelled.
  REQUIRE_FALSE(r->register_handler("hold", [](task_context& ctx) {
    while (!ctx.wait_for_cancel(50ms)) {
    }
    return task_outcome::cancelled();
  }));
  return r;
}

/// A job system in this process (memory store, 2 slots).
struct node {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  supervisor_actor root;

  node() : sys(testing::real_config(cfg)) {
    job_system_config jc;
    jc.slots = {{"cpu", 2}};
    jc.handlers = handlers();
    auto sup = spawn_supervisor(
        sys, {"node:local", {}, {job_system_child(jc, handles)}});
    REQUIRE(sup);
    root = *sup;
  }

  ~node() {
    caf::scoped_actor self{sys};
    self->monitor(root);
    self->send_exit(root, caf::exit_reason::user_shutdown);
    self->receive([](caf::down_msg&) {});
  }
};

submit_request request(const std::string& type) {
  submit_request r;
  r.type = type;
  r.input = "{}";
  return r;
}

} // namespace

TEST_CASE("the client API in process: submit, wait with progress, result, "
          "history, list and cancel",
          "[client][local]") {
  node n;
  auto made = local_client(n.sys, n.handles, n.root);
  REQUIRE(made);
  auto& c = **made;
  // A keyless submit gets a generated key, and sent again it finds the
  // same job.
  auto sub = c.submit(request("steps"));
  REQUIRE(sub);
  CHECK_FALSE(sub->idempotency_key.empty());
  auto again = request("steps");
  again.idempotency_key = sub->idempotency_key;
  auto same = c.submit(again);
  REQUIRE(same);
  CHECK(same->job.job_id == sub->job.job_id);
  std::vector<double> seen;
  auto done = c.wait(sub->job.job_id, 30s, [&](const progress_update& u) {
    seen.push_back(u.percent);
  });
  REQUIRE(done);
  CHECK(done->status == job_status::completed);
  for (size_t i = 1; i < seen.size(); ++i)
    CHECK(seen[i] >= seen[i - 1]); // never backwards
  auto result = c.result(sub->job.job_id);
  REQUIRE(result);
  CHECK(*result == R"({"steps":3})");
  auto history = c.events(sub->job.job_id);
  REQUIRE(history);
  REQUIRE(history->size() >= 3); // submitted, started, completed
  CHECK(history->front().kind == event_kind::submitted);
  CHECK(history->back().kind == event_kind::completed);
  // Cancel with a reason: a running job stops cooperatively.
  auto held = c.submit(request("hold"));
  REQUIRE(held);
  auto cancelled = c.cancel(held->job.job_id, "not needed");
  REQUIRE(cancelled);
  auto ended = c.wait(held->job.job_id, 30s);
  REQUIRE(ended);
  CHECK(ended->status == job_status::cancelled);
  // Its record is a job the list shows, and an unknown job is not_found.
  job_query q;
  q.limit = 10;
  auto page = c.list(q);
  REQUIRE(page);
  CHECK(page->jobs.size() == 2);
  auto unknown = c.get("j0000000000000-1");
  REQUIRE_FALSE(unknown);
  CHECK(is(unknown.error(), errc::not_found));
}

TEST_CASE("the client API in process checks keys and tenants like HTTP",
          "[client][local]") {
  node n;
  client_door_config door;
  auto acme = http::parse_api_key("acme:" + http::sha256_hex("acme-secret")
                                  + ":acme:submit,read");
  auto umbrella = http::parse_api_key(
      "umbrella:" + http::sha256_hex("umbrella-secret") + ":umbrella:read");
  REQUIRE(acme);
  REQUIRE(umbrella);
  door.keys = {*acme, *umbrella};
  client_options as_acme;
  as_acme.api_key = "acme-secret";
  auto a = local_client(n.sys, n.handles, n.root, as_acme, door);
  REQUIRE(a);
  auto sub = (*a)->submit(request("steps"));
  REQUIRE(sub);
  CHECK(sub->job.spec.tenant == "acme");
  // Another tenant's key does not see the job; a read-only key may not
  // submit; a wrong key gets nothing.
  client_options as_umbrella;
  as_umbrella.api_key = "umbrella-secret";
  auto u = local_client(n.sys, n.handles, n.root, as_umbrella, door);
  REQUIRE(u);
  auto other = (*u)->get(sub->job.job_id);
  REQUIRE_FALSE(other);
  CHECK(is(other.error(), errc::not_found));
  auto refused = (*u)->submit(request("steps"));
  REQUIRE_FALSE(refused);
  CHECK(is(refused.error(), errc::forbidden));
  client_options wrong;
  wrong.api_key = "guess";
  wrong.timeout = 2s;
  auto w = local_client(n.sys, n.handles, n.root, wrong, door);
  REQUIRE(w);
  auto denied = (*w)->get(sub->job.job_id);
  REQUIRE_FALSE(denied);
  CHECK(is(denied.error(), errc::unauthenticated));
  auto waited = (*a)->wait(sub->job.job_id, 30s);
  REQUIRE(waited);
  CHECK(waited->status == job_status::completed);
}

TEST_CASE("an in-process client refuses node addresses and a missing job "
          "system",
          "[client][local]") {
  node n;
  client_options opts;
  opts.nodes = {"127.0.0.1:7411"};
  auto with_nodes = local_client(n.sys, n.handles, n.root, opts);
  REQUIRE_FALSE(with_nodes);
  CHECK(is(with_nodes.error(), errc::bad_config));
  auto without = local_client(n.sys, nullptr, n.root);
  REQUIRE_FALSE(without);
  CHECK(is(without.error(), errc::bad_config));
}

namespace {

/// A client door as nodes before the paged read of a job's log had it:
/// every request goes on to `real`, but the paged read is unknown
/// (unexpected_message, as CAF answers for an older door); counted.
caf::behavior older_door(caf::event_based_actor* self, caf::actor real,
                         std::shared_ptr<std::atomic<int>> paged) {
  self->set_default_handler(
      [real](caf::scheduled_actor* s,
             caf::message_view& x) -> caf::result<caf::message> {
        auto rp
            = static_cast<caf::event_based_actor*>(s)->make_response_promise();
        return rp.delegate(real, x.move_content_to_message());
      });
  return {[paged](client_atom, std::string&, events_atom, std::string&,
                  uint64_t, uint32_t) -> caf::result<std::vector<job_event>> {
    ++*paged;
    return caf::make_error(caf::sec::unexpected_message);
  }};
}

std::vector<uint64_t> sequences(const std::vector<job_event>& evs) {
  std::vector<uint64_t> out;
  for (const auto& e : evs)
    out.push_back(e.sequence);
  return out;
}

/// The sequences a wait on `job_id` hands its event callback.
std::vector<uint64_t> waited_events(client& c, const std::string& job_id) {
  std::vector<uint64_t> seen;
  auto done = c.wait(job_id, 30s, {},
                     [&](const job_event& e) { seen.push_back(e.sequence); });
  REQUIRE(done);
  CHECK(done->status == job_status::completed);
  return seen;
}

} // namespace

TEST_CASE("a client reads a job's log a page at a time, and from an older "
          "door cuts the pages from the whole log",
          "[client][local]") {
  node n;
  auto made = local_client(n.sys, n.handles, n.root);
  REQUIRE(made);
  auto& c = **made;
  auto sub = c.submit(request("steps"));
  REQUIRE(sub);
  auto id = sub->job.job_id;
  auto seen = waited_events(c, id); // each event once, in order
  auto all = c.events(id);
  REQUIRE(all);
  REQUIRE(all->size() >= 4);
  CHECK(seen == sequences(*all));
  // Pages of two, each after the last one's sequence, walk the whole log.
  auto walk = [&](client& via) {
    std::vector<job_event> walked;
    uint64_t after = 0;
    for (int reads = 0; reads < 100; ++reads) {
      auto page = via.events(id, after, 2);
      REQUIRE(page);
      walked.insert(walked.end(), page->begin(), page->end());
      if (page->size() < 2)
        break;
      after = page->back().sequence;
    }
    return sequences(walked);
  };
  CHECK(walk(c) == sequences(*all));
  for (uint32_t bad : {0u, 10001u}) {
    auto refused = c.events(id, 0, bad);
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::invalid_request));
  }
  // Through a door older than the paged read: the same pages, cut from
  // the whole log, and a wait's catch-up reads whole logs once refused.
  auto api = spawn_api(n.sys, n.handles, n.root);
  client_door_config dc;
  dc.in_process = true;
  auto real = spawn_client_door(n.sys, api, dc);
  auto paged = std::make_shared<std::atomic<int>>(0);
  auto old = n.sys.spawn(older_door, caf::actor_cast<caf::actor>(real), paged);
  auto stop = [old, real, api] {
    caf::anon_send_exit(old, caf::exit_reason::kill);
    caf::anon_send_exit(real, caf::exit_reason::kill);
    caf::anon_send_exit(api, caf::exit_reason::user_shutdown);
  };
  auto oc = client::attach(n.sys, caf::actor_cast<client_door_actor>(old), {},
                           stop);
  REQUIRE(oc);
  CHECK(walk(**oc) == sequences(*all));
  CHECK(*paged > 0);
  auto asked = paged->load();
  auto next = (*oc)->submit(request("steps"));
  REQUIRE(next);
  auto old_seen = waited_events(**oc, next->job.job_id);
  auto next_all = c.events(next->job.job_id);
  REQUIRE(next_all);
  CHECK(old_seen == sequences(*next_all));
  CHECK(*paged == asked + 1); // asked once, then the whole log
}
