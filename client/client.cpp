#include "client/client_impl.hpp"
#include "runtime/events_page.hpp"

namespace drover {

using namespace client_detail;

client::client(std::unique_ptr<impl> p) : impl_(std::move(p)) {
  // nop
}

client::~client() {
  if (impl_ && impl_->on_close)
    impl_->on_close();
}

namespace {

caf::error bad_options(const std::string& what) {
  return make_error(errc::bad_config, what);
}

caf::error check_timeouts(const client_options& opts) {
  if (opts.timeout.count() <= 0 || opts.reconnect_initial.count() < 0
      || opts.reconnect_max < opts.reconnect_initial)
    return bad_options("client: timeouts must be positive, reconnect_max >= "
                       "reconnect_initial");
  return {};
}

} // namespace

caf::expected<std::unique_ptr<client>> client::make(client_options opts) {
  if (opts.nodes.empty())
    return bad_options("client: no node address");
  if (auto err = check_timeouts(opts))
    return err;
  if (auto err = check_tls(opts.tls, "client: tls."))
    return err;
  auto p = std::make_unique<impl>();
  for (const auto& n : opts.nodes) {
    auto a = parse_address(n, "client: node address");
    if (!a)
      return std::move(a.error());
    p->addresses.push_back({a->host, a->port});
  }
  p->opts = std::move(opts);
  register_types(p->cfg);
  p->cfg.load<caf::io::middleman>();
  use_tls(p->opts.tls, p->cfg);
  p->cfg.set("scheduler.max-threads", size_t{2});
  p->owned_sys = std::make_unique<caf::actor_system>(p->cfg);
  p->sys = p->owned_sys.get();
  return std::unique_ptr<client>{new client{std::move(p)}};
}

caf::expected<std::unique_ptr<client>>
client::attach(caf::actor_system& sys, client_door_actor door,
               client_options opts, std::function<void()> on_close) {
  // Refused: `on_close` runs at once (what it stops is not used).
  auto refuse = [&on_close](caf::error err) {
    if (on_close)
      on_close();
    return err;
  };
  if (!opts.nodes.empty())
    return refuse(bad_options("client: a client attached to a door in this "
                              "process takes no node addresses"));
  if (!door)
    return refuse(bad_options("client: no door to attach to"));
  if (auto err = check_timeouts(opts))
    return refuse(std::move(err));
  if (opts.tls.enabled())
    return refuse(bad_options("client: a client attached to a door in this "
                              "process takes no TLS settings (nothing "
                              "crosses a network)"));
  auto p = std::make_unique<impl>();
  p->opts = std::move(opts);
  p->sys = &sys;
  p->attached = true;
  p->door = std::move(door);
  p->on_close = std::move(on_close);
  return std::unique_ptr<client>{new client{std::move(p)}};
}

caf::expected<submitted> client::submit(submit_request req) {
  if (req.idempotency_key.empty())
    req.idempotency_key = generated_key();
  auto key = req.idempotency_key;
  impl::attempts info;
  auto r
      = impl_->call<job_record>(clock_type::now() + impl_->opts.timeout, &info,
                                impl::target_of(req), submit_atom::value, req);
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
  // Several coordinators sharing a database: each owner gets the items of
  // its partitions; items refused `not_owner` (nothing was made) go again
  // to their owner after the map was read again. Split, the batch is one
  // answer per item: when one owner's part is refused outright after
  // another's was made, its items carry that refusal (nothing of them was
  // made); only a part that may have been made unanswered makes the whole
  // answer outcome_unknown.
  auto deadline = clock_type::now() + impl_->opts.timeout;
  impl::attempts info;
  std::vector<job_record> got(reqs.size());
  std::vector<size_t> todo(reqs.size());
  for (size_t i = 0; i < reqs.size(); ++i)
    todo[i] = i;
  bool some_made = false;
  backoff_counter bo{impl_->schedule()};
  for (int round = 0;; ++round) {
    std::vector<size_t> refused;
    for (auto& [owner, items] : impl_->group(reqs, todo, deadline)) {
      std::vector<submit_request> part;
      for (auto i : items)
        part.push_back(reqs[i]);
      auto r = impl_->call<std::vector<job_record>>(
          deadline, &info, impl::target_of(part.front()), submit_atom::value,
          part);
      if (!r && info.maybe_acted)
        return make_error(errc::outcome_unknown,
                          "the batch was sent but not answered in time; "
                          "submit it again as it is (its items keep their "
                          "idempotency keys) to learn which jobs were made");
      if (r && r->size() != part.size())
        // It acted, but which records are whose is not known.
        return make_error(errc::outcome_unknown,
                          "a node answered " + std::to_string(r->size())
                              + " records for " + std::to_string(part.size())
                              + " jobs; submit the batch again as it is to "
                                "learn which jobs were made");
      if (!r && !some_made)
        return std::move(r.error()); // nothing of the batch was made
      if (!r) {
        for (auto i : items) {
          got[i] = job_record{};
          got[i].error.code = code_text(r.error());
          got[i].error.message = describe(r.error());
        }
        continue;
      }
      some_made = true;
      for (size_t k = 0; k < items.size(); ++k) {
        got[items[k]] = std::move((*r)[k]);
        if (got[items[k]].job_id.empty()
            && got[items[k]].error.code == "not_owner")
          refused.push_back(items[k]);
      }
    }
    if (refused.empty() || impl_->addresses.size() < 2)
      break;
    // Refused items are sent again to the owner a fresh map names: at
    // once a few times, then after a backoff (a takeover under way), until
    // the deadline; past it they keep their not_owner.
    impl_->read_map(deadline, true);
    if (round + 1 >= not_owner_resends && !impl::pause(bo, deadline))
      break;
    todo = std::move(refused);
  }
  std::vector<submitted> out;
  for (size_t i = 0; i < reqs.size(); ++i)
    out.push_back({std::move(got[i]), reqs[i].idempotency_key});
  return out;
}

caf::expected<job_record> client::get(const std::string& job_id) {
  route_target t;
  t.job_id = job_id;
  return impl_->ask<job_record>(t, get_atom::value, job_id);
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
  route_target t;
  t.job_id = job_id;
  return impl_->ask<std::vector<job_event>>(t, events_atom::value, job_id);
}

caf::expected<std::vector<job_event>>
client::events(const std::string& job_id, uint64_t after, uint32_t limit) {
  if (auto err = check_events_limit(limit))
    return err;
  route_target t;
  t.job_id = job_id;
  auto page = impl_->ask<std::vector<job_event>>(t, events_atom::value, job_id,
                                                 after, limit);
  if (page || !unknown_request(page.error()))
    return page;
  // An older node: the page is cut from the whole log.
  auto log = impl_->ask<std::vector<job_event>>(t, events_atom::value, job_id);
  if (!log)
    return log;
  return cut_events_page(*log, after, limit);
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
  auto r = impl_->ask<std::vector<job_record>>(route_target{}, list_atom::value,
                                               q);
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

} // namespace drover
