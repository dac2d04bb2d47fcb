#pragma once

// For tests of the queue, store and publisher themselves: one unretried
// blocking request to the actor that serves it, so a test sees exactly what
// that actor answers (an `unavailable` while the store reconnects, a fenced
// write's refusal). Programs, examples and benchmarks use the client API
// (include/drover/client.hpp; in process: gateway/local_client.hpp), which
// retries, routes and checks keys.

#include "actors/job_system.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace drover::test {

class direct_client {
public:
  direct_client(caf::actor_system& sys,
                std::shared_ptr<const job_system_handles> handles,
                std::chrono::milliseconds timeout = std::chrono::seconds{30})
      : sys_(sys), handles_(std::move(handles)), timeout_(timeout) {
    // nop
  }

  caf::expected<job_record> submit(const submit_request& req) {
    return ask<job_record>(handles_->queue(), submit_atom::value, req);
  }

  caf::expected<job_record> get(const std::string& id) {
    return ask<job_record>(handles_->store(), get_atom::value, id);
  }

  caf::expected<std::vector<job_event>> events(const std::string& id) {
    return ask<std::vector<job_event>>(handles_->store(), events_atom::value,
                                       id);
  }

  caf::error cancel(const std::string& id) {
    auto r = ask<ok_atom>(handles_->queue(), cancel_atom::value, id);
    return r ? caf::error{} : std::move(r.error());
  }

  caf::expected<std::vector<job_record>> list(const job_query& q) {
    return ask<std::vector<job_record>>(handles_->store(), list_atom::value, q);
  }

  caf::expected<std::vector<job_record>> dead_letters(uint32_t limit = 100) {
    job_query q;
    q.dead_lettered = true;
    q.limit = limit;
    return list(q);
  }

  /// The job's final record, subscribed first and read second (a job that
  /// ended before the subscription is caught by the read); `unavailable`
  /// past `timeout`.
  caf::expected<job_record> wait(const std::string& id,
                                 std::chrono::milliseconds timeout) {
    auto publisher = handles_->publisher();
    if (!publisher)
      return make_error(errc::unavailable, "the job system is not running");
    caf::scoped_actor self{sys_};
    caf::error failure;
    self->request(publisher, timeout_, subscribe_atom::value, id,
                  caf::actor{self})
        .receive([](ok_atom) {}, [&](caf::error& err) { failure = err; });
    if (failure)
      return failure;
    auto rec = get(id);
    caf::expected<job_record> result{
        make_error(errc::unavailable, "timed out waiting for job " + id)};
    if (!rec || is_terminal(rec->status)) {
      result = std::move(rec);
    } else {
      auto deadline = std::chrono::steady_clock::now() + timeout;
      for (bool done = false; !done;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
          break;
        self->receive([](progress_atom, const progress_update&) {},
                      [&](final_atom, job_record& r) {
                        if (r.job_id == id) {
                          result = std::move(r);
                          done = true;
                        }
                      },
                      caf::after(left) >> [&] { done = true; });
      }
    }
    self->send(publisher, unsubscribe_atom::value, id, caf::actor{self});
    return result;
  }

private:
  template <class T, class Handle, class... Ts>
  caf::expected<T> ask(const Handle& dest, Ts&&... xs) {
    if (!dest)
      return make_error(errc::unavailable, "the job system is not running");
    caf::scoped_actor self{sys_};
    caf::expected<T> result{make_error(errc::unavailable, "no answer")};
    self->request(dest, timeout_, std::forward<Ts>(xs)...)
        .receive([&](T& x) { result = std::move(x); },
                 [&](caf::error& err) { result = std::move(err); });
    return result;
  }

  caf::actor_system& sys_;
  std::shared_ptr<const job_system_handles> handles_;
  std::chrono::milliseconds timeout_;
};

} // namespace drover::test
