// Cancels that race the end of an attempt or fail to be written
// (actors/queue_admin.cpp: request_cancel, cancel_retry, cancel_waiting).
// CAF's deterministic test coordinator; a store proxy holds or fails the
// writes the race needs (tests/support/partition_fixture.hpp).

#include "support/partition_fixture.hpp"

using namespace drover;
using namespace drover::testing::partitions;

namespace {

/// What a slot was last given: the job, its attempt and its supervisor.
struct given {
  std::string job_id;
  uint32_t attempt = 0;
  job_supervisor_actor owner;
};

worker_actor spawn_recording_slot(caf::actor_system& sys,
                                  std::shared_ptr<given> g) {
  return sys.spawn([g]() -> worker_actor::behavior_type {
    return {[g](run_atom, lease& l, job_supervisor_actor& owner) {
              g->job_id = l.job_id;
              g->attempt = l.attempt;
              g->owner = owner;
            },
            [](cancel_atom, std::string&, uint32_t) {},
            [](abandon_atom, std::string&, uint32_t) {},
            [](handover_atom, std::string&, uint32_t) {}};
  });
}

/// A queue owning partition 0 over a store proxy, and a slot that records
/// what it is given.
struct race {
  fixture f;
  std::shared_ptr<given> g = std::make_shared<given>();
  worker_actor slot = spawn_recording_slot(f.sys, g);
  proxy_ptr ps = std::make_shared<proxy_state>();
  store_actor proxy = f.sys.spawn(proxy_impl, f.store, ps, 0);
  queue_actor q;

  race() {
    f.own({});
    q = spawn_taker(f, proxy, 0, 17);
  }

  ~race() {
    f.self->send_exit(q, caf::exit_reason::user_shutdown);
    f.self->send_exit(proxy, caf::exit_reason::user_shutdown);
    f.self->send_exit(slot, caf::exit_reason::user_shutdown);
    f.sched.run();
  }

  job_record submit() {
    auto made = f.submit_to(q, noop());
    REQUIRE(made);
    return *made;
  }

  /// The slot offers itself; true if it was given `job_id`.
  bool offer_slot(const std::string& job_id) {
    g->job_id.clear();
    f.self->send(q, ready_atom::value, std::string{"cpu"},
                 std::string{"w1.c1/cpu-0"}, slot);
    f.sched.run();
    return g->job_id == job_id;
  }

  void cancel(const std::string& job_id, const char* why) {
    f.self->send(q, cancel_atom::value, job_id, std::string{why});
    f.sched.run();
  }

  /// The slot's attempt fails, retryably.
  void fail_attempt() {
    completion c;
    c.job_id = g->job_id;
    c.attempt = g->attempt;
    c.outcome = completion_outcome::failed_retryable;
    c.error = {"flaky", "injected retryable failure", true};
    f.self->send(g->owner, done_atom::value, std::move(c));
    f.sched.run();
  }

  /// Releases the proxy's held writes; the answers to the ping and to
  /// `n` cancels, counted.
  std::pair<int, int> release(int n) {
    f.self->send(proxy, ping_atom::value);
    f.sched.run();
    int oks = 0;
    int errors = 0;
    for (int i = 0; i < n + 1; ++i)
      f.self->receive([&](ok_atom) { ++oks; }, [&](caf::error&) { ++errors; },
                      caf::after(std::chrono::seconds{1}) >> [] {});
    return {oks, errors};
  }
};

long count_of(const std::vector<event_kind>& kinds, event_kind kind) {
  return std::count(kinds.begin(), kinds.end(), kind);
}

} // namespace

TEST_CASE("a cancel written while the attempt ends in a retry ends the job "
          "now, not at the retry's backoff, and a cancel asked meanwhile "
          "joins the write",
          "[queue][cancel]") {
  // Found by review: the retry waited out its backoff (up to max_delay_ms)
  // and ended cancelled only when its next attempt read the request; and a
  // second cancel during the write wrote the request again.
  race r;
  auto rec = r.submit();
  REQUIRE(r.offer_slot(rec.job_id));
  r.ps->hold_cancels = true;
  r.cancel(rec.job_id, "user asked");
  REQUIRE(r.ps->held.size() == 1);
  r.fail_attempt(); // its supervisor, not told yet, schedules a retry
  REQUIRE(record_of(r.f, rec.job_id).status == job_status::retrying);
  r.cancel(rec.job_id, "asked again");
  CHECK(r.ps->held.size() == 1); // joined, not written again
  auto [oks, errors] = r.release(2);
  CHECK(oks == 3);
  CHECK(errors == 0);
  auto now = record_of(r.f, rec.job_id);
  CHECK(now.status == job_status::cancelled);
  auto kinds = kinds_of(r.f, rec.job_id);
  CHECK(count_of(kinds, event_kind::cancel_requested) == 1);
  CHECK(count_of(kinds, event_kind::started) == 1);
  CHECK(r.f.waiting() == 0);
  CHECK_FALSE(r.offer_slot(rec.job_id));
}

TEST_CASE("a cancel recorded while the attempt's retry is being written "
          "ends the job once the retry is: the retry does not wait",
          "[queue][cancel]") {
  race r;
  auto rec = r.submit();
  REQUIRE(r.offer_slot(rec.job_id));
  r.ps->hold_retries = true;
  r.fail_attempt(); // the supervisor's retry_scheduled is held
  REQUIRE(r.ps->held.size() == 1);
  r.cancel(rec.job_id, "user asked"); // written, told to a concluding one
  r.f.self->receive([](ok_atom) {},
                    [](caf::error& err) { FAIL(describe(err)); },
                    caf::after(std::chrono::seconds{1}) >>
                        [] { FAIL("the cancel was not answered"); });
  REQUIRE(record_of(r.f, rec.job_id).cancel_requested);
  auto [oks, errors] = r.release(0);
  CHECK(oks == 1);
  CHECK(errors == 0);
  CHECK(record_of(r.f, rec.job_id).status == job_status::cancelled);
  auto kinds = kinds_of(r.f, rec.job_id);
  REQUIRE(kinds.size() >= 2);
  CHECK(kinds[kinds.size() - 2] == event_kind::retry_scheduled);
  CHECK(kinds.back() == event_kind::cancelled);
  CHECK(r.f.waiting() == 0);
}

TEST_CASE("a cancel of a waiting job whose write fails is an error and "
          "loses nothing: the job still runs",
          "[queue][cancel]") {
  // Before, the job was taken out of the queue and the failed write left it
  // `queued` in the store with nobody to run it until a restart.
  race r;
  auto rec = r.submit();
  r.ps->fail_cancelled = 1;
  r.cancel(rec.job_id, "user asked");
  bool failed = false;
  r.f.self->receive(
      [](ok_atom) { FAIL("a failed cancel was acknowledged"); },
      [&](caf::error& err) { failed = is(err, errc::unavailable); },
      caf::after(std::chrono::seconds{1}) >>
          [] { FAIL("the cancel was not answered"); });
  CHECK(failed);
  CHECK(record_of(r.f, rec.job_id).status == job_status::queued);
  // Put back once the queue re-read it (reconcile, after its backoff).
  r.f.sched.advance_time(std::chrono::seconds{30});
  r.f.sched.run();
  CHECK(r.offer_slot(rec.job_id));
  CHECK(record_of(r.f, rec.job_id).status == job_status::processing);
}

TEST_CASE("a cancel of a queued job still to be recovered is not raced by "
          "the recovery: no attempt starts before its write is in",
          "[queue][cancel]") {
  // Found by review: recovery (or a reconcile) queued the job again while
  // its `cancelled` write was in flight; a worker took it, `started`
  // committed first, and the job ended cancelled while its attempt ran on.
  fixture f{{}, std::chrono::seconds{10}};
  auto rec = f.submit(noop());
  REQUIRE(rec);
  auto p = partition_of_id(rec->job_id);
  f.own(all_but(p));
  auto g = std::make_shared<given>();
  auto slot = spawn_recording_slot(f.sys, g);
  auto ps = std::make_shared<proxy_state>();
  auto proxy = f.sys.spawn(proxy_impl, f.store, ps, 1); // 1st read fails
  auto other = spawn_taker(f, proxy, p, 23);
  REQUIRE(ps->recovers == 1);
  ps->hold_cancelled = true;
  f.self->send(other, cancel_atom::value, rec->job_id,
               std::string{"user asked"});
  f.sched.run();
  REQUIRE(ps->held.size() == 1);
  // Recovery reads the partition again meanwhile: the job is still queued
  // in the store.
  f.sched.advance_time(std::chrono::seconds{10});
  f.sched.run();
  REQUIRE(ps->recovers >= 2);
  f.self->send(other, ready_atom::value, std::string{"cpu"},
               std::string{"w1.c1/cpu-0"}, slot);
  f.sched.run();
  CHECK(g->job_id.empty()); // nothing dispatched
  f.self->send(proxy, ping_atom::value);
  f.sched.run();
  for (int answers = 0; answers < 2; ++answers) // the ping, the cancel
    f.self->receive(
        [](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
        caf::after(std::chrono::seconds{1}) >>
            [] { FAIL("the ping or the cancel was not answered"); });
  CHECK(record_of(f, rec->job_id).status == job_status::cancelled);
  CHECK(count_of(kinds_of(f, rec->job_id), event_kind::started) == 0);
  f.self->send_exit(other, caf::exit_reason::user_shutdown);
  f.self->send_exit(proxy, caf::exit_reason::user_shutdown);
  f.self->send_exit(slot, caf::exit_reason::user_shutdown);
  f.sched.run();
}
