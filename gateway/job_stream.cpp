#include "gateway/job_stream.hpp"

#include "gateway/http_api.hpp"
#include "runtime/atoms.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_cast.hpp>
#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <memory>
#include <vector>

namespace drover::http {

namespace {

using keepalive_atom = caf::atom_constant<caf::atom("keepalive")>;
using resubscribe_atom = caf::atom_constant<caf::atom("resub")>;

/// How long a stream waits before subscribing again after a stale final
/// record (see spawn_job_stream).
constexpr auto resubscribe_delay = std::chrono::milliseconds{200};

/// The most events one read of the log asks for; a full page is followed
/// by the next at once.
constexpr uint32_t read_page = 1000;

bool is_final_event(event_kind k) {
  return k == event_kind::completed || k == event_kind::cancelled
         || k == event_kind::failed || k == event_kind::dead_lettered
         || k == event_kind::purged;
}

} // namespace

caf::actor spawn_job_stream(caf::actor_system& sys, api_actor api,
                            std::chrono::milliseconds timeout,
                            std::chrono::milliseconds keepalive, std::string id,
                            uint64_t after, stream_sink sink) {
  return sys.spawn([=](caf::event_based_actor* a) -> caf::behavior {
    struct state {
      uint64_t last = 0;
      /// The log's events are read up to this sequence: each read asks
      /// for the ones after it (a long job's log is read once, not again
      /// at every transition or keep-alive). The first read starts at 0,
      /// to learn whether the job is final before `after`.
      uint64_t read_to = 0;
      /// The events read so far end the job (a terminal one, not followed
      /// by a redrive).
      bool final = false;
      std::string stage;
      bool ended = false;
      /// Live progress already shown: attempt and percent.
      uint32_t live_attempt = 0;
      double live_percent = -1;
      /// A transition was announced during a log read: read again.
      bool reread = false;
      /// The log is being read (from the start: the history); live
      /// updates wait in `early`.
      bool catching_up = true;
      /// Live updates held back until the log before them is out.
      std::vector<progress_update> early;
      /// Something came from the publisher since the last keep-alive.
      bool heard = false;
    };
    auto st = std::make_shared<state>();
    st->last = after;
    auto finish = [=] {
      if (st->ended)
        return;
      st->ended = true;
      sink.end();
      a->quit();
    };
    // Sends a live update unless it would move progress backwards.
    auto live = [=](const progress_update& u) {
      if (u.attempt < st->live_attempt
          || (u.attempt == st->live_attempt && u.percent < st->live_percent))
        return true;
      st->live_attempt = u.attempt;
      st->live_percent = u.percent;
      auto stage = current_stage(u);
      auto name = stage != st->stage ? "stage" : "progress";
      st->stage = stage;
      return sink.emit(name, 0, progress_json(u));
    };
    // Sends the events of a page of the log after st->last; true if the
    // client went away. Every transition is sent exactly once; a progress
    // snapshot is skipped when a later one follows it directly or live
    // progress already showed as much (so progress never moves backwards),
    // which is why progress ids may jump.
    auto drain = [=](std::vector<job_event>& evs) {
      for (size_t i = 0; i < evs.size(); ++i) {
        auto& e = evs[i];
        if (e.sequence <= st->read_to)
          continue; // read before (a store answering more than asked)
        st->read_to = e.sequence;
        // A redrive revives a failed job; bookkeeping events after a
        // terminal one (webhook deliveries) leave it final.
        if (is_final_event(e.kind))
          st->final = true;
        else if (e.kind == event_kind::redriven)
          st->final = false;
        if (e.sequence <= st->last)
          continue;
        st->last = e.sequence;
        std::string name;
        if (e.kind == event_kind::progressed) {
          bool superseded = i + 1 < evs.size()
                            && evs[i + 1].kind == event_kind::progressed
                            && evs[i + 1].attempt == e.attempt;
          bool shown = e.attempt == st->live_attempt
                       && e.progress.percent <= st->live_percent;
          if (superseded || shown)
            continue;
          name = sse_event_name(e, st->stage);
          st->stage = current_stage(e);
          st->live_attempt = e.attempt;
          st->live_percent = e.progress.percent;
        } else {
          name = sse_event_name(e, st->stage);
        }
        if (!sink.emit(name, e.sequence, event_json(e)))
          return true;
      }
      return false;
    };
    // Sends the live updates held back, in order.
    auto flush_early = [=] {
      auto updates = std::move(st->early);
      st->early.clear();
      for (auto& u : updates)
        if (!live(u))
          return finish();
    };
    auto fail_stream = [=](caf::error& err) {
      auto s = classify(err);
      sink.emit("error", 0, error_json(s.code, context_of(err)));
      finish();
    };
    // Reads the log and sends what is new, then the live updates held
    // meanwhile; again if a transition was announced during the read.
    // After a final record whose terminal event the log does not end
    // with (a redrive the publisher has not learnt of yet: it forgets the
    // failed run's final once the queue tells it), subscribe again later.
    auto catch_up = std::make_shared<std::function<void(bool, bool)>>();
    // It calls itself again through a weak reference: a strong one would
    // be a cycle keeping every stream's state and sink (the client's
    // exchange or WebSocket) alive forever. The handlers below own it.
    std::weak_ptr<std::function<void(bool, bool)>> again = catch_up;
    // `quietly`: a read of a silent stream (the keep-alive's): a failure
    // leaves the stream as it was, to be tried again an interval later.
    *catch_up = [=](bool after_final, bool quietly) {
      st->catching_up = true;
      a->request(api, timeout, events_atom::value, id, st->read_to, read_page)
          .then(
              [=](std::vector<job_event>& evs) {
                auto before = st->read_to;
                if (drain(evs))
                  return finish();
                // More to read: at once (if the read moved on at all).
                if (evs.size() >= read_page && st->read_to > before) {
                  if (auto self_again = again.lock())
                    (*self_again)(after_final, quietly);
                  return;
                }
                st->catching_up = false;
                if (st->final)
                  return finish();
                flush_early();
                if (after_final)
                  a->delayed_send(a, resubscribe_delay,
                                  resubscribe_atom::value);
                else if (st->reread && !st->ended) {
                  st->reread = false;
                  if (auto self_again = again.lock())
                    (*self_again)(false, false);
                }
              },
              [=](caf::error& err) {
                if (!quietly)
                  return fail_stream(err);
                st->catching_up = false;
                flush_early();
              });
    };
    // Subscribes (live progress, finals, transition notices), then reads
    // the log: nothing committed in between is missed.
    auto subscribe = [=] {
      a->request(api, timeout, subscribe_atom::value, id,
                 caf::actor_cast<caf::actor>(a), changed_atom::value)
          .then([=](ok_atom) { (*catch_up)(false, false); }, fail_stream);
    };
    a->set_down_handler([=](caf::down_msg&) { finish(); });
    subscribe();
    a->delayed_send(a, keepalive, keepalive_atom::value);
    return {
        [=](progress_atom, progress_update& u) {
          st->heard = true;
          if (st->ended)
            return;
          // Transitions come first: the job supervisor announces a new
          // attempt's `started` before its progress, and that notice starts
          // a log read, during which live updates wait.
          if (st->catching_up) {
            st->early.push_back(std::move(u));
            return;
          }
          if (!live(u))
            finish();
        },
        [=](final_atom, job_record&) {
          st->heard = true;
          // The terminal event is committed before the final record is
          // published: send the rest of the log, then end.
          (*catch_up)(true, false);
        },
        [=](resubscribe_atom) {
          if (!st->ended)
            subscribe();
        },
        [=](changed_atom, std::string&) {
          // A transition was committed (started, retry scheduled): send the
          // log's new events now rather than with the next progress report.
          st->heard = true;
          if (st->ended)
            return;
          if (st->catching_up) {
            st->reread = true; // the read under way may predate it
            return;
          }
          (*catch_up)(false, false);
        },
        [=](keepalive_atom) {
          if (!sink.keepalive())
            return finish();
          // Silent for a whole interval: the log is read on. The
          // publisher subscribed to may not be the one that gets the job's
          // updates (a coordinator sharing the partitions serves streams
          // of jobs in another's partitions, or of a job whose partition
          // moved away, from its own publisher): the job's transitions, its
          // stored progress and its end still come, within an interval.
          // A quiet job costs one read of its new events (an index range,
          // usually empty) per interval.
          if (!st->heard && !st->catching_up && !st->ended)
            (*catch_up)(false, true);
          st->heard = false;
          a->delayed_send(a, keepalive, keepalive_atom::value);
        },
    };
  });
}

} // namespace drover::http
