// A worker node's running attempt whose adoption waits in the queue when
// the queue restarts (the job system is one_for_all: a crash of the store,
// the publisher or the queue restarts all three). The link asked the old
// queue, which parked the request (its partition was not taken yet) and
// died with it: no answer ever comes. The link asks the new queue, which
// recovered the attempt as waiting to be adopted, and the attempt runs on.
// Before, the link waited out its whole request (at least 30 s) and then
// stopped the attempt, while the new queue had settled it lost after its
// grace and run the job again beside it. Also: a job supervisor of the old
// queue that dies after the link follows the new one, and a request the
// dead queue bounces (request_receiver_down) before the next one is up.
//
// The real link (actors/node_link.cpp) and real queues over a memory store
// on CAF's deterministic test coordinator; the worker node is played by the
// test (its agent heartbeats the link as a node does).

#include "actors/node_link.hpp"
#include "support/partition_fixture.hpp"

using namespace drover;
using namespace drover::testing::partitions;
using namespace std::chrono_literals;

namespace {

using beat_atom = caf::atom_constant<caf::atom("beat")>;

/// The test's worker agent: heartbeats `link` listing `running` when told,
/// and counts the cancels and abandons it is sent and what the link's
/// replies say of its attempts.
using probe_agent_actor = worker_agent_actor::extend<
    caf::reacts_to<beat_atom, node_link_actor, int64_t, running_attempt>>;

struct agent_log {
  int cancels = 0;
  int abandons = 0;
  int beats = 0;
  /// Attempts the link's replies said were superseded, settled, handed
  /// over or another coordinator's: none of that may happen here.
  int stopped = 0;
};

probe_agent_actor spawn_probe_agent(caf::actor_system& sys,
                                    std::shared_ptr<agent_log> log) {
  return sys.spawn([log](probe_agent_actor::pointer self)
                       -> probe_agent_actor::behavior_type {
    return {
        [](lease_atom, lease_batch&) {},
        [log](cancel_atom, std::string&, uint32_t) { ++log->cancels; },
        [log](abandon_atom, std::string&, uint32_t) { ++log->abandons; },
        [self, log](beat_atom, node_link_actor& link, int64_t at_ms,
                    running_attempt& ra) {
          heartbeat hb;
          hb.node_id = "w1.c1";
          hb.at_ms = at_ms;
          hb.running = {std::move(ra)};
          self->request(link, 10s, heartbeat_atom::value, std::move(hb))
              .then(
                  [log](coordinator_reply& r) {
                    ++log->beats;
                    log->stopped += static_cast<int>(
                        r.superseded.size() + r.settled.size()
                        + r.handed_over.size() + r.owned_elsewhere.size());
                  },
                  [](caf::error&) {});
        },
    };
  });
}

int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// A coordinator's queue over `store` owning `partitions`; its adoption
/// waits and graces run on the process's monotonic clock (as the link's
/// deadlines do) moved on by `offset` with the scheduler.
queue_actor spawn_queue_on(fixture& f, const store_actor& store,
                           std::vector<int32_t> partitions,
                           std::shared_ptr<int64_t> offset, uint64_t seed) {
  queue_options qo;
  qo.adopt_grace = qo.adopt_wait = 10s;
  qo.clock_ms = [c = f.clock] { return *c; };
  qo.flow_clock_ms = [offset] { return steady_ms() + *offset; };
  qo.seed = seed;
  qo.partitions = std::move(partitions);
  qo.partition_count = 2;
  auto q = spawn_queue(
      f.sys, {store, spawn_progress_publisher(f.sys), f.handlers}, qo);
  f.sched.run();
  return q;
}

queue_stats stats_of(fixture& f, const queue_actor& q) {
  queue_stats out;
  f.self->send(q, stats_atom::value);
  f.sched.run();
  f.self->receive([&](queue_stats& st) { out = std::move(st); },
                  [](caf::error& err) { FAIL(describe(err)); },
                  caf::after(1s) >> [] { FAIL("no answer to stats"); });
  return out;
}

/// Attempt 1 of a job runs on slot w1.c1/cpu-0 of a worker node whose
/// partition is nobody's for now (its coordinator died, say); the real
/// link of that node at a coordinator whose queue is `first(p)` (p: the
/// job's partition), and the test's agent heartbeating it.
struct rig {
  fixture f{{}, 10s};
  worker_actor sink = spawn_idle_slot(f.sys);
  job_record rec = running_then_handed_away(f, "w1.c1/cpu-0", sink);
  int32_t p = partition_of_id(rec.job_id);
  running_attempt ra{rec.job_id, 1, "cpu"};
  std::shared_ptr<int64_t> offset = std::make_shared<int64_t>(0);
  std::shared_ptr<job_system_handles> handles
      = std::make_shared<job_system_handles>();
  std::shared_ptr<agent_log> log = std::make_shared<agent_log>();
  probe_agent_actor agent = spawn_probe_agent(f.sys, log);
  node_link_local link;

  explicit rig(const std::function<queue_actor(rig&)>& first) {
    handles->set_queue(first(*this));
    node_link_config lc;
    lc.node_id = "w1.c1";
    lc.coordinator_id = "c1";
    lc.registration.node_id = "w1.c1";
    lc.registration.role = "worker";
    lc.registration.capacity = {resource_capacity{"cpu", 1}};
    lc.registration.job_types = {"noop"};
    lc.agent = agent;
    lc.handles = handles;
    lc.lease_ttl = 5s;
    lc.heartbeat_interval = 500ms;
    lc.adoption_wait = 15s;
    lc.clock_ms = [c = f.clock] { return *c; };
    link = spawn_node_link(f.sys, lc);
    f.sched.run();
    // The node joins, listing the attempt: the link asks the queue to
    // adopt it.
    auto reg = lc.registration;
    reg.running = {ra};
    f.self->send(link, join_atom::value, reg, worker_agent_actor{agent});
    f.sched.run();
    f.self->receive([](coordinator_reply&) {},
                    [](caf::error& err) { FAIL(describe(err)); },
                    caf::after(1s) >> [] { FAIL("no answer to the join"); });
  }

  /// A heartbeat of the node, then `d` on every clock.
  void advance(std::chrono::milliseconds d = 500ms) {
    f.self->send(agent, beat_atom::value, node_link_actor{link}, *f.clock, ra);
    f.sched.run();
    *f.clock += d.count();
    *offset += d.count();
    f.sched.advance_time(d);
    f.sched.run();
  }

  /// Past the new queue's grace (10 s) and the link's wait for an answer
  /// (15 s): the attempt runs on at `q`, adopted once, never stopped.
  void check_runs_on(const queue_actor& q) {
    for (int i = 0; i < 40; ++i)
      advance();
    CHECK(log->beats >= 40);
    CHECK(log->stopped == 0);
    CHECK(log->cancels == 0);
    CHECK(log->abandons == 0);
    CHECK(stats_of(f, q).running == 1);
    int started = 0;
    for (const auto& ev : f.events(rec.job_id)) {
      CHECK(ev.kind != event_kind::worker_lost);
      started += ev.kind == event_kind::started ? 1 : 0;
    }
    CHECK(started == 1);
  }

  ~rig() {
    f.self->send_exit(link, caf::exit_reason::user_shutdown);
    f.self->send_exit(agent, caf::exit_reason::user_shutdown);
    f.self->send_exit(sink, caf::exit_reason::user_shutdown);
    f.sched.run();
  }
};

} // namespace

TEST_CASE("an adoption waiting in a queue that restarts is asked of the new "
          "queue: the attempt runs on, adopted once, and is not stopped",
          "[queue][partition][link]") {
  // This coordinator's queue does not own the partition yet: it keeps the
  // adoption waiting (up to 10 s) for the partition.
  queue_actor old_queue;
  rig r{[&](rig& x) {
    return old_queue
           = spawn_queue_on(x.f, x.f.store, all_but(x.p), x.offset, 7);
  }};
  r.advance();
  CHECK(stats_of(r.f, old_queue).running == 0);
  // The job system restarts: the new queue takes the partition and
  // recovers the attempt as waiting to be adopted; the old queue dies with
  // the request parked in it.
  auto new_queue = spawn_queue_on(r.f, r.f.store, {r.p}, r.offset, 8);
  r.handles->set_queue(new_queue);
  r.f.self->send_exit(old_queue, caf::exit_reason::kill);
  r.f.sched.run();
  // Within a tick of the link, the new queue adopts it.
  for (int i = 0; i < 2; ++i)
    r.advance();
  CHECK(stats_of(r.f, new_queue).running == 1);
  r.check_runs_on(new_queue);
  r.f.self->send_exit(new_queue, caf::exit_reason::user_shutdown);
}

TEST_CASE("an attempt whose job supervisor dies after the link follows a "
          "restarted queue is asked of the new queue at once",
          "[queue][partition][link]") {
  // The old queue owns the partition and adopts the attempt; its job
  // supervisor watches the old store (a proxy of the test's, so that it
  // can die alone).
  auto ps = std::make_shared<proxy_state>();
  store_actor old_store;
  queue_actor old_queue;
  rig r{[&](rig& x) {
    old_store = x.f.sys.spawn(proxy_impl, x.f.store, ps, 0);
    return old_queue = spawn_queue_on(x.f, old_store, {x.p}, x.offset, 7);
  }};
  r.advance();
  CHECK(stats_of(r.f, old_queue).running == 1);
  // The new queue is up and the link follows it (a tick) before the old
  // job supervisor's end reaches the link: nothing of the attempt is
  // asked then (its supervisor lives).
  auto new_queue = spawn_queue_on(r.f, r.f.store, {r.p}, r.offset, 8);
  r.handles->set_queue(new_queue);
  for (int i = 0; i < 2; ++i)
    r.advance();
  CHECK(stats_of(r.f, new_queue).running == 0);
  // Then the old store dies, and with it the old job supervisor: the link
  // asks the new queue at once (before, follow_queue had passed already
  // and the attempt stayed without a supervisor while the new queue
  // settled it lost after its grace and ran the job again).
  r.f.self->send_exit(old_store, caf::exit_reason::kill);
  r.f.self->send_exit(old_queue, caf::exit_reason::kill);
  r.f.sched.run();
  r.advance();
  CHECK(stats_of(r.f, new_queue).running == 1);
  r.check_runs_on(new_queue);
  r.f.self->send_exit(new_queue, caf::exit_reason::user_shutdown);
}

TEST_CASE("an adoption request bounced by a queue that died is asked of the "
          "next queue, not taken for a refusal",
          "[queue][partition][link]") {
  // The queue has died and the job system has not started the next one:
  // the link's request is bounced (request_receiver_down). The attempt
  // waits for the next queue (before, the bounce was a refusal and the
  // attempt was stopped).
  queue_actor old_queue;
  rig r{[&](rig& x) {
    old_queue = spawn_queue_on(x.f, x.f.store, all_but(x.p), x.offset, 7);
    x.f.self->send_exit(old_queue, caf::exit_reason::kill);
    x.f.sched.run();
    return old_queue;
  }};
  for (int i = 0; i < 2; ++i)
    r.advance();
  CHECK(r.log->stopped == 0);
  auto new_queue = spawn_queue_on(r.f, r.f.store, {r.p}, r.offset, 8);
  r.handles->set_queue(new_queue);
  for (int i = 0; i < 2; ++i)
    r.advance();
  CHECK(stats_of(r.f, new_queue).running == 1);
  r.check_runs_on(new_queue);
  r.f.self->send_exit(new_queue, caf::exit_reason::user_shutdown);
}
