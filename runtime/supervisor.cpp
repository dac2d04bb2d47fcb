#include "runtime/supervisor.hpp"

#include "runtime/backoff.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <algorithm>
#include <deque>
#include <memory>
#include <random>
#include <set>

namespace drover {

namespace {

using restart_atom = caf::atom_constant<caf::atom("sv_restart")>;
using restart_all_atom = caf::atom_constant<caf::atom("sv_resall")>;
using kill_atom = caf::atom_constant<caf::atom("sv_kill")>;

/// The supervisor's own interface: supervisor_actor plus its timers. Only
/// spawn_supervisor sees it.
using supervisor_impl_actor = supervisor_actor::extend<
    caf::reacts_to<restart_atom, std::string, uint64_t>,
    caf::reacts_to<restart_all_atom, uint64_t>,
    caf::reacts_to<kill_atom, std::string, uint64_t>>;

using clock_type = caf::actor_clock::clock_type;
using time_point = caf::actor_clock::time_point;
using std::chrono::milliseconds;

/// Exits that do not count as failures for transient children.
bool is_normal_exit(const caf::error& reason) {
  return !reason || reason == caf::exit_reason::normal
         || reason == caf::exit_reason::user_shutdown;
}

struct child {
  child_spec spec;
  /// Strong handle: keeps the child alive (an unreferenced event-based actor
  /// is terminated at once) and lets us stop it.
  caf::actor handle;
  child_state state = child_state::starting;
  uint32_t restarts = 0;
  /// Failures in a row without a healthy run of at least `period`.
  uint32_t consecutive = 0;
  time_point started_at;
  std::string last_exit;
  /// Bumped at every start; timers carry it so stale ones are ignored.
  uint64_t generation = 0;
};

/// What the supervisor is doing as a whole.
enum class mode {
  normal,
  /// one_for_all: stopping survivors before restarting everyone.
  stopping_for_restart,
  /// one_for_all: everyone stopped, waiting out the backoff.
  waiting_for_restart,
  /// Orderly shutdown (asked for, or escalation); ends with quit.
  shutting_down,
};

struct supervisor_state {
  std::string name;
  supervisor_flags flags;
  std::vector<child> children;
  /// Start times of recent restarts, for the intensity check.
  std::deque<time_point> restart_log;
  std::minstd_rand rng;
  mode current = mode::normal;
  /// Reason to exit with once a shutdown completes.
  caf::error exit_reason;
  time_point started_at;
  /// one_for_all: consecutive whole-group restarts, and the timer guard.
  uint32_t group_consecutive = 0;
  uint64_t group_generation = 0;
  /// Children alive right now. Shared with the functor attached at start,
  /// which kills them if this supervisor terminates without stopping them
  /// (e.g. it was killed). Links would do that too, but CAF makes a linked
  /// peer's `kill` exit fatal, so one killed worker would take the whole
  /// tree down.
  std::shared_ptr<std::set<caf::actor_addr>> alive
      = std::make_shared<std::set<caf::actor_addr>>();
};

using self_ptr = supervisor_impl_actor::stateful_pointer<supervisor_state>;

time_point now(self_ptr self) {
  return self->clock().now();
}

int64_t ms_between(time_point from, time_point to) {
  return std::chrono::duration_cast<milliseconds>(to - from).count();
}

child* find_child(self_ptr self, const caf::actor_addr& addr) {
  for (auto& c : self->state.children)
    if (c.handle && c.handle.address() == addr)
      return &c;
  return nullptr;
}

double draw_uniform(self_ptr self) {
  std::uniform_real_distribution<double> dist{0.0, 1.0};
  auto u = dist(self->state.rng);
  return u >= 1.0 ? 0.0 : u;
}

void begin_shutdown(self_ptr self, caf::error reason);

/// Starts (or restarts) one child. A failed start is handled like a crash
/// right after the start, so it is counted against the intensity budget.
bool start_child(self_ptr self, child& c) {
  caf::actor handle;
  std::string failure;
  try {
    handle = c.spec.start(self->system(), self->address());
    if (!handle)
      failure = "factory returned an invalid handle";
  } catch (const std::exception& e) {
    failure = std::string{"factory threw: "} + e.what();
  }
  ++c.generation;
  if (!handle) {
    c.handle = nullptr;
    c.state = child_state::failed;
    c.last_exit = failure;
    return false;
  }
  c.handle = std::move(handle);
  c.state = child_state::running;
  c.started_at = now(self);
  self->monitor(c.handle);
  self->state.alive->insert(c.handle.address());
  return true;
}

/// Records one restart; false means the intensity budget is exhausted.
bool admit_restart(self_ptr self) {
  auto& st = self->state;
  auto t = now(self);
  auto window_start = t - st.flags.period;
  while (!st.restart_log.empty() && st.restart_log.front() <= window_start)
    st.restart_log.pop_front();
  st.restart_log.push_back(t);
  return st.restart_log.size() <= st.flags.intensity;
}

void escalate(self_ptr self, const child& c) {
  auto& st = self->state;
  auto msg = st.name + ": child '" + c.spec.name + "' restarted more than "
             + std::to_string(st.flags.intensity) + " times in "
             + std::to_string(st.flags.period.count())
             + " ms (last exit: " + c.last_exit + ")";
  begin_shutdown(self, make_error(errc::escalated, std::move(msg)));
}

/// Asks one child to stop; arms the kill timer for its shutdown timeout.
void request_stop(self_ptr self, child& c) {
  c.state = child_state::stopping;
  self->send_exit(c.handle, caf::exit_reason::user_shutdown);
  self->delayed_send(self, c.spec.shutdown_timeout, kill_atom::value,
                     c.spec.name, c.generation);
}

void restart_all(self_ptr self);

/// Drives sequential stops (shutdown and one_for_all): stops the last child
/// that still runs; when none is left, finishes what the stop was for.
void stop_next(self_ptr self) {
  auto& st = self->state;
  for (auto i = st.children.rbegin(); i != st.children.rend(); ++i) {
    if (i->state == child_state::stopping)
      return; // wait for its down message
    if (i->state == child_state::running) {
      request_stop(self, *i);
      return;
    }
  }
  // Everyone is down.
  if (st.current == mode::shutting_down) {
    for (auto& c : st.children)
      if (c.state != child_state::failed)
        c.state = child_state::stopped;
    self->quit(st.exit_reason);
    return;
  }
  if (st.current == mode::stopping_for_restart) {
    st.current = mode::waiting_for_restart;
    // Temporary children are never restarted, not even with the group.
    auto& cs = st.children;
    cs.erase(std::remove_if(cs.begin(), cs.end(),
                            [](const child& x) {
                              return x.spec.restart == restart_type::temporary;
                            }),
             cs.end());
    for (auto& c : st.children)
      c.state = child_state::restarting;
    auto delay = backoff_delay(st.flags.backoff, st.group_consecutive++,
                               draw_uniform(self));
    self->delayed_send(self, delay, restart_all_atom::value,
                       ++st.group_generation);
  }
}

void begin_shutdown(self_ptr self, caf::error reason) {
  auto& st = self->state;
  if (st.current == mode::shutting_down)
    return;
  st.current = mode::shutting_down;
  st.exit_reason = std::move(reason);
  // Children waiting for a restart have nothing to stop.
  for (auto& c : st.children)
    if (c.state == child_state::restarting)
      c.state = child_state::stopped;
  stop_next(self);
}

void schedule_restart(self_ptr self, child& c) {
  auto& st = self->state;
  c.state = child_state::restarting;
  auto delay
      = backoff_delay(st.flags.backoff, c.consecutive++, draw_uniform(self));
  self->delayed_send(self, delay, restart_atom::value, c.spec.name,
                     c.generation);
}

/// A child that should restart has died (or failed to start).
void on_child_failure(self_ptr self, child& c) {
  auto& st = self->state;
  ++c.restarts;
  if (!admit_restart(self)) {
    c.state = child_state::failed;
    escalate(self, c);
    return;
  }
  if (st.flags.strat == strategy::one_for_one) {
    schedule_restart(self, c);
    return;
  }
  // one_for_all: stop the survivors, then restart everybody.
  c.state = child_state::stopped;
  st.current = mode::stopping_for_restart;
  stop_next(self);
}

void restart_all(self_ptr self) {
  auto& st = self->state;
  st.current = mode::normal;
  for (auto& c : st.children) {
    if (c.state != child_state::restarting)
      continue;
    if (!start_child(self, c)) {
      on_child_failure(self, c);
      return;
    }
  }
}

void on_down(self_ptr self, caf::down_msg& dm) {
  auto& st = self->state;
  auto* c = find_child(self, dm.source);
  if (c == nullptr)
    return; // a stale incarnation or someone we do not supervise
  c->handle = nullptr;
  st.alive->erase(dm.source);
  if (dm.reason && !is_normal_exit(dm.reason))
    c->last_exit = self->system().render(dm.reason);
  if (st.current == mode::shutting_down
      || st.current == mode::stopping_for_restart) {
    // Expected (or at least irrelevant now): continue the stop sequence.
    c->state = child_state::stopped;
    stop_next(self);
    return;
  }
  // A healthy run resets the backoff.
  if (now(self) - c->started_at >= st.flags.period) {
    c->consecutive = 0;
    st.group_consecutive = 0;
  }
  bool restart = false;
  switch (c->spec.restart) {
    case restart_type::permanent:
      restart = true;
      break;
    case restart_type::transient:
      restart = !is_normal_exit(dm.reason);
      break;
    case restart_type::temporary:
      restart = false;
      break;
  }
  if (restart) {
    on_child_failure(self, *c);
    return;
  }
  if (c->spec.restart == restart_type::temporary) {
    auto name = c->spec.name;
    auto& cs = st.children;
    cs.erase(
        std::remove_if(cs.begin(), cs.end(),
                       [&name](const child& x) { return x.spec.name == name; }),
        cs.end());
    return;
  }
  c->state = child_state::stopped;
}

tree_node leaf_of(self_ptr self, const child& c) {
  tree_node n;
  n.name = c.spec.name;
  n.kind = c.spec.kind;
  n.state = c.state;
  n.restart = c.spec.restart;
  n.restarts = c.restarts;
  n.uptime_ms = c.state == child_state::running
                    ? ms_between(c.started_at, now(self))
                    : 0;
  n.last_exit = c.last_exit;
  return n;
}

/// Collects the answers of supervisor children for one describe request.
struct describe_fanin {
  tree_node result;
  size_t pending = 0;
  caf::typed_response_promise<tree_node> promise;
};

caf::typed_response_promise<tree_node> describe(self_ptr self) {
  auto& st = self->state;
  auto rp = self->make_response_promise<tree_node>();
  auto fan = std::make_shared<describe_fanin>();
  fan->promise = rp;
  auto& root = fan->result;
  root.name = st.name;
  root.kind = child_kind::supervisor;
  root.state = st.current == mode::shutting_down ? child_state::stopping
                                                 : child_state::running;
  root.strat = st.flags.strat;
  root.uptime_ms = ms_between(st.started_at, now(self));
  auto asks = [](const child& c) {
    return (c.spec.kind == child_kind::supervisor || c.spec.describable)
           && c.state == child_state::running;
  };
  for (auto& c : st.children) {
    root.children.push_back(leaf_of(self, c));
    if (asks(c))
      ++fan->pending;
  }
  if (fan->pending == 0) {
    rp.deliver(std::move(root));
    return rp;
  }
  for (size_t i = 0; i < st.children.size(); ++i) {
    auto& c = st.children[i];
    if (!asks(c))
      continue;
    auto finish = [fan] {
      if (--fan->pending == 0)
        fan->promise.deliver(std::move(fan->result));
    };
    // Children are of any type (caf::actor): the request is checked when
    // answered, and a child that does not answer describe_atom shows why.
    self->request(c.handle, st.flags.describe_timeout, describe_atom::value)
        .then(
            [fan, i, finish](tree_node& sub) {
              // Our view of the child (state, restarts, uptime) wins; the
              // child contributes its strategy and its own subtree.
              auto& slot = fan->result.children[i];
              if (slot.kind == child_kind::supervisor)
                slot.strat = sub.strat;
              slot.children = std::move(sub.children);
              finish();
            },
            [self, fan, i, finish](caf::error& err) {
              fan->result.children[i].last_exit
                  = "describe failed: " + self->system().render(err);
              finish();
            });
  }
  return rp;
}

supervisor_impl_actor::behavior_type supervisor_impl(self_ptr self,
                                                     supervisor_spec spec) {
  auto& st = self->state;
  st.name = std::move(spec.name);
  st.flags = spec.flags;
  st.rng.seed(static_cast<std::minstd_rand::result_type>(
      st.flags.seed != 0 ? st.flags.seed : std::random_device{}()));
  st.started_at = now(self);
  for (auto& cs : spec.children) {
    child c;
    c.spec = std::move(cs);
    st.children.push_back(std::move(c));
  }
  self->set_down_handler([self](caf::down_msg& dm) { on_down(self, dm); });
  self->set_exit_handler([self](caf::exit_msg& em) {
    // Our own supervisor (or the node) asks us to stop.
    begin_shutdown(self, std::move(em.reason));
  });
  self->attach_functor([alive = st.alive](const caf::error&) {
    for (const auto& child : *alive)
      caf::anon_send_exit(child, caf::exit_reason::kill);
  });
  // Every request we make has its own error continuation; this only keeps a
  // stray error message from killing the supervisor (CAF's default), and
  // says so in the log.
  self->set_error_handler([self](caf::error& err) {
    log::warn("supervisor", "unexpected error message",
              {{"supervisor", self->state.name},
               {"error", self->system().render(err)}});
  });
  // Start children in order; a child that cannot start at boot is a boot
  // failure of the whole supervisor (as in OTP): stop what runs and exit.
  for (auto& c : st.children) {
    if (!start_child(self, c)) {
      begin_shutdown(self,
                     make_error(errc::escalated,
                                st.name + ": child '" + c.spec.name
                                    + "' failed to start: " + c.last_exit));
      break;
    }
  }
  return {
      [self](describe_atom) -> caf::typed_response_promise<tree_node> {
        return describe(self);
      },
      [self](restart_atom, const std::string& name, uint64_t generation) {
        auto& st = self->state;
        if (st.current != mode::normal)
          return;
        for (auto& c : st.children) {
          if (c.spec.name != name || c.generation != generation
              || c.state != child_state::restarting)
            continue;
          if (!start_child(self, c))
            on_child_failure(self, c);
          return;
        }
      },
      [self](restart_all_atom, uint64_t generation) {
        auto& st = self->state;
        if (st.current != mode::waiting_for_restart
            || generation != st.group_generation)
          return;
        restart_all(self);
      },
      [self](kill_atom, const std::string& name, uint64_t generation) {
        for (auto& c : self->state.children) {
          if (c.spec.name == name && c.generation == generation
              && c.state == child_state::stopping && c.handle) {
            c.last_exit = "did not stop within "
                          + std::to_string(c.spec.shutdown_timeout.count())
                          + " ms; killed";
            self->send_exit(c.handle, caf::exit_reason::kill);
          }
        }
      },
  };
}

} // namespace

std::chrono::milliseconds backoff_delay(const restart_backoff& policy,
                                        uint32_t consecutive_failures,
                                        double uniform01) {
  backoff_schedule schedule;
  schedule.initial = policy.initial;
  schedule.max = policy.max;
  schedule.multiplier = policy.multiplier;
  schedule.jitter = policy.jitter;
  return schedule.delay(consecutive_failures, uniform01);
}

caf::error validate(const supervisor_spec& spec) {
  auto bad = [&spec](const std::string& what) {
    return make_error(errc::bad_config,
                      "supervisor '" + spec.name + "': " + what);
  };
  if (spec.name.empty())
    return bad("name must not be empty");
  const auto& f = spec.flags;
  if (f.period.count() <= 0)
    return bad("period must be positive");
  if (f.backoff.jitter < 0.0 || f.backoff.jitter > 1.0)
    return bad("backoff jitter must be within [0, 1]");
  if (f.backoff.multiplier < 1.0)
    return bad("backoff multiplier must be >= 1");
  if (f.backoff.initial.count() < 0 || f.backoff.initial > f.backoff.max)
    return bad("backoff initial delay must be within [0, max]");
  if (f.describe_timeout.count() <= 0)
    return bad("describe timeout must be positive");
  std::set<std::string> names;
  for (const auto& c : spec.children) {
    if (c.name.empty())
      return bad("a child has an empty name");
    if (!names.insert(c.name).second)
      return bad("duplicate child name '" + c.name + "'");
    if (!c.start)
      return bad("child '" + c.name + "' has no start function");
    if (c.shutdown_timeout.count() <= 0)
      return bad("child '" + c.name + "' needs a positive shutdown timeout");
  }
  return caf::none;
}

caf::expected<supervisor_actor> spawn_supervisor(caf::actor_system& sys,
                                                 supervisor_spec spec) {
  if (auto err = validate(spec))
    return err;
  // The private extension converts to its subset: no actor_cast.
  supervisor_actor handle = sys.spawn(supervisor_impl, std::move(spec));
  return handle;
}

child_spec supervisor_child(supervisor_spec spec, restart_type restart,
                            std::chrono::milliseconds shutdown_timeout) {
  child_spec result;
  result.name = spec.name;
  result.restart = restart;
  result.kind = child_kind::supervisor;
  result.shutdown_timeout = shutdown_timeout;
  result.start = [spec = std::move(spec)](caf::actor_system& sys,
                                          const caf::actor_addr&) {
    auto sup = spawn_supervisor(sys, spec);
    if (!sup)
      return caf::actor{};
    return child_handle(*sup);
  };
  return result;
}

} // namespace drover
