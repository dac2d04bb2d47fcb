#pragma once

// Helpers of the runtime/pg integration tests (tests/runtime/pg_*_test.cpp):
// checks of expected values and errors, a login role for a test, and job
// histories built through the state machine, written in batches.

#include "runtime/pg.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/partition.hpp"
#include "runtime/pg_lease.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>

namespace drover::testing::pg_records {

template <class T>
T value_of(caf::expected<T>&& x) {
  if (!x)
    FAIL(describe(x.error()));
  return std::move(*x);
}

/// The error `x` holds; fails the test if it holds a value.
template <class T>
caf::error error_of(caf::expected<T>&& x) {
  if (x)
    FAIL("expected an error, got a value");
  return std::move(x.error());
}

inline void require_ok(const caf::error& err) {
  if (err)
    FAIL(describe(err));
}

/// Runs SQL that must succeed.
/// Runs SQL that must fail; returns the error.
inline caf::error refused(pg::connection& conn, const std::string& sql) {
  auto res = conn.exec(sql);
  if (res)
    FAIL("'" << sql << "' should have failed");
  return res.error();
}

inline int64_t count(pg::connection& conn, const std::string& sql,
                     const pg::params& ps = {}) {
  auto res = run(conn, sql, ps);
  REQUIRE(res.rows() == 1);
  return std::stoll(std::string{res.value(0, 0)});
}

inline bool mentions(const caf::error& err, const std::string& text) {
  return describe(err).find(text) != std::string::npos;
}

/// A login role for the duration of a test (roles are cluster-wide).
/// Declare it before the test_db whose objects it is granted on, so the
/// database is gone when the role is dropped.
class test_role {
public:
  test_role() : name_("drover_test_role_" + random_suffix()) {
    admin_ = value_of(pg::connection::open(server_url()));
    run(admin_, "CREATE ROLE " + name_ + " LOGIN");
  }
  ~test_role() {
    if (admin_.connection_ok())
      admin_.exec("DROP ROLE IF EXISTS " + name_);
  }
  test_role(const test_role&) = delete;
  test_role& operator=(const test_role&) = delete;

  const std::string& name() const {
    return name_;
  }

private:
  std::string name_;
  pg::connection admin_;
};

inline job_spec make_spec(std::string tenant, std::string type,
                          std::string key) {
  job_spec spec;
  spec.tenant = std::move(tenant);
  spec.type = std::move(type);
  spec.idempotency_key = std::move(key);
  spec.input = R"({"file":"in.mp4"})";
  return spec;
}

/// A job's history built through the state machine, so records and events
/// always agree. `add_to` moves what has not been written yet into a batch.
class job {
public:
  job(std::string id, job_spec spec, int64_t at_ms = 1000) {
    job_event ev;
    ev.job_id = std::move(id);
    ev.kind = event_kind::submitted;
    ev.spec = std::move(spec);
    ev.at_ms = at_ms;
    push(std::move(ev));
    submitted_ = rec_;
  }

  const std::string& id() const {
    return rec_.job_id;
  }
  const job_record& record() const {
    return rec_;
  }
  const std::vector<job_event>& events() const {
    return events_;
  }

  job& start(int64_t at_ms) {
    auto ev = next(event_kind::started, at_ms);
    ev.attempt = rec_.attempt + 1;
    ev.worker_id = "worker-1";
    ev.lease_expiry_ms = at_ms + 30000;
    return push(std::move(ev));
  }

  job& progress(double percent, int64_t at_ms) {
    auto ev = next(event_kind::progressed, at_ms);
    ev.progress.job_id = rec_.job_id;
    ev.progress.percent = percent;
    ev.progress.at_ms = at_ms;
    ev.progress.attempt = rec_.attempt;
    ev.progress.message = "working";
    return push(std::move(ev));
  }

  job& checkpoint(std::string bytes, int64_t at_ms) {
    auto ev = next(event_kind::checkpointed, at_ms);
    ev.checkpoint = std::move(bytes);
    return push(std::move(ev));
  }

  job& complete(int64_t at_ms) {
    auto ev = next(event_kind::completed, at_ms);
    ev.result = R"({"ok":true})";
    return push(std::move(ev));
  }

  job& fail(int64_t at_ms) {
    auto ev = next(event_kind::failed, at_ms);
    ev.error = error_info{"boom", "it broke", false};
    return push(std::move(ev));
  }

  job& dead_letter(int64_t at_ms) {
    auto ev = next(event_kind::dead_lettered, at_ms);
    ev.error = error_info{"boom", "it broke", false};
    return push(std::move(ev));
  }

  job& purge_from_dlq(int64_t at_ms) {
    auto ev = next(event_kind::purged, at_ms);
    ev.reason = "operator";
    return push(std::move(ev));
  }

  job& cancel(int64_t at_ms) {
    auto ev = next(event_kind::cancelled, at_ms);
    ev.reason = "user";
    return push(std::move(ev));
  }

  /// A webhook attempt for the terminal event the record owes one for.
  job& webhook(webhook_outcome outcome, int64_t at_ms) {
    auto ev = next(event_kind::webhook_attempted, at_ms);
    ev.webhook.url = rec_.spec.callback_url;
    ev.webhook.terminal_sequence = rec_.webhook_pending_sequence;
    ev.webhook.webhook_id
        = rec_.job_id + "." + std::to_string(rec_.webhook_pending_sequence);
    ev.webhook.attempt_number = 1;
    ev.webhook.outcome = outcome;
    ev.webhook.at_ms = at_ms;
    if (outcome == webhook_outcome::retrying)
      ev.webhook.next_attempt_at_ms = at_ms + 1000;
    return push(std::move(ev));
  }

  /// Adds the unwritten part of the history to `batch`: the submit if not
  /// written yet, the new events, and the projection if it moved past
  /// what the submit (or the last write) holds.
  void add_to(pg::write_batch& batch) {
    if (written_ == 0)
      batch.submits.push_back(submitted_);
    uint64_t last = written_ == 0 ? 1 : events_[written_ - 1].sequence;
    for (size_t i = written_; i < events_.size(); ++i)
      batch.events.push_back(events_[i]);
    if (rec_.sequence > last)
      batch.updates.push_back(rec_);
    written_ = events_.size();
  }

private:
  job_event next(event_kind kind, int64_t at_ms) const {
    job_event ev;
    ev.job_id = rec_.job_id;
    ev.kind = kind;
    ev.attempt = rec_.attempt;
    ev.at_ms = at_ms;
    return ev;
  }

  job& push(job_event ev) {
    ev.sequence = rec_.sequence + 1;
    if (auto err = apply(rec_, ev))
      FAIL(describe(err));
    events_.push_back(std::move(ev));
    return *this;
  }

  job_record rec_;
  job_record submitted_;
  std::vector<job_event> events_;
  size_t written_ = 0;
};

inline pg::write_batch batch_of(std::initializer_list<job*> jobs) {
  pg::write_batch batch;
  for (auto* j : jobs)
    j->add_to(batch);
  return batch;
}

inline std::vector<std::string> ids_of(const std::vector<job_record>& recs) {
  std::vector<std::string> out;
  for (const auto& rec : recs)
    out.push_back(rec.job_id);
  return out;
}

} // namespace drover::testing::pg_records
