// An attempt running on a worker node whose reports move to another agent
// of the same machine (actors/queue_partitions.cpp: move_running): the
// agent that ran it for this coordinator goes home to its own (after a
// failover), and the node's agent joined here takes its reports over. CAF's
// deterministic test coordinator; the fixture is shared with
// adoption_test.cpp.

#include "support/partition_fixture.hpp"

using namespace drover;
using namespace drover::testing::partitions;

namespace {

/// A worker node slot's stand-in that counts its cancels and hand-overs.
worker_actor spawn_slot(caf::actor_system& sys, std::shared_ptr<int> cancels,
                        std::shared_ptr<int> handovers) {
  return sys.spawn([cancels, handovers]() -> worker_actor::behavior_type {
    return {
        [](run_atom, lease&, job_supervisor_actor&) {},
        [cancels](cancel_atom, std::string&, uint32_t) { ++*cancels; },
        [](abandon_atom, std::string&, uint32_t) {},
        [handovers](handover_atom, std::string&, uint32_t) { ++*handovers; }};
  });
}

} // namespace

TEST_CASE("a running attempt its node lets go moves its reports to another "
          "agent of its machine that offers it: same supervisor, no new "
          "start, and no move without the let-go, to another machine or twice",
          "[queue][partition]") {
  fixture f;
  auto old_cancels = std::make_shared<int>(0);
  auto old_handovers = std::make_shared<int>(0);
  auto new_cancels = std::make_shared<int>(0);
  auto new_handovers = std::make_shared<int>(0);
  auto old_slot = spawn_slot(f.sys, old_cancels, old_handovers);
  auto new_slot = spawn_slot(f.sys, new_cancels, new_handovers);
  auto made = f.submit(noop());
  REQUIRE(made);
  auto job_id = made->job_id;
  // It runs on w1's agent for c3, failed over to this coordinator.
  f.self->send(f.queue, ready_atom::value, std::string{"cpu"},
               std::string{"w1.c3/cpu-0"}, old_slot);
  f.sched.run();
  REQUIRE(record_of(f, job_id).status == job_status::processing);
  auto offer = [&](const std::string& worker_id, uint32_t attempt) {
    f.self->send(f.queue, adopt_atom::value, job_id, attempt, worker_id,
                 new_slot, *f.clock + 30000, false);
    f.sched.run();
  };
  // Before the node running it lets it go, no agent's offer moves it (a
  // node naming itself after w1's agent for c1 included); nor does a
  // let-go from another slot than the one it runs on.
  offer("w1.c1/borrowed-0", 1);
  CHECK(is(f.adoption_refusal("moved on another agent's word",
                              "an offer before the let-go was not refused"),
           errc::stale_attempt));
  f.self->send(f.queue, let_go_atom::value, job_id, uint32_t{1}, new_slot);
  f.sched.run();
  offer("w1.c1/borrowed-0", 1);
  CHECK(is(f.adoption_refusal("moved on another slot's let-go",
                              "an offer after a stranger's let-go was not "
                              "refused"),
           errc::stale_attempt));
  // w1's agent for c3 (going home) lets it go where it runs.
  f.self->send(f.queue, let_go_atom::value, job_id, uint32_t{1}, old_slot);
  f.sched.run();
  // Another machine's agent, or another attempt: refused, nothing moves.
  offer("w2.c1/borrowed-0", 1);
  CHECK(is(f.adoption_refusal("moved to another machine",
                              "another machine was not refused"),
           errc::stale_attempt));
  offer("w1.c1/borrowed-0", 2);
  CHECK(is(f.adoption_refusal("moved another attempt",
                              "another attempt was not refused"),
           errc::stale_attempt));
  CHECK(*old_handovers == 0);
  // w1's agent for this coordinator: the supervisor answers to its slot
  // from now on, and the old slot is told (its link keeps the worker's
  // place while the node runs the attempt).
  offer("w1.c1/borrowed-0", 1);
  auto js = f.adopted("the move was refused");
  REQUIRE(js);
  CHECK(*old_handovers == 1);
  CHECK(f.stats().running == 1);
  // Offered again (through the same slot, or another agent's): it moved
  // once; only a let-go by the node on its new slot would move it again.
  offer("w1.c1/borrowed-0", 1);
  CHECK(is(f.adoption_refusal("moved twice", "a second move was not refused"),
           errc::stale_attempt));
  f.self->send(f.queue, adopt_atom::value, job_id, uint32_t{1},
               std::string{"w1.c2/borrowed-0"}, old_slot, *f.clock + 30000,
               false);
  f.sched.run();
  CHECK(is(f.adoption_refusal("moved back", "a move back was not refused"),
           errc::stale_attempt));
  // What the supervisor sends the worker goes to the new slot: a cancel.
  f.self->send(f.queue, cancel_atom::value, job_id, std::string{"user asked"});
  f.sched.run();
  f.self->receive([](ok_atom) {}, [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(std::chrono::seconds{1}) >>
                      [] { FAIL("the cancel was not answered"); });
  CHECK(*new_cancels == 1);
  CHECK(*old_cancels == 0);
  // Its outcome, through the new slot's agent, ends it: one start.
  completion c;
  c.job_id = job_id;
  c.attempt = 1;
  c.outcome = completion_outcome::cancelled;
  f.self->send(js, done_atom::value, c);
  f.sched.run();
  CHECK(record_of(f, job_id).status == job_status::cancelled);
  int starts = 0;
  for (const auto& ev : f.events(job_id))
    starts += ev.kind == event_kind::started;
  CHECK(starts == 1);
  CHECK(f.stats().running == 0);
  for (const auto& s : {old_slot, new_slot})
    f.self->send_exit(s, caf::exit_reason::user_shutdown);
  f.sched.run();
}
