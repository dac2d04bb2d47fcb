// The PostgreSQL store behind the unchanged store protocol, partitions:
// partitions changes, reads, recovery and retention by partition. In a real job
// system (real threads, real PostgreSQL). Waits are on events with
// deadlines; each test case has a database of its own. Helpers:
// tests/support/pg_store_fixture.hpp.

#include "actors/job_system.hpp"
#include "actors/pg_store.hpp"
#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"
#include "runtime/pg_lease.hpp"
#include "runtime/type_ids.hpp"
#include "support/actor_config.hpp"
#include "support/direct_client.hpp"
#include "support/pg_store_fixture.hpp"
#include "support/test_db.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/exit_reason.hpp>
#include <caf/scoped_actor.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

using namespace drover;
using namespace std::chrono_literals;
using drover::testing::must;
using drover::testing::real_config;
using drover::testing::test_db;
using namespace drover::testing::pg_store_fixture;

// -- partitions ---------------------------------------------------------------

TEST_CASE("a partitions change is answered after every write accepted "
          "before it committed under the old fence",
          "[pg][store][partitions]") {
  test_db db;
  // Four operations per transaction: the burst below is many batches,
  // sealed and in flight when the change arrives behind it.
  fenced_store fs{db, [](pg_store_config& pc) { pc.max_batch = 4; }};
  REQUIRE(fs.submit(fs.store, "warmup-2")); // connected
  auto store = caf::actor_cast<caf::actor>(fs.store);
  auto log = std::make_shared<answer_log>();
  std::vector<burst_step> steps;
  constexpr int before = 120;
  std::set<std::string> sent_before;
  for (int i = 0; i < before; ++i) {
    // Partitions 1 (given up by the change) and 2 (kept), alternately.
    auto id
        = "pre" + std::to_string(1000 + i) + "-" + std::to_string(1 + i % 2);
    sent_before.insert(id);
    steps.push_back(step<job_record>(log, store, id, submit_atom::value,
                                     submitted_event(id, "")));
  }
  steps.push_back(step<ok_atom>(log, store, "change", partitions_atom::value,
                                std::vector<int32_t>{0, 2, 3},
                                fs.epochs_of({0, 2, 3})));
  constexpr int after = 20;
  for (int i = 0; i < after; ++i) {
    auto id
        = "post" + std::to_string(1000 + i) + "-" + std::to_string(1 + i % 2);
    steps.push_back(step<job_record>(log, store, id, submit_atom::value,
                                     submitted_event(id, "")));
  }
  send_burst(fs, std::move(steps));
  auto got = log->wait_for(before + 1 + after);
  auto ok_at = answer_log::position(got, "change");
  REQUIRE(ok_at < got.size());
  CHECK_FALSE(got[ok_at].second);
  // Every write sent before the change was answered before it, and
  // committed: those of partition 1 too, under the fence that still held
  // it.
  for (size_t i = 0; i < got.size(); ++i) {
    if (sent_before.count(got[i].first) == 0)
      continue;
    INFO(got[i].first);
    CHECK(i < ok_at);
    CHECK_FALSE(got[i].second);
  }
  // After it: partition 1 is refused (not_owner, nothing written),
  // partition 2 is written.
  for (const auto& [label, err] : got) {
    if (label.rfind("post", 0) != 0)
      continue;
    INFO(label << ": " << describe(err));
    if (label.back() == '1')
      CHECK(is(err, errc::not_owner));
    else
      CHECK_FALSE(err);
  }
  std::string pre_ids;
  for (const auto& id : sent_before)
    pre_ids += (pre_ids.empty() ? "" : ",") + id;
  CHECK(job_ids(db, "pre%") == pre_ids);
  std::string post_ids;
  for (int i = 1; i < after; i += 2)
    post_ids += (post_ids.empty() ? "" : ",") + std::string{"post"}
                + std::to_string(1000 + i) + "-2";
  CHECK(job_ids(db, "post%") == post_ids);
  // The burst took several transactions: the change really came behind
  // batches still waiting to be written.
  {
    auto conn = db.connect();
    auto r = must(conn.exec("SELECT count(DISTINCT xmin::text) FROM "
                            "drover.jobs WHERE job_id LIKE 'pre%'"));
    CHECK(std::stoi(std::string{r.value(0, 0)}) > 2);
  }
  // Nothing of ours holds partition 1's lease row any more: another
  // coordinator takes it at once, and this store is not deposed by it.
  {
    auto conn = db.connect();
    must(conn.exec("SET lock_timeout = '2s'"));
    must(conn.exec("UPDATE drover.partition_leases SET owner = 'other', "
                   "epoch = epoch + 1 WHERE partition = 1"));
  }
  auto late = fs.submit(fs.store, "late-1");
  REQUIRE_FALSE(late);
  CHECK(is(late.error(), errc::not_owner));
  REQUIRE(fs.submit(fs.store, "late-2"));
  CHECK(fs.deposed.load() == 0);
  // A takeover of a partition it still owns deposes it, as before.
  {
    auto conn = db.connect();
    must(conn.exec("UPDATE drover.partition_leases SET epoch = epoch + 1 "
                   "WHERE partition = 3"));
  }
  auto taken = fs.submit(fs.store, "taken-3");
  REQUIRE_FALSE(taken);
  CHECK(is(taken.error(), errc::unavailable));
  CHECK(fs.deposed.load() == 1);
  std::lock_guard<std::mutex> guard{fs.mx};
  CHECK(fs.reason.find("partition 3 was taken over") != std::string::npos);
}

TEST_CASE("appends received before a partitions change are written under "
          "the old fence even when their jobs must be read first",
          "[pg][store][partitions]") {
  test_db db;
  fenced_store fs{db};
  // Jobs written by another store: the fenced store has none of them
  // cached, so every append below reads its job first.
  std::vector<std::string> ids;
  for (int i = 0; i < 40; ++i) {
    ids.push_back("job" + std::to_string(100 + i) + "-1");
    REQUIRE(fs.submit(fs.other, ids.back()));
  }
  REQUIRE(fs.submit(fs.other, "kept-2"));
  auto store = caf::actor_cast<caf::actor>(fs.store);
  auto cancel_of = [](const std::string& id) {
    job_event ev;
    ev.job_id = id;
    ev.kind = event_kind::cancelled;
    ev.at_ms = 1500;
    ev.reason = "test";
    return std::vector<job_event>{ev};
  };
  auto log = std::make_shared<answer_log>();
  std::vector<burst_step> steps;
  for (size_t i = 0; i + 1 < ids.size(); ++i)
    steps.push_back(step<ok_atom>(log, store, ids[i], append_atom::value,
                                  cancel_of(ids[i])));
  steps.push_back(step<ok_atom>(log, store, "change", partitions_atom::value,
                                std::vector<int32_t>{2}, fs.epochs_of({2})));
  // After the change: refused without being read or written, and written.
  steps.push_back(step<ok_atom>(log, store, ids.back(), append_atom::value,
                                cancel_of(ids.back())));
  steps.push_back(step<ok_atom>(log, store, "kept-2", append_atom::value,
                                cancel_of("kept-2")));
  send_burst(fs, std::move(steps));
  auto got = log->wait_for(ids.size() + 2);
  auto ok_at = answer_log::position(got, "change");
  REQUIRE(ok_at < got.size());
  CHECK_FALSE(got[ok_at].second);
  for (size_t i = 0; i + 1 < ids.size(); ++i) {
    INFO(ids[i]);
    auto at = answer_log::position(got, ids[i]);
    REQUIRE(at < got.size());
    CHECK_FALSE(got[at].second);
    CHECK(at < ok_at);
  }
  auto refused = got[answer_log::position(got, ids.back())].second;
  INFO(describe(refused));
  CHECK(is(refused, errc::not_owner));
  CHECK_FALSE(got[answer_log::position(got, "kept-2")].second);
  auto conn = db.connect();
  auto cancelled = must(
      conn.exec("SELECT count(*) FROM drover.jobs WHERE final_status = 6 "
                "AND job_id LIKE 'job%'"));
  CHECK(std::string{cancelled.value(0, 0)} == std::to_string(ids.size() - 1));
  auto last = fs.ask<job_record>(fs.store, get_atom::value, ids.back());
  REQUIRE(last);
  CHECK(last->status == job_status::queued);
  auto kept
      = fs.ask<job_record>(fs.store, get_atom::value, std::string{"kept-2"});
  REQUIRE(kept);
  CHECK(kept->status == job_status::cancelled);
  CHECK(fs.deposed.load() == 0);
}

TEST_CASE("a store reads the jobs of partitions it does not own from "
          "PostgreSQL every time",
          "[pg][store][partitions]") {
  test_db db;
  fenced_store fs{db};
  auto get = [&fs](const std::string& id) {
    return fs.ask<job_record>(fs.store, get_atom::value, id);
  };
  // Cached while its partition is the store's: it submitted it and read
  // it.
  REQUIRE(fs.submit(fs.store, "mine-1"));
  REQUIRE(get("mine-1"));
  REQUIRE(fs.submit(fs.other, "theirs-1"));
  REQUIRE(fs.submit(fs.store, "kept-2"));
  REQUIRE(fs.own({2}));
  // Another coordinator changes both jobs of partition 1: the store shows
  // it at once, the evicted job and the one read after the change alike,
  // and keeps reading them afresh.
  REQUIRE(get("theirs-1"));
  REQUIRE_FALSE(fs.cancel(fs.other, "mine-1"));
  REQUIRE_FALSE(fs.cancel(fs.other, "theirs-1"));
  for (const char* id : {"mine-1", "theirs-1"}) {
    INFO(id);
    auto rec = get(id);
    REQUIRE(rec);
    CHECK(rec->status == job_status::cancelled);
  }
  // A write to them is refused before anything is read or written.
  auto refused = fs.cancel(fs.store, "theirs-1");
  CHECK(is(refused, errc::not_owner));
  auto dup = fs.submit(fs.store, "again-1");
  REQUIRE_FALSE(dup);
  CHECK(is(dup.error(), errc::not_owner));
  CHECK(job_ids(db, "again%").empty());
  // Its own partition is written as before.
  REQUIRE_FALSE(fs.cancel(fs.store, "kept-2"));
  auto kept = get("kept-2");
  REQUIRE(kept);
  CHECK(kept->status == job_status::cancelled);
  // Taking partition 1 back: writable again.
  REQUIRE(fs.own({1, 2}));
  REQUIRE(fs.submit(fs.store, "back-1"));
  CHECK(fs.deposed.load() == 0);
}

TEST_CASE("partitions_atom checks its arguments and needs a fenced store",
          "[pg][store][partitions]") {
  test_db db;
  fenced_store fs{db};
  auto change = [&fs](const store_actor& to, std::vector<int32_t> parts,
                      std::vector<int64_t> epochs) {
    return fs.ask<ok_atom>(to, partitions_atom::value, std::move(parts),
                           std::move(epochs));
  };
  for (auto& [parts, epochs] :
       std::vector<std::pair<std::vector<int32_t>, std::vector<int64_t>>>{
           {{1, 2}, {1}},
           {{2, 1}, {1, 1}},
           {{1, 1}, {1, 1}},
           {{-1}, {1}},
           {{max_partitions}, {1}},
           {{3}, {-1}}}) {
    auto r = change(fs.store, parts, epochs);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
  }
  auto unfenced = change(fs.other, {1}, {1});
  REQUIRE_FALSE(unfenced);
  CHECK(is(unfenced.error(), errc::invalid_request));
  // None of that changed anything; no partition at all is allowed.
  REQUIRE(fs.submit(fs.store, "still-5"));
  REQUIRE(change(fs.store, {}, {}));
  auto none = fs.submit(fs.store, "none-5");
  REQUIRE_FALSE(none);
  CHECK(is(none.error(), errc::not_owner));
}

TEST_CASE("recovery by partition through the PostgreSQL store",
          "[pg][store][partitions][recovery]") {
  test_db db;
  fenced_store fs{db};
  for (const char* id : {"r1-1", "r2-2", "r3-1", "r4-1", "old0001"})
    REQUIRE(fs.submit(fs.store, id));
  REQUIRE_FALSE(fs.cancel(fs.store, "r3-1"));
  auto page = [&fs](int32_t p, std::string after, uint32_t limit) {
    return fs.ask<std::vector<job_record>>(fs.store, recover_atom::value, p,
                                           std::move(after), limit);
  };
  auto ids = [](const std::vector<job_record>& recs) {
    std::vector<std::string> out;
    for (const auto& r : recs)
      out.push_back(r.job_id);
    return out;
  };
  CHECK(ids(must(page(1, "", 10))) == std::vector<std::string>{"r1-1", "r4-1"});
  CHECK(ids(must(page(1, "r1-1", 10))) == std::vector<std::string>{"r4-1"});
  CHECK(ids(must(page(1, "", 1))) == std::vector<std::string>{"r1-1"});
  CHECK(ids(must(page(0, "", 10))) == std::vector<std::string>{"old0001"});
  // Not owned: read all the same (a coordinator reads what it takes over).
  REQUIRE(fs.own({0}));
  CHECK(ids(must(page(2, "", 10))) == std::vector<std::string>{"r2-2"});
  for (auto [p, limit] :
       std::vector<std::pair<int32_t, uint32_t>>{{-1, 10},
                                                 {max_partitions, 10},
                                                 {1, 0},
                                                 {1, max_recovery_page + 1}}) {
    auto r = page(p, "", limit);
    REQUIRE_FALSE(r);
    CHECK(is(r.error(), errc::invalid_request));
  }
}

TEST_CASE("retention and pending webhooks cover the partitions the store "
          "owns",
          "[pg][store][partitions][retention]") {
  test_db db;
  fenced_store fs{db, [](pg_store_config& pc) {
                    // Spawned owning partitions 2 and 3 only.
                    auto f = std::make_shared<pg::write_fence>(*pc.fence);
                    f->partitions = {2, 3};
                    f->epochs = {pc.fence->epoch_of(2), pc.fence->epoch_of(3)};
                    pc.fence = f;
                    pc.retain_finished = 1ms;
                    pc.retention_interval = 20ms;
                    pc.clock_ms = [] { return int64_t{1'000'000}; };
                  }};
  // Finished long ago (by the store's clock), in partitions 1 to 4; and
  // finished jobs that still owe their webhook, which stay.
  for (const char* id : {"r1-1", "r2-2", "r3-3", "r4-4"}) {
    REQUIRE(fs.submit(fs.other, id));
    REQUIRE_FALSE(fs.cancel(fs.other, id));
  }
  for (const char* id : {"w1-1", "w2-2"}) {
    auto ev = submitted_event(id, "");
    ev.spec.callback_url = "https://example.com/hook";
    REQUIRE(fs.ask<job_record>(fs.other, submit_atom::value, ev));
    REQUIRE_FALSE(fs.cancel(fs.other, id));
  }
  auto webhooks = [&fs] {
    std::vector<std::string> out;
    auto recs = must(fs.ask<std::vector<job_record>>(
        fs.store, webhooks_atom::value, std::string{}, uint32_t{100}));
    for (const auto& r : recs)
      out.push_back(r.job_id);
    return out;
  };
  CHECK(webhooks() == std::vector<std::string>{"w2-2"});
  REQUIRE(drover::testing::poll_until(
      [&db] { return job_ids(db, "r%") == "r1-1,r4-4"; }, 20s));
  // Partition 1 instead: its turn; 4 is nobody's here.
  REQUIRE(fs.own({1}));
  CHECK(webhooks() == std::vector<std::string>{"w1-1"});
  REQUIRE(drover::testing::poll_until(
      [&db] { return job_ids(db, "r%") == "r4-4"; }, 20s));
  CHECK(job_ids(db, "w%") == "w1-1,w2-2");
  CHECK(fs.deposed.load() == 0);
}

TEST_CASE("a partitions change waits for the write in flight: committed or "
          "lost with its connection",
          "[pg][store][partitions][outage]") {
  test_db db;
  fenced_store fs{db, [](pg_store_config& pc) { pc.max_batch = 4; }};
  REQUIRE(fs.submit(fs.store, "warmup-2")); // connected
  // The test holds partition 2's lease row: the store's next write of
  // partition 2 waits for it inside its fence check, in flight.
  auto blocker = db.connect();
  must(blocker.exec("BEGIN"));
  must(blocker.exec("SELECT 1 FROM drover.partition_leases "
                    "WHERE partition = 2 FOR UPDATE"));
  auto store = caf::actor_cast<caf::actor>(fs.store);
  auto log = std::make_shared<answer_log>();
  std::vector<burst_step> steps;
  std::vector<std::string> pre;
  for (int i = 0; i < 30; ++i) {
    pre.push_back("pre" + std::to_string(1000 + i) + "-"
                  + std::to_string(2 - i % 2));
    steps.push_back(step<job_record>(log, store, pre.back(), submit_atom::value,
                                     submitted_event(pre.back(), "")));
  }
  steps.push_back(step<ok_atom>(log, store, "change", partitions_atom::value,
                                std::vector<int32_t>{2}, fs.epochs_of({2})));
  for (const char* id : {"post1-1", "post2-2"})
    steps.push_back(step<job_record>(log, store, id, submit_atom::value,
                                     submitted_event(id, "")));
  send_burst(fs, std::move(steps));
  auto blocked_pid = [&db] {
    auto conn = db.connect();
    auto r = must(conn.exec("SELECT coalesce(max(pid), 0) FROM "
                            "pg_stat_activity WHERE datname = "
                            "current_database() AND wait_event_type = 'Lock'"));
    return std::stoll(std::string{r.value(0, 0)});
  };
  REQUIRE(drover::testing::poll_until([&] { return blocked_pid() != 0; }, 10s));
  // Blocked in flight: no write before the change has been answered, and
  // neither has the change. (The write after it to partition 1 was refused
  // at once.)
  {
    std::lock_guard<std::mutex> guard{log->mx};
    for (const auto& [label, err] : log->items) {
      INFO(label);
      CHECK(label == "post1-1");
      CHECK(is(err, errc::not_owner));
    }
  }
  auto ok_position
      = [](const std::vector<std::pair<std::string, caf::error>>& got) {
          auto ok_at = answer_log::position(got, "change");
          REQUIRE(ok_at < got.size());
          CHECK_FALSE(got[ok_at].second);
          return ok_at;
        };
  SECTION("the write in flight commits") {
    must(blocker.exec("ROLLBACK"));
    auto got = log->wait_for(pre.size() + 3);
    auto ok_at = ok_position(got);
    for (const auto& id : pre) {
      INFO(id);
      auto at = answer_log::position(got, id);
      REQUIRE(at < got.size());
      CHECK(at < ok_at);
      CHECK_FALSE(got[at].second);
    }
    auto sorted = pre;
    std::sort(sorted.begin(), sorted.end());
    std::string all;
    for (const auto& id : sorted)
      all += (all.empty() ? "" : ",") + id;
    CHECK(job_ids(db, "pre%") == all);
    CHECK(job_ids(db, "post%") == "post2-2");
  }
  SECTION("its connection is lost") {
    auto admin = db.connect();
    must(admin.exec("SELECT pg_terminate_backend($1::int)",
                    pg::params{}.int64(blocked_pid())));
    auto got = log->wait_for(pre.size() + 3);
    auto ok_at = ok_position(got);
    // Every write of the old fence failed (nothing was committed) and was
    // answered before the change; those behind the change failed too.
    for (const auto& id : pre) {
      INFO(id);
      auto at = answer_log::position(got, id);
      REQUIRE(at < got.size());
      CHECK(at < ok_at);
      CHECK(is(got[at].second, errc::unavailable));
    }
    CHECK(job_ids(db, "pre%").empty());
    CHECK(job_ids(db, "post%").empty());
    must(blocker.exec("ROLLBACK"));
    // The store comes back, under the new fence.
    REQUIRE(drover::testing::poll_until(
        [&fs] { return static_cast<bool>(fs.submit(fs.store, "again-2")); },
        20s));
    auto refused = fs.submit(fs.store, "again-1");
    REQUIRE_FALSE(refused);
    CHECK(is(refused.error(), errc::not_owner));
  }
  CHECK(fs.deposed.load() == 0);
}
