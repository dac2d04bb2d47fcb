#include "client/client_impl.hpp"

namespace drover {

using namespace client_detail;

namespace {

/// Events a wait's catch-up reads at a time.
constexpr uint32_t catch_up_page = 1000;

} // namespace

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
  // Audit-log events past `last`, in order, each once: read from `last`
  // on, a page at a time (a full page is followed at once). A door older
  // than the paged read answers the whole log, for the rest of this wait.
  bool paged = true;
  auto catch_up = [&](const client_door_actor& d) -> caf::error {
    if (!on_event)
      return {};
    for (;;) {
      caf::error failure = unanswered();
      std::vector<job_event> got;
      auto take = [&](std::vector<job_event>& evs) {
        failure = caf::none;
        got = std::move(evs);
      };
      auto fail = [&](caf::error& err) { failure = std::move(err); };
      if (paged)
        self->request(d, request_budget(), client_atom::value, key,
                      events_atom::value, job_id, last, catch_up_page)
            .receive(take, fail);
      else
        self->request(d, request_budget(), client_atom::value, key,
                      events_atom::value, job_id)
            .receive(take, fail);
      if (paged && unknown_request(failure)) {
        paged = false;
        continue;
      }
      if (failure)
        return failure;
      std::sort(got.begin(), got.end(),
                [](auto& a, auto& b) { return a.sequence < b.sequence; });
      auto before = last;
      for (const auto& e : got)
        if (e.sequence > last) {
          on_event(e);
          last = e.sequence;
        }
      if (!paged || got.size() < catch_up_page || last == before)
        return {};
    }
  };
  // With several addresses: whether the job's partition moved from `d`
  // to another coordinator the client knows. A hand-off (a coordinator
  // joined) moves it without a lost connection, and live progress then
  // comes from the new owner only. Asked every third quiet second; a door
  // that cannot answer the map (an older node) is not asked again; while
  // no known address owns the partition (a takeover under way, or an owner
  // the client was not given) the wait stays where it is.
  route_target about;
  about.job_id = job_id;
  bool no_map = false;
  int quiet = 0;
  auto moved_away = [&](const client_door_actor& d) {
    if (p.addresses.size() < 2 || no_map || ++quiet % 3 != 0)
      return false;
    auto a = ask_map(*p.sys, d, key, short_budget(until));
    if (!a) {
      no_map = !transient(a.error());
      return false;
    }
    routes one;
    one.load({std::move(*a)});
    if (!one.loaded() || one.owner_of(about).has_value())
      return false;
    p.read_map(until, true);
    // Only to the owner itself: not to whichever door pick() falls back
    // to while the owner is unknown or does not answer.
    auto owner = p.owner_door(about, until);
    return owner && *owner != d;
  };
  // Progress, changes and final records come from a relay on the node
  // waited at: anything from another (one waited at before) is stale.
  auto from_door = [&](const client_door_actor& d) {
    const auto& from = self->current_sender();
    return from && from->node() == d->node();
  };
  auto timed_out = [&] {
    return caf::make_error(caf::sec::request_timeout,
                           "job '" + job_id
                               + "' did not end before the deadline");
  };
  for (;;) {
    if (left(until).count() <= 0)
      return timed_out();
    // At the owner of its partition: live progress comes from there.
    auto d = p.pick(about, until);
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
    bool moved = false;
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
      while (!done && !lost && !fatal && !moved) {
        auto budget = left(until);
        if (budget.count() <= 0)
          break;
        self->receive(
            [&](progress_atom, progress_update& u) {
              if (on_progress && u.job_id == job_id && from_door(*d))
                on_progress(u);
            },
            [&](changed_atom, std::string& id) {
              if (id == job_id && from_door(*d))
                if (auto err = catch_up(*d))
                  fail(std::move(err));
            },
            [&](final_atom, job_record& r) {
              if (r.job_id != job_id || !from_door(*d))
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
                  } else {
                    moved = moved_away(*d);
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
      if (moved) {
        // To the new owner (the map was read again): subscribe there and
        // catch up, without a backoff.
        self->send(*d, client_atom::value, key, unsubscribe_atom::value, job_id,
                   caf::actor{self});
        continue;
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
