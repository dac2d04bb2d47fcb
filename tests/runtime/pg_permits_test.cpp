// Permits of a job type's concurrency limit across coordinators sharing the
// partitions (runtime/pg_permits.cpp) against a real PostgreSQL: two
// sessions fenced like two coordinators (A owns partitions 0-31, B 32-63),
// jobs moved through their statuses with UPDATEs as the store would.

#include "runtime/pg_lease.hpp"
#include "support/pg_batches.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::must;
using drover::testing::must_ok;
using drover::testing::one_submit;
using drover::testing::run;
using drover::testing::test_db;
using ids = std::vector<std::string>;

namespace {

/// The partitions [from, to) of `all` as a fence of `instance`.
std::shared_ptr<const pg::write_fence> part_of(const pg::write_fence& all,
                                               const std::string& instance,
                                               int32_t from, int32_t to) {
  auto f = std::make_shared<pg::write_fence>();
  f->instance = instance;
  for (int32_t p = from; p < to; ++p) {
    f->partitions.push_back(p);
    f->epochs.push_back(all.epoch_of(p));
  }
  return f;
}

ids sorted(ids x) {
  std::sort(x.begin(), x.end());
  return x;
}

struct two_coordinators {
  test_db db;
  pg::session a = db.session();
  pg::session b = db.session();
  pg::connection admin = db.connect();

  two_coordinators() {
    auto attempt = must(pg::try_acquire_all(a, pg::this_process("a"), 60000ms));
    REQUIRE(attempt.grant);
    auto all = attempt.grant->fence();
    run(admin, "UPDATE drover.partition_leases SET owner = 'inst-b' "
               "WHERE partition >= 32");
    a.set_fence(part_of(*all, all->instance, 0, 32));
    b.set_fence(part_of(*all, "inst-b", 32, 64));
    for (auto id : {"ja-1", "jc-2", "je-3", "jg-4"})
      must(a.write(one_submit(id, "export")));
    for (auto id : {"jb-33", "jd-34", "jf-35"})
      must(b.write(one_submit(id, "export")));
  }

  /// An event of `kind` (event_kind) appended to job `id`, leaving it in
  /// `status` (job_status), as the store writes it: the job's seq + 1.
  void event(const std::string& id, int kind, int status) {
    auto final_status = status >= 4 ? std::to_string(status) : "NULL";
    run(admin, "WITH j AS (UPDATE drover.jobs SET status = "
                   + std::to_string(status) + ", final_status = " + final_status
                   + ", seq = seq + 1 WHERE job_id = '" + id
                   + "' RETURNING seq) INSERT INTO drover.events (job_id, seq, "
                     "attempt, kind, at_ms, payload) SELECT '"
                   + id + "', j.seq, 1, " + std::to_string(kind)
                   + ", 0, ''::bytea FROM j");
  }
  /// Its attempt starts, completes, fails into a retry; a superseded
  /// attempt's late report is recorded while it waits.
  void start(const std::string& id) {
    event(id, 3, 2);
  }
  void complete(const std::string& id) {
    event(id, 7, 4);
  }
  void retry(const std::string& id) {
    event(id, 6, 3);
  }
  void rejected_report(const std::string& id) {
    event(id, 17, 0);
  }
};

} // namespace

TEST_CASE("permits: a type's limit holds across coordinators, a permit "
          "counts while its job waits to start or runs",
          "[pg][permits]") {
  two_coordinators c;
  // A takes both of the limit's permits; B, asking after, gets none.
  CHECK(sorted(must(c.a.grant_permits("export", "", 2, 100, {"ja-1", "jc-2"})))
        == ids{"ja-1", "jc-2"});
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jb-33", "jd-34"}))
            .empty());
  // Asked again (an answer lost): held, not a second permit.
  CHECK(must(c.a.grant_permits("export", "", 2, 100, {"ja-1", "je-3"}))
        == ids{"ja-1"});
  // A record that leaves a waiting job waiting (a zombie's late report)
  // does not end its grant.
  c.rejected_report("jc-2");
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jb-33"})).empty());
  // Running, it still counts; once its attempt ended, it does not.
  c.start("ja-1");
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jb-33"})).empty());
  c.complete("ja-1");
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jb-33", "jd-34"}))
        == ids{"jb-33"});
  // A granted job whose attempt started and failed (it waits to retry)
  // holds nothing any more.
  c.start("jc-2");
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jd-34"})).empty());
  c.retry("jc-2");
  CHECK(must(c.b.grant_permits("export", "", 2, 100, {"jd-34"}))
        == ids{"jd-34"});
  CHECK(must(c.a.grant_permits("export", "", 2, 100, {"je-3"})).empty());
  // Another key (per tenant) counts apart.
  CHECK(must(c.a.grant_permits("export", "t", 1, 100, {"je-3"}))
        == ids{"je-3"});
  CHECK(must(c.a.grant_permits("export", "u", 1, 100, {"jg-4"}))
        == ids{"jg-4"});
  CHECK(must(c.a.grant_permits("export", "t", 1, 100, {"jg-4"})).empty());
  // What no longer counts is gone from the table.
  auto rows = run(c.admin, "SELECT string_agg(job_id, ',' ORDER BY job_id) "
                           "FROM drover.concurrency_permits WHERE tenant = ''");
  CHECK(std::string{rows.value(0, 0)} == "jb-33,jd-34");
}

TEST_CASE("permits: the grants of an owner that lost its lease lapse",
          "[pg][permits]") {
  two_coordinators c;
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"ja-1"})) == ids{"ja-1"});
  CHECK(must(c.b.grant_permits("export", "", 1, 100, {"jb-33"})).empty());
  // A's partition 1 is taken over (epoch + 1): the job did not start, so
  // its grant lapsed with the lease it was granted under.
  run(c.admin, "UPDATE drover.partition_leases SET epoch = epoch + 1 "
               "WHERE partition = 1");
  CHECK(must(c.b.grant_permits("export", "", 1, 100, {"jb-33"}))
        == ids{"jb-33"});
  // A running job's permit does not lapse with its lease: its attempt may
  // still run until its outcome is written, whoever writes it.
  c.start("jb-33");
  run(c.admin, "UPDATE drover.partition_leases SET epoch = epoch + 1 "
               "WHERE partition = 33");
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"jc-2"})).empty());
}

TEST_CASE("permits: a coordinator's earlier waiter is served before "
          "another's later job",
          "[pg][permits]") {
  two_coordinators c;
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"ja-1"})) == ids{"ja-1"});
  // B waits with jb-33 (submitted before A's jc-2, je-3).
  CHECK(must(c.b.grant_permits("export", "", 1, 100, {"jb-33"})).empty());
  c.start("ja-1");
  c.complete("ja-1");
  // A asks first, but B's waiter came first: A is refused...
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"jc-2"})).empty());
  // ...and B gets it at its next ask.
  CHECK(must(c.b.grant_permits("export", "", 1, 100, {"jb-33"}))
        == ids{"jb-33"});
  c.start("jb-33");
  c.complete("jb-33");
  // A waiter not refreshed for 5 s (its coordinator stopped asking) holds
  // nothing back: B's jd-34 waits, then B goes quiet.
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"jc-2"})) == ids{"jc-2"});
  CHECK(must(c.b.grant_permits("export", "", 1, 100, {"jd-34"})).empty());
  c.start("jc-2");
  c.complete("jc-2");
  run(c.admin, "UPDATE drover.concurrency_waiters SET seen_at = now() - "
               "interval '6 s'");
  CHECK(must(c.a.grant_permits("export", "", 1, 100, {"je-3"})) == ids{"je-3"});
  // A's waiter row is gone once it waits no more.
  auto rows = run(c.admin, "SELECT count(*) FROM drover.concurrency_waiters "
                           "WHERE instance <> 'inst-b'");
  CHECK(std::string{rows.value(0, 0)} == "0");
}

TEST_CASE("permits: only waiting jobs of partitions written get one, bad "
          "requests are refused",
          "[pg][permits]") {
  two_coordinators c;
  // B's job through A, a job that does not exist, one that runs.
  c.start("jc-2");
  CHECK(must(c.a.grant_permits("export", "", 5, 100, {"jb-33", "jq-1", "jc-2"}))
            .empty());
  auto none = [](caf::expected<ids> r) {
    REQUIRE_FALSE(r);
    return is(r.error(), errc::invalid_request);
  };
  CHECK(none(c.a.grant_permits("export", "", 0, 100, {"ja-1"})));
  CHECK(none(c.a.grant_permits("", "", 1, 100, {"ja-1"})));
  CHECK(none(c.a.grant_permits("export", "", 1, 100, {""})));
  CHECK(none(c.a.grant_permits("export", "", 1, 100, ids(10001, "ja-1"))));
  auto unfenced = c.db.session();
  CHECK(none(unfenced.grant_permits("export", "", 1, 100, {"ja-1"})));
  // Nothing was granted by any of them.
  auto rows = run(c.admin, "SELECT count(*) FROM drover.concurrency_permits");
  CHECK(std::string{rows.value(0, 0)} == "0");
}

TEST_CASE("permits: at most most_new are granted, held ones are found "
          "anywhere in the list, a key being granted elsewhere grants nothing",
          "[pg][permits]") {
  two_coordinators c;
  CHECK(must(c.a.grant_permits("export", "", 3, 1, {"ja-1", "jc-2"}))
        == ids{"ja-1"});
  // ja-1 waits behind jc-2 now (it went to a rate limit and came back):
  // still held, answered wherever it is; an id twice is asked once.
  CHECK(sorted(must(
            c.a.grant_permits("export", "", 3, 1, {"jc-2", "jc-2", "ja-1"})))
        == ids{"ja-1", "jc-2"});
  // Another session holds the key's lock (paused in its grant): nothing,
  // at once, instead of waiting for it.
  run(c.admin, "BEGIN");
  run(c.admin, "SELECT pg_advisory_xact_lock(hashtextextended("
               "'drover.permit:' || 'export' || ':' || '', 0))");
  CHECK(must(c.b.grant_permits("export", "", 3, 3, {"jb-33"})).empty());
  run(c.admin, "ROLLBACK");
  CHECK(must(c.b.grant_permits("export", "", 3, 3, {"jb-33", "jd-34"}))
        == ids{"jb-33"});
}
