// The operator endpoints (GET /api/admin/tree, nodes, flow, queues; PUT
// /api/admin/rate-limits and breakers), /metrics and /readyz. See
// gateway/detail/gateway_impl.hpp.

#include "gateway/detail/gateway_impl.hpp"

#include "gateway/metrics.hpp"
#include "runtime/errors.hpp"
#include "runtime/log.hpp"

#include <array>

namespace drover::http::gateway_detail {

void gateway_impl::tree(const ex_ptr& ex) {
  // The tree as the supervisors describe it, with each running job's
  // record (progress, stage, ETA as last committed) under its node.
  auto api = api_;
  auto timeout = cfg_.request_timeout;
  auto self = shared_from_this();
  sys_.spawn([=](caf::event_based_actor* a) {
    a->request(api, timeout, describe_atom::value)
        .then(
            [=](tree_node& t) {
              std::vector<std::string> ids;
              running_job_ids(t, ids);
              auto tree = std::make_shared<tree_node>(std::move(t));
              auto jobs = std::make_shared<std::map<std::string, job_record>>();
              auto pending = std::make_shared<size_t>(ids.size());
              if (ids.empty())
                return self->reply(ex, 200, tree_json(*tree, *jobs));
              for (auto& id : ids)
                a->request(api, timeout, get_atom::value, id)
                    .then(
                        [=](job_record& job) {
                          auto key = job.job_id;
                          jobs->emplace(key, std::move(job));
                          if (--*pending == 0)
                            self->reply(ex, 200, tree_json(*tree, *jobs));
                        },
                        [=](caf::error& err) {
                          // Finished meanwhile: shown without its record.
                          log::debug("http", log::job{id},
                                     "the tree shows a job without its "
                                     "record",
                                     {{"error", describe(err)}});
                          if (--*pending == 0)
                            self->reply(ex, 200, tree_json(*tree, *jobs));
                        });
            },
            [self, ex](caf::error& err) { self->fail(ex, err); });
  });
}

void gateway_impl::nodes(const ex_ptr& ex) {
  auto self = shared_from_this();
  ask<std::string>(
      ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
      nodes_atom::value);
}

/// Rate limiters, breakers and the newest control-log entries.
void gateway_impl::flow(const ex_ptr& ex) {
  auto self = shared_from_this();
  ask<std::string>(
      ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
      flow_atom::value, uint32_t{50});
}

/// Creates or changes a rate limit or breaker; answers like flow().
void gateway_impl::set_flow(const ex_ptr& ex, const std::string& kind,
                            const std::string& key) {
  auto spec = parse_flow_spec(ex->req().body(), json_limits_);
  if (!spec)
    return fail(ex, spec.error());
  auto self = shared_from_this();
  ask<std::string>(
      ex, [self, ex](std::string& json) { self->reply(ex, 200, json); },
      flow_atom::value, kind, key, std::move(*spec));
}

void gateway_impl::queues(const ex_ptr& ex) {
  auto self = shared_from_this();
  ask<queue_stats>(
      ex,
      [self, ex](queue_stats& s) {
        std::array<double, 3> rates{-1, -1, -1};
        {
          std::lock_guard<std::mutex> guard{self->rates_mx_};
          auto now = steady::now();
          if (self->last_stats_at_ != steady::time_point{}) {
            std::chrono::duration<double> dt = now - self->last_stats_at_;
            if (dt.count() > 0)
              for (size_t i = 0; i < 3; ++i)
                rates[i]
                    = (s.dispatched[i] >= self->last_stats_.dispatched[i]
                           ? s.dispatched[i] - self->last_stats_.dispatched[i]
                           : 0)
                      / dt.count();
          }
          self->last_stats_ = s;
          self->last_stats_at_ = now;
        }
        self->reply(ex, 200, queues_json(s, rates));
      },
      stats_atom::value);
}

void gateway_impl::metrics(const ex_ptr& ex) {
  auto self = shared_from_this();
  auto api = api_;
  auto timeout = cfg_.request_timeout;
  ask<queue_stats>(
      ex,
      [self, ex, api, timeout](queue_stats& s) {
        auto text = std::make_shared<std::string>(
            metrics_text(s, read_process_figures()));
        // Then the limiters' and breakers' figures; without them if the
        // queue does not answer (the rest is still worth scraping).
        self->sys_.spawn([=](caf::event_based_actor* a) {
          a->request(api, timeout, flow_atom::value, uint32_t{0})
              .then(
                  [=](std::string& flow) {
                    self->reply(ex, 200, *text + flow_metrics_text(flow),
                                {{"Content-Type", metrics_content_type}});
                  },
                  [=](caf::error& err) {
                    // The queue's figures still hold.
                    log::debug("http",
                               "/metrics without the flow-control figures",
                               {{"error", describe(err)}});
                    self->reply(ex, 200, *text,
                                {{"Content-Type", metrics_content_type}});
                  });
        });
      },
      stats_atom::value);
}

void gateway_impl::readyz(const ex_ptr& ex) {
  // Ready = the queue answers and the store can write.
  auto api = api_;
  auto self = shared_from_this();
  auto timeout
      = std::min(cfg_.request_timeout, std::chrono::milliseconds{2000});
  sys_.spawn([=](caf::event_based_actor* a) {
    // The queue's cheapest answer (its partitions); through a gateway
    // node's router, one coordinator's in turn (the figures would wait
    // for all of them: one paused coordinator would make every gateway
    // unready).
    a->request(api, timeout, partitions_atom::value)
        .then(
            [=](std::string&, int32_t) {
              // The store's write path, not just reads: a store that is
              // reconnecting refuses submits, so it is not ready.
              a->request(api, timeout, ping_atom::value)
                  .then(
                      [=](ok_atom) {
                        self->reply(ex, 200, "{\"status\":\"ready\"}");
                      },
                      [=](caf::error& err) {
                        self->fail(ex, 503, "unavailable",
                                   "store: " + context_of(err),
                                   {{"Retry-After", "1"}});
                      });
            },
            [=](caf::error& err) {
              self->fail(ex, 503, "unavailable", "queue: " + context_of(err),
                         {{"Retry-After", "1"}});
            });
  });
}

} // namespace drover::http::gateway_detail
