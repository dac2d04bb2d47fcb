#include "drover/client.hpp"

#include "runtime/backoff.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/errors.hpp"
#include "runtime/ids.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>

#include <algorithm>
#include <mutex>
#include <random>
#include <set>
#include <thread>

namespace drover {

namespace {

using clock_type = std::chrono::steady_clock;

/// A failure of the connection, not an answer: CAF's own errors
/// ("system": timeouts, lost connections) and exit reasons ("exit": a
/// request whose receiver became unreachable, e.g. a coordinator killed
/// while it was pending).
bool transport_failure(const caf::error& err) {
  static const auto exit_category
      = caf::make_error(caf::exit_reason::unreachable).category();
  return err.category() == caf::atom("system")
         || err.category() == exit_category;
}

/// What a request holds until a handler sets it: a request answered by
/// neither handler counts as unanswered (transient), never as success.
caf::error unanswered() {
  return make_error(errc::unavailable, "the node did not answer");
}

/// Worth trying again: the connection failed, or the node said it cannot
/// serve right now (its store reconnects, this key's rate is spent, or
/// admission control refuses more work for now).
bool transient(const caf::error& err) {
  return transport_failure(err) || is(err, errc::unavailable)
         || is(err, errc::rate_limited) || is(err, errc::overloaded);
}

/// Whether a request that ended with `err` may still have taken effect:
/// its answer was lost, or the node's store failed while writing (a commit
/// cut off). Every other answer is definite.
bool may_have_acted(const caf::error& err) {
  return transport_failure(err) || is(err, errc::unavailable);
}

std::chrono::milliseconds left(clock_type::time_point deadline) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - clock_type::now());
}

/// A key for a submission that came without one: random, so that only a
/// resend of this very submission finds its job.
std::string generated_key() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string key = "drover-client-";
  for (int i = 0; i < 32; ++i)
    key += hex[rng() % 16];
  return key;
}

struct address {
  std::string host;
  uint16_t port = 0;
};

} // namespace

struct client::impl {
  client_options opts;
  std::vector<address> addresses;
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::mutex mx;
  client_door_actor door;
  size_t turn = 0;

  backoff_schedule schedule() const {
    return {opts.reconnect_initial, opts.reconnect_max, 2.0, 1.0};
  }

  /// Sleeps the next backoff delay unless the deadline comes first; false
  /// if no time is left.
  static bool pause(backoff_counter& bo, clock_type::time_point deadline) {
    auto wait = std::min(bo.next(), left(deadline));
    if (wait.count() <= 0)
      return false;
    std::this_thread::sleep_for(wait);
    return clock_type::now() < deadline;
  }

  /// The door, connecting (the next address after each failure) until
  /// `deadline`.
  caf::expected<client_door_actor> connect(clock_type::time_point deadline) {
    backoff_counter bo{schedule()};
    std::string last;
    for (;;) {
      address a;
      {
        std::lock_guard<std::mutex> guard{mx};
        if (door)
          return door;
        a = addresses[turn % addresses.size()];
      }
      auto d = connect_client_door(
          *sys, a.host, a.port,
          std::min(left(deadline), std::chrono::milliseconds{5000}));
      if (d) {
        std::lock_guard<std::mutex> guard{mx};
        if (!door)
          door = *d;
        return door;
      }
      last = a.host + ':' + std::to_string(a.port) + ": " + describe(d.error());
      {
        std::lock_guard<std::mutex> guard{mx};
        ++turn;
      }
      if (!pause(bo, deadline))
        return make_error(errc::unavailable,
                          "no node answered (last: " + last + ")");
    }
  }

  /// Forgets a door whose connection failed; the next call connects to the
  /// next address.
  void drop(const client_door_actor& failed) {
    std::lock_guard<std::mutex> guard{mx};
    if (door == failed) {
      door = nullptr;
      ++turn;
    }
  }

  /// What became of a call's attempts.
  struct attempts {
    int sent = 0;
    /// An attempt may have acted without its answer arriving.
    bool maybe_acted = false;
  };

  /// One request, sent again after transient failures until `deadline`.
  template <class T, class... Ts>
  caf::expected<T> call(clock_type::time_point deadline, attempts* info,
                        Ts... xs) {
    backoff_counter bo{schedule()};
    // The previous attempt's transient answer: what the call ends with if
    // no time is left for another (an `overloaded` stays itself).
    caf::error previous;
    for (;;) {
      auto d = connect(deadline);
      if (!d)
        return std::move(d.error());
      auto budget = left(deadline);
      if (budget.count() <= 0)
        return previous ? std::move(previous)
                        : make_error(errc::unavailable, "no answer in time");
      caf::expected<T> result{unanswered()};
      {
        caf::scoped_actor self{*sys};
        self->request(*d, budget, client_atom::value, opts.api_key, xs...)
            .receive([&](T& x) { result = std::move(x); },
                     [&](caf::error& err) { result = std::move(err); });
      }
      if (info) {
        ++info->sent;
        if (!result && may_have_acted(result.error()))
          info->maybe_acted = true;
      }
      if (result || !transient(result.error()))
        return result;
      if (transport_failure(result.error()))
        drop(*d);
      if (!pause(bo, deadline))
        return result;
      previous = result.error();
    }
  }

  /// call() with the options' timeout, for requests that change nothing.
  template <class T, class... Ts>
  caf::expected<T> ask(Ts... xs) {
    attempts* none = nullptr;
    return call<T>(clock_type::now() + opts.timeout, none, xs...);
  }

  /// A call that changes a job. When an earlier attempt may have acted
  /// unanswered, a conflict may be that attempt's own effect: the job is
  /// then read (within the same deadline) and returned if `done(record)`
  /// holds. A conflict on a first, answered attempt is the answer.
  template <class... Ts>
  caf::expected<job_record> change(const std::string& id,
                                   bool (*done)(const job_record&), Ts... xs) {
    auto deadline = clock_type::now() + opts.timeout;
    attempts info;
    auto r = call<job_record>(deadline, &info, xs...);
    if (!r && is(r.error(), errc::conflict) && info.maybe_acted) {
      attempts* none = nullptr;
      auto now = call<job_record>(deadline, none, get_atom::value, id);
      if (now && done(*now))
        return now;
    }
    return r;
  }
};

client::client(std::unique_ptr<impl> p) : impl_(std::move(p)) {
  // nop
}

client::~client() = default;

caf::expected<std::unique_ptr<client>> client::make(client_options opts) {
  auto bad = [](const std::string& what) {
    return make_error(errc::bad_config, what);
  };
  if (opts.nodes.empty())
    return bad("client: no node address");
  if (opts.timeout.count() <= 0 || opts.reconnect_initial.count() < 0
      || opts.reconnect_max < opts.reconnect_initial)
    return bad("client: timeouts must be positive, reconnect_max >= "
               "reconnect_initial");
  auto p = std::make_unique<impl>();
  for (const auto& n : opts.nodes) {
    auto colon = n.rfind(':');
    if (colon == std::string::npos || colon == 0)
      return bad("client: node address '" + n + "' is not host:port");
    auto port_text = n.substr(colon + 1);
    if (port_text.empty() || port_text.size() > 5
        || port_text.find_first_not_of("0123456789") != std::string::npos
        || std::stoi(port_text) < 1 || std::stoi(port_text) > 65535)
      return bad("client: node address '" + n + "' has no port in [1, 65535]");
    auto host = n.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']')
      host = host.substr(1, host.size() - 2);
    p->addresses.push_back({host, static_cast<uint16_t>(std::stoi(port_text))});
  }
  p->opts = std::move(opts);
  register_types(p->cfg);
  p->cfg.load<caf::io::middleman>();
  p->cfg.set("scheduler.max-threads", size_t{2});
  p->sys = std::make_unique<caf::actor_system>(p->cfg);
  return std::unique_ptr<client>{new client{std::move(p)}};
}

caf::expected<submitted> client::submit(submit_request req) {
  if (req.idempotency_key.empty())
    req.idempotency_key = generated_key();
  auto key = req.idempotency_key;
  impl::attempts info;
  auto r = impl_->call<job_record>(clock_type::now() + impl_->opts.timeout,
                                   &info, submit_atom::value, req);
  if (!r) {
    // Any attempt that may have made the job, whatever the last one said.
    if (info.maybe_acted)
      return make_error(errc::outcome_unknown,
                        "the submission may have been made, but its answer "
                        "did not arrive in time; "
                        "submit again with idempotency key '"
                            + key + "' to learn whether it was made");
    return std::move(r.error());
  }
  return submitted{std::move(*r), key};
}

caf::expected<std::vector<submitted>>
client::submit(std::vector<submit_request> reqs) {
  for (auto& req : reqs)
    if (req.idempotency_key.empty())
      req.idempotency_key = generated_key();
  impl::attempts info;
  auto r = impl_->call<std::vector<job_record>>(
      clock_type::now() + impl_->opts.timeout, &info, submit_atom::value, reqs);
  if (!r) {
    if (info.maybe_acted)
      return make_error(errc::outcome_unknown,
                        "the batch was sent but not answered in time; submit "
                        "it again as it is (its items keep their idempotency "
                        "keys) to learn which jobs were made");
    return std::move(r.error());
  }
  if (r->size() != reqs.size())
    return make_error(errc::malformed,
                      "the node answered " + std::to_string(r->size())
                          + " records for " + std::to_string(reqs.size())
                          + " jobs");
  std::vector<submitted> out;
  for (size_t i = 0; i < reqs.size(); ++i)
    out.push_back({std::move((*r)[i]), reqs[i].idempotency_key});
  return out;
}

caf::expected<job_record> client::get(const std::string& job_id) {
  return impl_->ask<job_record>(get_atom::value, job_id);
}

caf::expected<std::string> client::result(const std::string& job_id) {
  auto r = get(job_id);
  if (!r)
    return std::move(r.error());
  if (r->status != job_status::completed)
    return make_error(errc::conflict,
                      "job '" + job_id + "' is " + to_string(r->status)
                          + "; its result exists once it is completed");
  return r->result.empty() ? std::string{"null"} : r->result;
}

caf::expected<std::vector<job_event>>
client::events(const std::string& job_id) {
  return impl_->ask<std::vector<job_event>>(events_atom::value, job_id);
}

caf::expected<job_record> client::cancel(const std::string& job_id,
                                         const std::string& reason) {
  return impl_->change(
      job_id,
      [](const job_record& j) { return j.status == job_status::cancelled; },
      cancel_atom::value, job_id, reason);
}

caf::expected<job_page> client::list(job_query q) {
  if (q.limit < 1 || q.limit > 1000)
    return make_error(errc::invalid_request, "limit: 1 to 1000");
  auto want = q.limit;
  q.limit = want + 1; // one more tells whether there is a next page
  auto r = impl_->ask<std::vector<job_record>>(list_atom::value, q);
  if (!r)
    return std::move(r.error());
  job_page page;
  page.jobs = std::move(*r);
  if (page.jobs.size() > want) {
    page.jobs.resize(want);
    page.next_cursor = page.jobs.back().job_id;
  }
  return page;
}

caf::expected<job_page> client::dead_letters(uint32_t limit,
                                             const std::string& after) {
  job_query q;
  q.dead_lettered = true;
  q.limit = limit;
  q.after = after;
  return list(std::move(q));
}

caf::expected<job_record> client::retry(const std::string& job_id) {
  return impl_->change(
      job_id, [](const job_record& j) { return !j.dead_lettered; },
      redrive_atom::value, job_id);
}

caf::expected<job_record> client::purge(const std::string& job_id) {
  return impl_->change(
      job_id, [](const job_record& j) { return !j.dead_lettered; },
      purge_atom::value, job_id);
}

caf::expected<job_record>
client::wait(const std::string& job_id, std::chrono::milliseconds deadline,
             std::function<void(const progress_update&)> on_progress,
             std::function<void(const job_event&)> on_event,
             uint64_t after_sequence) {
  auto& p = *impl_;
  auto until = clock_type::now() + deadline;
  uint64_t last = after_sequence;
  backoff_counter bo{p.schedule()};
  caf::scoped_actor self{*p.sys};
  auto key = p.opts.api_key;
  // One request's time within the wait: a request whose node dies while it
  // is pending may never be answered by CAF (a proxy killed with the
  // connection), so none waits longer than this; a timeout is transient
  // (subscribe again, catch up).
  auto request_budget = [&] {
    return std::clamp(left(until), std::chrono::milliseconds{1},
                      std::chrono::milliseconds{5000});
  };
  // Audit-log events past `last`, in order, each once.
  auto catch_up = [&](const client_door_actor& d) -> caf::error {
    if (!on_event)
      return {};
    caf::error failure = unanswered();
    self->request(d, request_budget(), client_atom::value, key,
                  events_atom::value, job_id)
        .receive(
            [&](std::vector<job_event>& evs) {
              failure = caf::none;
              std::sort(evs.begin(), evs.end(), [](auto& a, auto& b) {
                return a.sequence < b.sequence;
              });
              for (const auto& e : evs)
                if (e.sequence > last) {
                  on_event(e);
                  last = e.sequence;
                }
            },
            [&](caf::error& err) { failure = std::move(err); });
    return failure;
  };
  auto timed_out = [&] {
    return caf::make_error(caf::sec::request_timeout,
                           "job '" + job_id
                               + "' did not end before the deadline");
  };
  for (;;) {
    if (left(until).count() <= 0)
      return timed_out();
    auto d = p.connect(until);
    if (!d)
      return std::move(d.error());
    caf::expected<job_record> now{unanswered()};
    self->request(*d, request_budget(), client_atom::value, key,
                  subscribe_atom::value, job_id, caf::actor{self})
        .receive([&](job_record& r) { now = std::move(r); },
                 [&](caf::error& err) { now = std::move(err); });
    caf::error failure = now ? catch_up(*d) : now.error();
    if (!failure && is_terminal(now->status)) {
      self->send(*d, client_atom::value, key, unsubscribe_atom::value, job_id,
                 caf::actor{self});
      return now;
    }
    bool lost = false;
    caf::expected<job_record> final{caf::error{}};
    // A transient failure means: subscribe again and catch up; any other
    // ends the wait with it.
    caf::error fatal;
    auto fail = [&](caf::error err) {
      if (transient(err))
        lost = true;
      else
        fatal = std::move(err);
    };
    if (!failure) {
      self->monitor(*d);
      bool done = false;
      while (!done && !lost && !fatal) {
        auto budget = left(until);
        if (budget.count() <= 0)
          break;
        self->receive(
            [&](progress_atom, progress_update& u) {
              if (on_progress && u.job_id == job_id)
                on_progress(u);
            },
            [&](changed_atom, std::string& id) {
              if (id == job_id)
                if (auto err = catch_up(*d))
                  fail(std::move(err));
            },
            [&](final_atom, job_record& r) {
              if (r.job_id != job_id)
                return;
              // Returned only once its history has been delivered: a
              // catch-up that fails is done again after reconnecting.
              if (auto err = catch_up(*d))
                fail(std::move(err));
              else
                final = std::move(r);
              done = true;
            },
            [&](caf::down_msg& dm) {
              if (dm.source == d->address())
                lost = true;
            },
            // Quiet for a second: the job is read again, so a final record
            // or a lost connection that sent no message is noticed anyway.
            caf::after(std::min(budget, std::chrono::milliseconds{1000})) >>
                [&] {
                  caf::expected<job_record> now{unanswered()};
                  self->request(*d, request_budget(), client_atom::value, key,
                                get_atom::value, job_id)
                      .receive([&](job_record& r) { now = std::move(r); },
                               [&](caf::error& err) { now = std::move(err); });
                  if (!now) {
                    fail(std::move(now.error()));
                  } else if (is_terminal(now->status)) {
                    if (auto err = catch_up(*d))
                      fail(std::move(err));
                    else
                      final = std::move(now);
                    done = true;
                  }
                });
      }
      self->demonitor(d->address());
      if (fatal) {
        self->send(*d, client_atom::value, key, unsubscribe_atom::value, job_id,
                   caf::actor{self});
        return fatal;
      }
      if (final) {
        self->send(*d, client_atom::value, key, unsubscribe_atom::value, job_id,
                   caf::actor{self});
        return final;
      }
      if (!lost) {
        self->send(*d, client_atom::value, key, unsubscribe_atom::value, job_id,
                   caf::actor{self});
        return timed_out();
      }
      failure = make_error(errc::unavailable, "the connection was lost");
    }
    if (!transient(failure))
      return failure;
    if (lost || transport_failure(failure))
      p.drop(*d);
    if (!p.pause(bo, until))
      return timed_out();
  }
}

} // namespace drover
