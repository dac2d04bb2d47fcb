#include "actors/client.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/scoped_actor.hpp>

namespace drover {

namespace {

/// One blocking request with a deadline; the reply or the error.
template <class T, class Handle, class... Ts>
caf::expected<T> ask(caf::actor_system& sys, const Handle& dest,
                     std::chrono::milliseconds timeout, Ts&&... xs) {
  if (!dest)
    return make_error(errc::unavailable, "the job system is not running");
  caf::scoped_actor self{sys};
  caf::expected<T> result{make_error(errc::unavailable, "no answer")};
  self->request(dest, timeout, std::forward<Ts>(xs)...)
      .receive([&](T& x) { result = std::move(x); },
               [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::error as_error(caf::expected<ok_atom> x) {
  return x ? caf::error{} : std::move(x.error());
}

} // namespace

job_client::job_client(caf::actor_system& sys,
                       std::shared_ptr<const job_system_handles> handles,
                       std::chrono::milliseconds timeout)
    : sys_(sys), handles_(std::move(handles)), timeout_(timeout) {
  // nop
}

caf::expected<job_record> job_client::submit(const submit_request& req) {
  return ask<job_record>(sys_, handles_->queue(), timeout_, submit_atom::value,
                         req);
}

caf::expected<job_record> job_client::get(const std::string& job_id) {
  return ask<job_record>(sys_, handles_->store(), timeout_, get_atom::value,
                         job_id);
}

caf::expected<std::vector<job_event>>
job_client::events(const std::string& job_id) {
  return ask<std::vector<job_event>>(sys_, handles_->store(), timeout_,
                                     events_atom::value, job_id);
}

caf::error job_client::cancel(const std::string& job_id) {
  return as_error(ask<ok_atom>(sys_, handles_->queue(), timeout_,
                               cancel_atom::value, job_id));
}

caf::expected<job_record>
job_client::wait(const std::string& job_id, std::chrono::milliseconds timeout,
                 std::function<void(const progress_update&)> on_progress) {
  auto publisher = handles_->publisher();
  if (!publisher)
    return make_error(errc::unavailable, "the job system is not running");
  caf::scoped_actor self{sys_};
  // Subscribe first, then read the record: a job that finished before the
  // subscription is caught by the read (or by the publisher's retained
  // final), one that finishes after it by the subscription.
  caf::error failure;
  self->request(publisher, timeout_, subscribe_atom::value, job_id,
                caf::actor{self})
      .receive([](ok_atom) {}, [&](caf::error& err) { failure = err; });
  if (failure)
    return failure;
  auto rec = get(job_id);
  if (!rec)
    return rec;
  if (is_terminal(rec->status)) {
    self->send(publisher, unsubscribe_atom::value, job_id, caf::actor{self});
    return rec;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  caf::expected<job_record> result{
      make_error(errc::unavailable, "timed out waiting for job " + job_id)};
  bool done = false;
  while (!done) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0)
      break;
    self->receive(
        [&](progress_atom, const progress_update& u) {
          if (u.job_id == job_id && on_progress)
            on_progress(u);
        },
        [&](final_atom, job_record& final_rec) {
          if (final_rec.job_id == job_id) {
            result = std::move(final_rec);
            done = true;
          }
        },
        caf::after(left) >> [&] { done = true; });
  }
  self->send(publisher, unsubscribe_atom::value, job_id, caf::actor{self});
  return result;
}

caf::expected<std::vector<job_record>>
job_client::list(const job_query& query) {
  return ask<std::vector<job_record>>(sys_, handles_->store(), timeout_,
                                      list_atom::value, query);
}

caf::expected<std::vector<job_record>>
job_client::dead_letters(uint32_t limit) {
  job_query q;
  q.dead_lettered = true;
  q.limit = limit;
  return list(q);
}

caf::error job_client::redrive(const std::string& job_id) {
  return as_error(ask<ok_atom>(sys_, handles_->queue(), timeout_,
                               redrive_atom::value, job_id));
}

caf::expected<uint32_t> job_client::redrive_all() {
  return ask<uint32_t>(sys_, handles_->queue(), timeout_, redrive_atom::value,
                       all_atom::value);
}

caf::error job_client::purge(const std::string& job_id) {
  return as_error(ask<ok_atom>(sys_, handles_->queue(), timeout_,
                               purge_atom::value, job_id));
}

caf::expected<uint32_t> job_client::purge_all() {
  return ask<uint32_t>(sys_, handles_->queue(), timeout_, purge_atom::value,
                       all_atom::value);
}

caf::expected<queue_stats> job_client::stats() {
  return ask<queue_stats>(sys_, handles_->queue(), timeout_, stats_atom::value);
}

} // namespace drover
