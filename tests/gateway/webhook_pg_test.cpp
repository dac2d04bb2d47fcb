// The webhook dispatcher on the PostgreSQL store: attempts are accepted by
// the store's state machine after the job's end, the projection tracks the
// webhook owed, and a new incarnation (a node restart: a fresh actor system
// on the same database) resumes the delivery where the last one stopped.
// Needs DROVER_PG_URL (scripts/test sets it); each case has its own
// database.

#include "gateway/webhook.hpp"
#include "gateway/webhook_dispatcher.hpp"

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/type_ids.hpp"

#include "support/actor_config.hpp"
#include "support/test_db.hpp"
#include "support/webhook_log.hpp"
#include "support/webhook_receiver.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <condition_variable>
#include <mutex>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::real_config;
using drover::testing::recorded_log;
using drover::testing::reply;
using drover::testing::test_db;
using drover::testing::webhook_receiver;

namespace {

constexpr auto patience = 30s;

/// One incarnation of a node's store, publisher and webhook dispatcher.
struct incarnation {
  caf::actor_system_config cfg;
  caf::actor_system sys;
  caf::scoped_actor self;
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  std::shared_ptr<recorded_log> log = std::make_shared<recorded_log>();
  store_actor store;
  progress_actor publisher;
  webhook_dispatcher_actor dispatcher;

  incarnation(const std::string& url, webhook_options opts)
      : sys(real_config(cfg)), self(sys) {
    pg_store_config pc;
    pc.conninfo = url;
    store = spawn_pg_store(sys, pc);
    publisher = spawn_progress_publisher(sys);
    handles->set_store(store);
    handles->set_publisher(publisher);
    webhook_dispatcher_config dc;
    dc.options = std::move(opts);
    dc.handles = handles;
    dc.on_recorded = recorded_log::recorder(log);
    dispatcher = spawn_webhook_dispatcher(sys, dc);
  }

  ~incarnation() {
    self->send_exit(dispatcher, caf::exit_reason::user_shutdown);
    self->send_exit(publisher, caf::exit_reason::user_shutdown);
    self->send_exit(store, caf::exit_reason::user_shutdown);
  }

  template <class T, class... Ts>
  T ask(Ts... xs) {
    T result;
    caf::error failure;
    self->request(store, 30s, xs...)
        .receive([&](T& x) { result = std::move(x); },
                 [&](caf::error& err) { failure = std::move(err); });
    if (failure)
      FAIL(describe(failure));
    return result;
  }
};

} // namespace

TEST_CASE("webhook deliveries resume from PostgreSQL after a restart",
          "[pg][webhook]") {
  test_db db;
  webhook_receiver receiver{{reply{500}, reply{500}, reply{204}}};
  webhook_options opts;
  opts.allow = {*parse_ip_network("127.0.0.1/32")};
  opts.initial_backoff = 20ms;
  opts.max_backoff = 100ms;
  opts.retry_period = 60s;
  opts.timeout = 2000ms;
  const std::string job_id = "j0000000000001";
  const auto id = webhook_id(job_id, 3); // submitted, started, completed
  {
    // First incarnation: the job ends, the first attempt fails, and the
    // node goes down before the second one (due 1 to 2 s later).
    auto slower = opts;
    slower.initial_backoff = 2000ms;
    slower.max_backoff = 2000ms;
    incarnation node{db.url(), slower};
    job_event ev;
    ev.job_id = job_id;
    ev.kind = event_kind::submitted;
    ev.at_ms = 1000;
    ev.spec.type = "noop";
    ev.spec.callback_url = receiver.url();
    node.ask<job_record>(submit_atom::value, ev);
    ev.spec = {};
    ev.kind = event_kind::started;
    ev.attempt = 1;
    ev.sequence = 0;
    node.ask<ok_atom>(append_atom::value, std::vector<job_event>{ev});
    ev.kind = event_kind::completed;
    ev.at_ms = system_clock_ms();
    node.ask<ok_atom>(append_atom::value, std::vector<job_event>{ev});
    auto rec = node.ask<job_record>(get_atom::value, job_id);
    REQUIRE(rec.webhook_pending_sequence == 3);
    node.self->send(node.publisher, final_atom::value, rec);
    auto events = node.log->wait_for(1, patience);
    REQUIRE(events.size() == 1);
    CHECK(events[0].webhook.outcome == webhook_outcome::retrying);
    auto pending = node.ask<std::vector<job_record>>(
        webhooks_atom::value, std::string{}, uint32_t{10});
    REQUIRE(pending.size() == 1);
    CHECK(pending[0].job_id == job_id);
  }
  REQUIRE(receiver.requests().size() == 1);
  // Second incarnation on the same database: nobody publishes the final
  // again; the dispatcher finds the delivery in the store, waits for the
  // recorded next attempt, and goes on numbering.
  incarnation node{db.url(), opts};
  auto events = node.log->wait_for(2, patience);
  REQUIRE(events.size() == 2);
  CHECK(events[0].webhook.attempt_number == 2);
  CHECK(events[0].webhook.outcome == webhook_outcome::retrying);
  CHECK(events[1].webhook.attempt_number == 3);
  CHECK(events[1].webhook.outcome == webhook_outcome::delivered);
  CHECK(events[1].webhook.status_code == 204);
  auto got = receiver.requests();
  REQUIRE(got.size() == 3);
  for (const auto& r : got)
    CHECK(r.webhook_id == id);
  // The history is whole and replays to the record, which owes nothing.
  auto history = node.ask<std::vector<job_event>>(events_atom::value, job_id);
  REQUIRE(history.size() == 6);
  for (size_t i = 3; i < 6; ++i) {
    CHECK(history[i].kind == event_kind::webhook_attempted);
    CHECK(history[i].webhook.attempt_number == i - 2);
    CHECK(history[i].webhook.webhook_id == id);
  }
  auto rec = node.ask<job_record>(get_atom::value, job_id);
  CHECK(rec.status == job_status::completed);
  CHECK(rec.webhook_pending_sequence == 0);
  auto replayed = replay(history);
  REQUIRE(replayed);
  CHECK(*replayed == rec);
  CHECK(node.ask<std::vector<job_record>>(webhooks_atom::value, std::string{},
                                          uint32_t{10})
            .empty());
}

TEST_CASE("partitions taken make the dispatcher look for the webhooks their "
          "jobs owe",
          "[pg][webhook][share]") {
  // A coordinator sharing the partitions takes one whose job finished
  // under its last owner and still owes its webhook: nobody publishes the
  // final here. Job a owes one when the dispatcher starts (its scan at
  // start delivers it: that scan is then over); job b comes after, as the
  // jobs of a partition taken later do, and only the take finds it.
  test_db db;
  webhook_receiver receiver{{reply{204}, reply{204}}};
  webhook_options opts;
  opts.allow = {*parse_ip_network("127.0.0.1/32")};
  opts.initial_backoff = 20ms;
  opts.max_backoff = 100ms;
  opts.retry_period = 60s;
  opts.timeout = 2000ms;
  auto owe = [&](incarnation& node, const std::string& job_id) {
    job_event ev;
    ev.job_id = job_id;
    ev.kind = event_kind::submitted;
    ev.at_ms = 1000;
    ev.spec.type = "noop";
    ev.spec.callback_url = receiver.url();
    node.ask<job_record>(submit_atom::value, ev);
    ev.spec = {};
    ev.kind = event_kind::started;
    ev.attempt = 1;
    node.ask<ok_atom>(append_atom::value, std::vector<job_event>{ev});
    ev.kind = event_kind::completed;
    ev.at_ms = system_clock_ms();
    node.ask<ok_atom>(append_atom::value, std::vector<job_event>{ev});
    REQUIRE(
        node.ask<job_record>(get_atom::value, job_id).webhook_pending_sequence
        == 3);
  };
  {
    incarnation before{db.url(), opts};
    before.self->send_exit(before.dispatcher, caf::exit_reason::user_shutdown);
    owe(before, "j0000000000006");
  }
  incarnation node{db.url(), opts};
  auto first = node.log->wait_for(1, patience);
  REQUIRE(first.size() == 1);
  CHECK(first[0].job_id == "j0000000000006");
  owe(node, "j0000000000007");
  CHECK(receiver.requests().size() == 1);
  // What the share keeper's hook sends after a take.
  node.self->send(node.dispatcher, partitions_atom::value);
  auto events = node.log->wait_for(2, patience);
  REQUIRE(events.size() == 2);
  CHECK(events[1].job_id == "j0000000000007");
  CHECK(events[1].webhook.outcome == webhook_outcome::delivered);
  REQUIRE(receiver.requests().size() == 2);
  CHECK(receiver.requests()[1].webhook_id == webhook_id("j0000000000007", 3));
}
