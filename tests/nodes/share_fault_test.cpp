// Coordinators sharing the partitions (--share-partitions, docs/cluster.md
// "Several active coordinators") under faults (issue 13), as real
// drover-node processes on a real PostgreSQL:
//
// - one coordinator cut off from PostgreSQL (its role refused new sessions,
//   its sessions killed until the survivors hold its partitions): they
//   take them with a newer epoch; let back in, it finds them taken over,
//   drops them (`deposed`) without a write there, and gets its share back
//   by hand-off;
// - one coordinator cut off from its worker nodes (they reach it through
//   support/tcp_proxy.hpp, which stops forwarding): it keeps its
//   partitions (PostgreSQL decides who owns them, not the workers), the
//   attempts it had leased there lapse and run again on a worker node it
//   still reaches; after the heal -- the held bytes let through, or the
//   connections reset -- their late outcomes are refused and recorded; if
//   the cut outlasts the worker nodes' connection timeout, the cut-off
//   agents join another coordinator, which refuses those attempts (it
//   does not own their partitions), and go home once the cut heals (the
//   seed decides which); either way they serve it again;
// - PostgreSQL stopped with `-m immediate` while the survivors take over a
//   killed coordinator's partitions (at once after the kill, or once the
//   first of them is taken, as the seed decides, and for a moment or past
//   every lease): once it is back, the survivors hold all 64.
//
// After the faults heal, every stored job is audited against
// ../shared/RELIABILITY.md (support/audit.hpp), and every row of the audit
// log written since the coordinators started is checked to have been
// written by its partition's owner at that moment
// (support/share_faults.hpp). Which coordinator is hurt and the job
// lengths are seeded; the seed is printed (DROVER_TEST_SEED replays one).
// Waits are on events with deadlines.

#include "support/audit.hpp"
#include "support/pg_cluster.hpp"
#include "support/share_faults.hpp"
#include "support/sharing.hpp"
#include "support/tcp_proxy.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <csignal>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::cluster_harness;
using namespace drover::testing::audit_log;
using namespace std::chrono_literals;

namespace {

const std::vector<std::string> all_three{"c1", "c2", "c3"};

/// The coordinators of all_three but `hurt`.
std::vector<std::string> others_than(const std::string& hurt) {
  std::vector<std::string> out;
  for (const auto& n : all_three)
    if (n != hurt)
      out.push_back(n);
  return out;
}

/// `per_coordinator` sleep jobs of [min_ms, max_ms] (seeded) through each
/// coordinator's admin port; the acknowledged ids by coordinator.
std::map<std::string, std::vector<std::string>>
submit_to_each(sharing& s, std::mt19937_64& rng, int per_coordinator,
               int min_ms, int max_ms, std::set<std::string>& acked) {
  std::uniform_int_distribution<int> ms{min_ms, max_ms};
  std::map<std::string, std::vector<std::string>> by;
  for (int i = 0; i < per_coordinator; ++i)
    for (const auto& n : all_three) {
      auto id = s.submit(n, ms(rng));
      acked.insert(id);
      by[n].push_back(id);
    }
  return by;
}

/// Waits until `name`'s store writes again: as many "is back" lines as
/// "unreachable" ones (a submit before that is refused `unavailable`).
bool store_back(cluster& c, const std::string& name,
                std::chrono::milliseconds timeout) {
  return poll_until(
      [&] {
        return c.log_count(name, "PostgreSQL is back; accepting writes again")
               >= c.log_count(name, "PostgreSQL unreachable; writes are "
                                    "refused");
      },
      timeout);
}

/// Every partition `from` held `before` is held by another node `after`,
/// at a newer epoch.
void check_moved(const lease_map& before, lease_map after,
                 const std::string& from) {
  for (const auto& [p, lease] : before)
    if (lease.first == from) {
      INFO("partition " << p);
      CHECK(after[p].first != from);
      CHECK(after[p].second > lease.second);
    }
}

/// The worker (node/slot) of each `started` event of `job`, in order.
std::vector<std::string> started_on(const stored_job& job) {
  std::vector<std::string> out;
  for (const auto& ev : job.events)
    if (ev.kind == drover::event_kind::started)
      out.push_back(ev.worker_id);
  return out;
}

/// A sleep of `ms` with idempotency key `key`, submitted to each of
/// `names` in turn until one accepts it: its partition's owner, once its
/// store writes again (the first write after an outage may find the
/// connection gone: `unavailable`). The same key each time: created at
/// most once (RELIABILITY.md 2), whatever the answers were.
std::string submit_keyed(sharing& s, const std::vector<std::string>& names,
                         const std::string& key, int ms) {
  auto input = "{\"ms\":" + std::to_string(ms * time_scale()) + "}";
  std::string id;
  std::string last;
  bool accepted = poll_until(
      [&] {
        for (const auto& n : names) {
          auto [rc, out]
              = droverctl({"submit", "sleep", "--port", s.admin.at(n),
                           "--input", input, "--idempotency-key", key});
          if (rc == 0) {
            id = job_id_of(out);
            return true;
          }
          last = out;
        }
        return false;
      },
      30s, 200ms);
  INFO(last);
  REQUIRE(accepted);
  return id;
}

/// `ok`, with the tails of `names`' logs as they are now added to the
/// next assertion's report when it is false.
bool or_logs(bool ok, sharing& s, const std::vector<std::string>& names) {
  if (!ok)
    UNSCOPED_INFO(s.logs_of(names));
  return ok;
}

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - t);
}

} // namespace

TEST_CASE("a sharing coordinator cut off from PostgreSQL loses its "
          "partitions to the survivors and let back in writes nothing there "
          "and gets its share back",
          "[pg][cluster][process][share][faults]") {
  auto seed = test_seed();
  std::mt19937_64 rng{seed};
  auto cut = all_three[rng() % 3];
  auto survivors = others_than(cut);
  std::cout << "share_fault_test pg-cut: seed " << seed << ", " << cut
            << " cut off from PostgreSQL" << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  throwaway_cluster pg;
  auto admin = must(drover::pg::connection::open(pg.url()));
  cluster c;
  sharing s{c};
  auto logs = [&](bool ok) { return or_logs(ok, s, all_three); };
  // Each coordinator logs in as a role of its own: the test can cut
  // exactly one off.
  for (const auto& n : all_three) {
    c.pg_url = url_as(admin, pg.url(), "role_" + n);
    s.start(n);
  }
  c.pg_url = pg.url();
  REQUIRE(logs(poll_until([&] { return s.spread_over(all_three); }, 20s)));
  install_writer_audit(pg.url());
  std::set<std::string> acked;
  auto by = submit_to_each(s, rng, 6, 300, 1500, acked);
  REQUIRE(logs(c.wait_running(by[cut][0], 20s)));
  auto before = leases_of(pg.url());

  // Cut off: no new session, and the open ones killed -- again at every
  // probe, so that one being opened as the role was refused dies too.
  run(admin, "ALTER ROLE role_" + cut + " NOLOGIN");
  auto cut_at = std::chrono::steady_clock::now();
  int64_t killed = 0;
  REQUIRE(logs(poll_until(
      [&] {
        killed += kill_sessions_of(pg.url(), "role_" + cut);
        return s.spread_over(survivors);
      },
      30s, 100ms)));
  std::cout << "share_fault_test pg-cut: the survivors held " << cut
            << "'s partitions " << since(cut_at).count()
            << " ms after the cut (" << killed
            << " sessions killed; lease TTL 2000 ms)" << std::endl;
  CHECK(killed >= 1);
  // Each of its partitions moved to a survivor, with a newer epoch.
  check_moved(before, leases_of(pg.url()), cut);
  // It still runs, and knows it cannot renew.
  CHECK_FALSE(s.nodes[cut]->wait_exit(0ms));
  CHECK(logs(c.wait_log(cut, "cannot renew the partition leases", 5s)));
  // A submit to it commits nothing, so it is not acknowledged
  // (RELIABILITY.md 11; the audit finds no job nobody acknowledged).
  {
    auto [rc, out] = droverctl(
        {"submit", "sleep", "--port", s.admin[cut], "--input", "{\"ms\":10}"});
    INFO(out);
    CHECK(rc != 0);
  }
  // The survivors take new work meanwhile.
  for (int i = 0; i < 4; ++i)
    acked.insert(s.submit(survivors[static_cast<size_t>(i) % 2], 100));

  // Let back in: its first renewal (or a write it held, refused by the
  // fence) finds its partitions taken over; it drops them and, a member
  // again, gets its share back by hand-off.
  run(admin, "ALTER ROLE role_" + cut + " LOGIN");
  auto healed_at = std::chrono::steady_clock::now();
  CHECK(logs(c.wait_log(cut, "deposed", 20s)));
  REQUIRE(logs(poll_until([&] { return s.spread_over(all_three); }, 30s)));
  std::cout << "share_fault_test pg-cut: " << cut << " held its share again "
            << since(healed_at).count() << " ms after the heal" << std::endl;
  CHECK_FALSE(s.nodes[cut]->wait_exit(0ms));
  // Its store noticed the cut (the progress writes of the job running
  // there failed): it takes submits again once it has reconnected.
  REQUIRE(logs(store_back(c, cut, 30s)));
  acked.insert(s.submit(cut, 50));
  c.check_all_done_once({acked.begin(), acked.end()}, 90s);
  audit_share_run(pg.url(), acked, "pg-cut");
}

TEST_CASE("a sharing coordinator cut off from its worker nodes keeps its "
          "partitions while its attempts there run again elsewhere and "
          "their late outcomes are refused",
          "[pg][cluster][process][share][faults]") {
  auto seed = test_seed();
  std::mt19937_64 rng{seed};
  auto cut = all_three[rng() % 3];
  // How the cut heals: the held bytes let through, the connections reset,
  // or -- the cut outlasting the worker nodes' connection timeout -- after
  // the cut-off agents gave their coordinator up and joined another.
  enum heal_mode { through, reset, failed_over };
  auto mode = static_cast<heal_mode>(rng() % 3);
  const char* how[]
      = {"by letting the held bytes through", "by resetting the connections",
         "after its agents failed over to another coordinator"};
  std::cout << "share_fault_test worker-cut: seed " << seed << ", " << cut
            << " cut off from its worker nodes, healed " << how[mode]
            << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  cluster c;
  sharing s{c};
  auto logs = [&](bool ok) {
    return or_logs(ok, s, {"c1", "c2", "c3", "w1", "w2", "w3"});
  };
  // A dead route, not a lost peer: no node drops a silent connection
  // (CAF's connection timeout, 10 s by default) before the heal, so that
  // the cut-off agents stay with their coordinator -- unless the worker
  // nodes are to give it up soon (4 s).
  const std::vector<std::string> patient{"--connection-timeout-ms", "60000"};
  const std::vector<std::string> impatient{"--connection-timeout-ms", "4000"};
  for (const auto& n : all_three)
    s.start(n, false, patient);
  REQUIRE(logs(poll_until([&] { return s.spread_over(all_three); }, 20s)));
  install_writer_audit(c.url());
  tcp_proxy proxy{s.ports.at(cut)};
  auto via_proxy = coordinator_list_via(s, all_three, {{cut, proxy.port()}});
  // Two slots per coordinator on each.
  for (const auto* w : {"w1", "w2"})
    start_worker_at(s, w, via_proxy, "cpu=6",
                    mode == failed_over ? impatient : patient);
  auto joined = [&](const std::vector<std::string>& workers) {
    for (const auto& w : workers)
      for (const auto& n : all_three)
        if (c.log_count(n, "worker node joined node=" + w + "." + n + " ") == 0)
          return false;
    return true;
  };
  REQUIRE(logs(poll_until([&] { return joined({"w1", "w2"}); }, 30s)));
  auto before = leases_of(c.url());

  // Shorter jobs on the others; then four on the four slots the cut
  // coordinator has, long enough to outlive the cut's start (submitted
  // last: nothing else comes between their start and the cut).
  std::set<std::string> acked;
  std::vector<std::string> elsewhere;
  std::uniform_int_distribution<int> short_ms{300, 1500};
  for (const auto& n : others_than(cut))
    for (int i = 0; i < 4; ++i)
      elsewhere.push_back(s.submit(n, short_ms(rng)));
  acked.insert(elsewhere.begin(), elsewhere.end());
  std::vector<std::string> on_cut;
  std::uniform_int_distribution<int> long_ms{4500, 5500};
  for (int i = 0; i < 4; ++i)
    on_cut.push_back(s.submit(cut, long_ms(rng)));
  acked.insert(on_cut.begin(), on_cut.end());
  for (const auto& j : on_cut)
    REQUIRE(logs(c.wait_running(j, 30s)));

  proxy.cut();
  auto cut_at = std::chrono::steady_clock::now();
  // A worker node that reaches every coordinator directly, started after
  // the cut: the lapsed attempts can only run again there.
  start_worker_at(s, "w3", s.coordinator_list(all_three), "cpu=12", patient);
  REQUIRE(logs(poll_until(
      [&] {
        for (const auto& j : on_cut)
          if (c.events(j, started_kind) < 2)
            return false;
        return true;
      },
      30s)));
  std::cout << "share_fault_test worker-cut: all " << on_cut.size()
            << " cut-off attempts ran again " << since(cut_at).count()
            << " ms after the cut (attempt lease TTL 2000 ms)" << std::endl;
  for (const auto& j : on_cut) {
    INFO(j);
    CHECK(c.events(j, lease_expired_kind) == 1);
  }
  // The partitions did not move: PostgreSQL, not the workers, says who
  // owns them, and the cut coordinator still renews.
  CHECK(leases_of(c.url()) == before);
  if (mode != failed_over) {
    // Meanwhile the cut-off agents hear nothing from it.
    REQUIRE(logs(c.wait_log("w1", "a heartbeat went unanswered", 20s)));
    if (mode == reset)
      proxy.reset();
    proxy.heal();
    // Their late outcomes (or heartbeats) of the lapsed attempts meet the
    // fence and are recorded. After a reset, an agent whose reconnect found
    // the cut coordinator's port not accepting yet tries the next one on
    // its list: that coordinator refuses the late outcome too, but it does
    // not own the partition, so it cannot record the refusal (its write is
    // fenced: not_owner) and logs it instead (seen once in a local run).
    auto refused = [&](const std::string& j) {
      if (c.events(j, report_rejected_kind) > 0)
        return true;
      if (mode != reset)
        return false;
      for (const auto& o : others_than(cut))
        if (c.log_count(o, "could not record a refused report job=" + j
                               + " error=\"drover: not_owner")
            > 0)
          return true;
      return false;
    };
    CHECK(logs(poll_until(
        [&] {
          for (const auto& j : on_cut)
            if (!refused(j))
              return false;
          return true;
        },
        30s)));
  } else {
    // The cut-off agents give it up, try it again (through the cut: no
    // answer) and join another coordinator, which does not own the lapsed
    // attempts' partitions: it keeps their reports waiting for the
    // partition (which never comes) and then says they are another
    // coordinator's; the node offers them to its other coordinators, which
    // do not own them either, and stops them three heartbeats and a second
    // later (their jobs ran again on the other worker node meanwhile,
    // above).
    auto refused = [&] {
      int n = 0;
      for (const auto& o : others_than(cut))
        n += c.log_count(o, "a running attempt reported here is another "
                            "coordinator's");
      return n;
    };
    REQUIRE(logs(poll_until(
        [&] {
          return c.log_count("w1", "lost the coordinator") > 0
                 && c.log_count("w2", "lost the coordinator") > 0
                 && refused() >= static_cast<int>(on_cut.size());
        },
        60s)));
    proxy.heal();
    // Their first coordinator answers again: they go home.
    REQUIRE(logs(poll_until(
        [&] {
          for (const auto* w : {"w1", "w2"})
            if (c.log_count(w, "left the coordinator it had failed over to")
                == 0)
              return false;
          return true;
        },
        60s)));
  }
  // And they serve it again: with w3 gone, its new work can only run on
  // the agents behind the proxy.
  auto& w3 = *s.nodes["w3"];
  w3.signal(SIGTERM);
  REQUIRE(w3.wait_exit(30s));
  std::vector<std::string> after;
  for (int i = 0; i < 4; ++i)
    after.push_back(s.submit(cut, 50));
  acked.insert(after.begin(), after.end());
  c.check_all_done_once({acked.begin(), acked.end()}, 90s);
  // Where each attempt ran (its `started` event): the lapsed ones behind
  // the proxy first, then on w3; the new ones behind the proxy again.
  auto behind_proxy = [&](const std::string& worker) {
    auto node = node_of(worker);
    return node == "w1." + cut || node == "w2." + cut;
  };
  auto stored = load_all(c.url());
  for (const auto& j : on_cut) {
    auto ran = started_on(stored[j]);
    INFO(j << " ran on " << Catch::Detail::stringify(ran));
    REQUIRE(ran.size() == 2);
    CHECK(behind_proxy(ran[0]));
    CHECK(node_of(ran[1]) == "w3." + cut);
  }
  for (const auto& j : after) {
    auto ran = started_on(stored[j]);
    INFO(j << " ran on " << Catch::Detail::stringify(ran));
    REQUIRE(ran.size() == 1);
    CHECK(behind_proxy(ran[0]));
  }
  // The other coordinators' attempts never lapsed.
  for (const auto& j : elsewhere) {
    INFO(j);
    CHECK(c.events(j, lease_expired_kind) == 0);
  }
  audit_share_run(c.url(), acked, "worker-cut");
}

TEST_CASE("PostgreSQL stopped with -m immediate while the survivors take "
          "over a killed sharing coordinator and once it is back they hold "
          "all 64 partitions",
          "[pg][cluster][process][share][faults]") {
  auto seed = test_seed();
  std::mt19937_64 rng{seed};
  auto killed = all_three[rng() % 3];
  auto survivors = others_than(killed);
  bool at_once = rng() % 2 == 0;
  bool past_ttl = rng() % 2 == 0;
  std::cout << "share_fault_test pg-down: seed " << seed << ", " << killed
            << " killed, PostgreSQL stopped "
            << (at_once ? "at once" : "once a first partition of it is taken")
            << (past_ttl ? ", down past every lease" : ", down briefly")
            << std::endl;
  INFO("seed " << seed << " (DROVER_TEST_SEED replays it)");
  throwaway_cluster pg;
  cluster c;
  c.pg_url = pg.url();
  sharing s{c};
  auto logs = [&](bool ok) { return or_logs(ok, s, all_three); };
  s.start_three();
  install_writer_audit(pg.url());
  std::set<std::string> acked;
  auto by = submit_to_each(s, rng, 6, 300, 1500, acked);
  REQUIRE(logs(c.wait_running(by[killed][0], 20s)));
  auto before = leases_of(pg.url());
  std::map<std::string, int> took;
  for (const auto& n : survivors)
    took[n] = c.log_count(n, "took partitions");

  s.nodes[killed]->signal(SIGKILL);
  if (!at_once)
    REQUIRE(logs(poll_until(
        [&] {
          for (const auto& n : survivors)
            if (c.log_count(n, "took partitions") > took[n])
              return true;
          return false;
        },
        30s)));
  std::map<std::string, int> trouble;
  for (const auto& n : survivors)
    trouble[n] = c.log_count(n, "cannot renew the partition leases");
  pg.stop_immediately();
  // Both survivors notice the outage and stay up through it.
  REQUIRE(logs(poll_until(
      [&] {
        for (const auto& n : survivors)
          if (c.log_count(n, "cannot renew the partition leases") <= trouble[n])
            return false;
        return true;
      },
      20s)));
  for (const auto& n : survivors)
    CHECK_FALSE(s.nodes[n]->wait_exit(0ms));
  // While it is down, a submit is refused, not acknowledged
  // (RELIABILITY.md 11).
  {
    auto [rc, out]
        = droverctl({"submit", "sleep", "--port", s.admin[survivors[0]],
                     "--input", "{\"ms\":10}"});
    INFO(out);
    CHECK(rc != 0);
  }
  if (past_ttl)
    // The outage's length is the fault, not a wait for an event: two lease
    // TTLs, so that every lease and heartbeat has expired by PostgreSQL's
    // clock when it is back, and the survivors race to renew their own
    // leases and take what looks free.
    std::this_thread::sleep_for(2 * 2000ms);
  pg.start();
  auto back_at = std::chrono::steady_clock::now();
  INFO(pg.server_log());
  REQUIRE(logs(poll_until([&] { return s.spread_over(survivors); }, 60s)));
  std::cout << "share_fault_test pg-down: the survivors held all 64 "
               "partitions "
            << since(back_at).count() << " ms after PostgreSQL was back"
            << std::endl;
  check_moved(before, leases_of(pg.url()), killed);
  for (const auto& n : survivors)
    CHECK_FALSE(s.nodes[n]->wait_exit(0ms));
  for (int i = 0; i < 4; ++i)
    acked.insert(submit_keyed(
        s, survivors, "after-" + std::to_string(seed) + "-" + std::to_string(i),
        50));
  c.check_all_done_once({acked.begin(), acked.end()}, 120s);
  audit_share_run(pg.url(), acked, "pg-down");
}
