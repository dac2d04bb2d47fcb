#include "actors/worker.hpp"

#include "runtime/thread_cache.hpp"

#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"
#include "runtime/log_caf.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/send.hpp>
#include <caf/stateful_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

namespace drover {

namespace {

/// The worker's own interface: its public one plus what the handler's
/// thread sends it (relay_sink, and the attempt's outcome). Only this file
/// sees it.
using worker_impl_actor = local_worker_actor::extend<
    caf::reacts_to<progress_atom, progress_update>,
    caf::reacts_to<checkpoint_atom, std::string, uint32_t, std::string>,
    caf::reacts_to<take_atom, std::string, uint32_t, uint64_t, uint32_t>,
    caf::reacts_to<done_atom, completion>>;

/// Turns the handler's reports into messages to its worker; runs on the
/// handler's thread.
class relay_sink : public task_sink {
public:
  explicit relay_sink(worker_impl_actor worker) : worker_(std::move(worker)) {
    // nop
  }

  void on_progress(const progress_update& update) override {
    caf::anon_send(worker_, progress_atom::value, update);
  }

  void on_checkpoint(const std::string& job_id, uint32_t attempt,
                     const std::string& bytes) override {
    caf::anon_send(worker_, checkpoint_atom::value, job_id, attempt, bytes);
  }

  bool on_take(const std::string& job_id, uint32_t attempt, uint64_t seq,
               uint32_t wanted) override {
    caf::anon_send(worker_, take_atom::value, job_id, attempt, seq, wanted);
    return true;
  }

private:
  worker_impl_actor worker_;
};

/// How long a worker waits for an answer to a token request (longer than
/// the agent's and the link's own requests, so they answer first), and
/// when a take without an answer asks again.
constexpr auto token_request_timeout = std::chrono::seconds{30};
constexpr int64_t token_retry_ms = 200;

struct worker_state {
  worker_config cfg;
  bool busy = false;
  std::string job_id;
  uint32_t attempt = 0;
  /// Where reports go (the attempt's owner); null once the attempt was
  /// abandoned.
  attempt_owner_actor owner;
  std::shared_ptr<task_context> ctx;

  ~worker_state() {
    // The worker dies (crash, kill, shutdown) with an attempt in flight:
    // ask the handler to stop so no program or thread runs on unowned.
    if (ctx)
      ctx->request_cancel();
  }

  static inline const char* name = "drover.worker";
};

using self_ptr = worker_impl_actor::stateful_pointer<worker_state>;

bool is_current(self_ptr self, const std::string& job_id, uint32_t attempt) {
  auto& st = self->state;
  return st.busy && st.job_id == job_id && st.attempt == attempt;
}

/// Forced stop: nothing more from the attempt goes to its owner.
void abandon(self_ptr self, const std::string& job_id, uint32_t attempt) {
  auto& st = self->state;
  if (!is_current(self, job_id, attempt))
    return;
  st.owner = nullptr;
  if (st.ctx)
    st.ctx->request_cancel();
}

void announce_ready(self_ptr self) {
  auto& st = self->state;
  self->send(st.cfg.home, ready_atom::value, st.cfg.resource_class,
             st.cfg.worker_id, local_worker_actor{self});
}

/// (run_atom, lease, owner), whoever owns the attempt.
void on_run(self_ptr self, lease& l, attempt_owner_actor owner) {
  auto& st = self->state;
  if (st.busy) {
    // The queue never double-books a worker; refuse loudly if it does.
    completion c;
    c.job_id = l.job_id;
    c.attempt = l.attempt;
    c.outcome = completion_outcome::failed_retryable;
    c.error = {"worker_busy", "worker " + st.cfg.worker_id + " is busy", true};
    self->send(owner, done_atom::value, std::move(c));
    return;
  }
  st.busy = true;
  st.job_id = l.job_id;
  st.attempt = l.attempt;
  st.owner = std::move(owner);
  const auto* handler = st.cfg.handlers->find(l.spec.type);
  if (handler == nullptr || !handler->fn) { // unknown, or run elsewhere
    completion c;
    c.job_id = l.job_id;
    c.attempt = l.attempt;
    c.outcome = completion_outcome::failed_permanent;
    c.error = {"unknown_type",
               "no handler for job type '" + l.spec.type + "' on worker "
                   + st.cfg.worker_id,
               false};
    self->send(self, done_atom::value, std::move(c));
    return;
  }
  auto me = worker_impl_actor{self};
  st.ctx = std::make_shared<task_context>(
      l.job_id, l.attempt, std::move(l.spec.input), std::move(l.checkpoint),
      std::make_shared<relay_sink>(me), st.cfg.clock_ms);
  // The body owns copies of everything it touches: its thread may outlive
  // this worker (a handler that ignores cancellation).
  auto body = [ctx = st.ctx, fn = handler->fn, me] {
    task_outcome out;
    try {
      out = fn(*ctx);
    } catch (const std::exception& e) {
      out = task_outcome::retryable("handler_exception", e.what());
    } catch (...) {
      out = task_outcome::retryable("handler_exception",
                                    "the handler threw a non-std exception");
    }
    completion c;
    c.job_id = ctx->job_id();
    c.attempt = ctx->attempt();
    c.outcome = out.outcome();
    c.result = out.result();
    c.error = out.error();
    caf::anon_send(me, done_atom::value, std::move(c));
  };
  if (st.cfg.executor)
    st.cfg.executor(std::move(body));
  else
    thread_cache::shared_executor()(std::move(body));
}

worker_impl_actor::behavior_type worker_impl(self_ptr self, worker_config cfg) {
  self->state.cfg = std::move(cfg);
  // A stray message or error must not take the worker (and its attempt)
  // down: CAF's defaults for typed actors quit.
  self->set_default_handler(log_and_drop);
  self->set_error_handler([self](caf::error& err) {
    log::warn(
        "worker", "unexpected error message",
        {{"worker", self->state.cfg.worker_id}, {"error", describe(err)}});
  });
  announce_ready(self);
  return {
      [self](run_atom, lease& l, job_supervisor_actor& js) {
        on_run(self, l, std::move(js));
      },
      [self](run_atom, lease& l, attempt_owner_actor& owner) {
        on_run(self, l, std::move(owner));
      },
      [self](progress_atom, progress_update& update) {
        auto& st = self->state;
        if (is_current(self, update.job_id, update.attempt) && st.owner)
          self->send(st.owner, progress_atom::value, std::move(update));
      },
      [self](checkpoint_atom, std::string& job_id, uint32_t attempt,
             std::string& bytes) {
        auto& st = self->state;
        if (is_current(self, job_id, attempt) && st.owner)
          self->send(st.owner, checkpoint_atom::value, std::move(job_id),
                     attempt, std::move(bytes));
      },
      [self](take_atom, std::string& job_id, uint32_t attempt, uint64_t seq,
             uint32_t wanted) {
        // Tokens of the job's rate limit, from whoever hands out this
        // worker's leases (the queue, or its node's agent), naming the
        // attempt by this worker.
        auto& st = self->state;
        auto ctx = st.ctx;
        if (!ctx || !is_current(self, job_id, attempt) || !st.owner) {
          if (ctx && ctx->job_id() == job_id && ctx->attempt() == attempt)
            ctx->tokens_answered(
                seq, 0, 0,
                make_error(errc::stale_attempt, "the attempt no longer runs"));
          return;
        }
        self->request(st.cfg.home, token_request_timeout, take_atom::value,
                      std::move(job_id), worker_actor{self}, wanted)
            .then(
                [ctx, seq](uint32_t granted, int64_t retry_ms) {
                  ctx->tokens_answered(seq, granted, retry_ms, {});
                },
                [ctx, seq](caf::error& err) {
                  // No answer (a timeout, a coordinator going away): the
                  // take asks again, within its handler's own deadline.
                  if (err.category() != errc_category
                      || is(err, errc::unavailable)) {
                    log::debug("worker", log::job{ctx->job_id()},
                               "a token request went unanswered; the take "
                               "asks again",
                               {{"error", describe(err)}});
                    ctx->tokens_answered(seq, 0, token_retry_ms, {});
                  } else
                    ctx->tokens_answered(seq, 0, 0, std::move(err));
                });
      },
      [self](done_atom, completion& c) {
        auto& st = self->state;
        if (!is_current(self, c.job_id, c.attempt))
          return;
        if (st.owner)
          self->send(st.owner, done_atom::value, std::move(c));
        st.busy = false;
        st.owner = nullptr;
        st.ctx.reset();
        announce_ready(self);
      },
      [self](cancel_atom, const std::string& job_id, uint32_t attempt) {
        auto& st = self->state;
        if (is_current(self, job_id, attempt) && st.ctx)
          st.ctx->request_cancel();
      },
      [self](abandon_atom, const std::string& job_id, uint32_t attempt) {
        abandon(self, job_id, attempt);
      },
      [self](handover_atom, const std::string& job_id, uint32_t attempt) {
        // A coordinator's own slot cannot go with its partition: stopped.
        abandon(self, job_id, attempt);
      },
  };
}

} // namespace

local_worker_actor spawn_worker(caf::actor_system& sys, worker_config config) {
  // The private extension converts to its public subset: no actor_cast.
  return sys.spawn(worker_impl, std::move(config));
}

} // namespace drover
