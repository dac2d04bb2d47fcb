#pragma once

// What droverctl prints for people (nodes/droverctl.cpp): a job as
// "key: value" lines, pages of jobs as a table, a job's history one event a
// line, queue figures, the supervision tree, and `watch`'s progress (a bar
// redrawn in place on a terminal, one plain line per update otherwise).
// With --json droverctl prints the HTTP API's JSON instead
// (gateway/http_api.hpp), never these.

#include "runtime/job_api.hpp"
#include "runtime/model.hpp"
#include "runtime/tree.hpp"

#include <cstdio>
#include <string>
#include <vector>

namespace drover::ctl {

/// A job as aligned "key: value" lines; fields without a value are left out.
std::string job_text(const job_record& job);

/// A page of jobs as a table with a header line; `more` adds how to get the
/// next page.
std::string jobs_table(const std::vector<job_record>& jobs, bool more);

/// A job's history: one line per event (time, sequence, kind, attempt and
/// what the event says).
std::string events_text(const std::vector<job_event>& events);

/// Queue figures per priority and in total.
std::string queues_text(const queue_stats& stats);

/// The supervision tree, indented.
std::string tree_text(const tree_node& root);

/// The node list (the JSON of GET /api/admin/nodes) as tables: the nodes
/// that joined, the coordinators of the database, the jobs no connected
/// worker runs. JSON it cannot read is printed as it is.
std::string nodes_text(const std::string& json);

/// "coordinators not reached (their `what` are missing above): a, b\n", or
/// "" when `unreached` is empty (droverctl --nodes).
std::string unreached_text(const std::vector<std::string>& unreached,
                           const std::string& what);

/// How a terminal job ended, for the last line(s) of `watch`: "<id>
/// completed (attempt 1)" and its result, or the error, or the reason.
std::string outcome_text(const job_record& job);

/// `watch`'s progress display on `out`: on a terminal one line redrawn in
/// place ("[#####.....]  50%  render  ETA 12s  attempt 1"), otherwise one
/// plain line per update.
class progress_view {
public:
  progress_view(std::FILE* out, bool terminal);
  void update(const progress_update& u);
  /// Ends the redrawn line (terminal) before the outcome is printed.
  void finish();

private:
  std::FILE* out_;
  bool terminal_;
  bool drawn_ = false;
};

} // namespace drover::ctl
