#pragma once

// The in-process C++ client API: blocking calls on a node's job system,
// for programs that embed a node (examples, tests, tools). Each call waits
// at most `timeout`; errors come back as values.
//
//   drover::job_client client{sys, handles};
//   auto job = client.submit(req);                // acknowledged job
//   auto done = client.wait(job->job_id, 60s,     // final record
//                           [](const drover::progress_update& u) { ... });

#include "actors/job_system.hpp"

#include <caf/expected.hpp>
#include <caf/fwd.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace drover {

class job_client {
public:
  job_client(caf::actor_system& sys,
             std::shared_ptr<const job_system_handles> handles,
             std::chrono::milliseconds timeout = std::chrono::seconds{30});

  caf::expected<job_record> submit(const submit_request& req);
  caf::expected<job_record> get(const std::string& job_id);
  caf::expected<std::vector<job_event>> events(const std::string& job_id);
  caf::error cancel(const std::string& job_id);

  /// Waits until the job is terminal, calling `on_progress` for each
  /// (coalesced) update meanwhile; returns the final record.
  caf::expected<job_record>
  wait(const std::string& job_id, std::chrono::milliseconds timeout,
       std::function<void(const progress_update&)> on_progress = {});

  caf::expected<std::vector<job_record>> list(const job_query& query);
  caf::expected<std::vector<job_record>> dead_letters(uint32_t limit = 100);
  caf::error redrive(const std::string& job_id);
  caf::expected<uint32_t> redrive_all();
  caf::error purge(const std::string& job_id);
  caf::expected<uint32_t> purge_all();
  caf::expected<queue_stats> stats();

private:
  caf::actor_system& sys_;
  std::shared_ptr<const job_system_handles> handles_;
  std::chrono::milliseconds timeout_;
};

} // namespace drover
