// session::write_isolated against a real PostgreSQL: a batch holding
// operations whose data PostgreSQL refuses commits everything else, refuses
// only them, within the promised number of transactions, on the same
// connection. And the SQLSTATE classes the store decides by.

#include "runtime/pg.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/job_state.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <set>
#include <string>

using namespace drover;
using drover::testing::must;
using drover::testing::run;
using drover::testing::test_db;

namespace {

/// A new job's submit record and event, as the store writes them.
void add_submit(pg::write_batch& batch, const std::string& id,
                const std::string& tenant, const std::string& key) {
  job_event ev;
  ev.job_id = id;
  ev.kind = event_kind::submitted;
  ev.sequence = 1;
  ev.at_ms = 1000;
  ev.spec.tenant = tenant;
  ev.spec.type = "sleep";
  ev.spec.idempotency_key = key;
  ev.spec.input = R"({"ms":0})";
  job_record rec;
  if (auto err = apply(rec, ev))
    FAIL(describe(err));
  batch.submits.push_back(rec);
  batch.events.push_back(ev);
}

std::string id_of(size_t i, const std::string& round = "r") {
  return round + "-job-" + std::to_string(1000 + i);
}

/// n submits; those at `poison` carry an idempotency key that is not UTF-8.
pg::write_batch batch_with_poison(size_t n, const std::set<size_t>& poison,
                                  const std::string& round = "r") {
  pg::write_batch batch;
  for (size_t i = 0; i < n; ++i)
    add_submit(batch, id_of(i, round), "t",
               poison.count(i) > 0 ? std::string{"\xc0\xaf"}
                                   : round + "-key-" + std::to_string(i));
  return batch;
}

std::set<std::string> stored_ids(pg::connection& conn,
                                 const std::string& round = "r") {
  auto res = run(conn, "SELECT job_id FROM drover.jobs WHERE job_id LIKE $1",
                 pg::params{}.text(round + "-%"));
  std::set<std::string> out;
  for (int row = 0; row < res.rows(); ++row)
    out.emplace(res.value(row, 0));
  return out;
}

uint32_t ceil_log2(size_t n) {
  uint32_t k = 0;
  while ((size_t{1} << k) < n)
    ++k;
  return k;
}

} // namespace

TEST_CASE("SQLSTATE classes: connection, data, other", "[pg][isolate]") {
  using pg::failure_class;
  for (auto s : {"08000", "08006", "08P01", "57P01", "57P02", "57P03"})
    CHECK(pg::classify_sqlstate(s) == failure_class::connection);
  for (auto s : {"22021", "22001", "22P02", "23505", "23502", "23514", "54000"})
    CHECK(pg::classify_sqlstate(s) == failure_class::data);
  for (auto s : {"40001", "40P01", "53100", "55P03", "57014", "42P01", "XX000",
                 "", "2200"})
    CHECK(pg::classify_sqlstate(s) == failure_class::other);
  // Errors of the layer: the trailing SQLSTATE decides, and only a trailing
  // one (a value quoted earlier in the text cannot pass for one).
  auto err = make_error(errc::invalid_value,
                        "job 'x [SQLSTATE 08006]' exists [SQLSTATE 22021]");
  CHECK(pg::failure_class_of(err) == failure_class::data);
  CHECK(pg::sqlstate_of(err) == "22021");
  CHECK(pg::failure_class_of(
            make_error(errc::conflict, "job 'x [SQLSTATE 08006]' exists"))
        == failure_class::data);
  CHECK(pg::failure_class_of(make_error(errc::unavailable, "lost"))
        == failure_class::connection);
  CHECK(pg::failure_class_of(make_error(errc::not_owner, "taken"))
        == failure_class::other);
}

TEST_CASE("one refused operation in a batch fails alone, the rest commit",
          "[pg][isolate]") {
  test_db db;
  auto s = db.session();
  auto pid = s.conn().backend_pid();
  auto admin = db.connect();
  for (size_t n : {size_t{2}, size_t{7}, size_t{100}, size_t{1000}}) {
    for (size_t at : std::set<size_t>{0, n / 2, n - 1}) {
      // Fresh ids and keys per round.
      auto round = "n" + std::to_string(n) + "at" + std::to_string(at);
      INFO("n = " << n << ", poison at " << at);
      auto r = must(s.write_isolated(batch_with_poison(n, {at}, round)));
      REQUIRE(r.failed.size() == 1);
      CHECK(r.failed[0].first == id_of(at, round));
      CHECK(is(r.failed[0].second, errc::invalid_value));
      CHECK(pg::sqlstate_of(r.failed[0].second) == "22021");
      auto ids = stored_ids(admin, round);
      CHECK(ids.size() == n - 1);
      CHECK(ids.count(id_of(at, round)) == 0);
      // The bound: the batch, one try per halving, one write of the
      // halves not known to hold the offender.
      INFO("transactions: " << r.transactions);
      CHECK(r.transactions >= 2);
      CHECK(r.transactions <= 2 + ceil_log2(n));
      CHECK(s.ok());
      CHECK(s.conn().backend_pid() == pid); // no reconnect
      CHECK_FALSE(s.conn().in_transaction());
    }
  }
}

TEST_CASE("several refused operations: each fails alone, cost per offender",
          "[pg][isolate]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  constexpr size_t n = 200;
  std::set<size_t> poison{3, 4, 77, 199};
  auto batch = batch_with_poison(n, poison);
  // A NUL byte (refused by the session before PostgreSQL sees it) counts
  // as refused data too.
  batch.submits[150].spec.tenant = std::string{"te\0nant", 7};
  poison.insert(150);
  auto r = must(s.write_isolated(batch));
  std::set<std::string> failed;
  for (const auto& [id, err] : r.failed) {
    failed.insert(id);
    CHECK(pg::failure_class_of(err) == pg::failure_class::data);
  }
  std::set<std::string> expected;
  for (auto i : poison)
    expected.insert(id_of(i));
  CHECK(failed == expected);
  CHECK(stored_ids(admin).size() == n - poison.size());
  INFO("transactions: " << r.transactions);
  CHECK(r.transactions <= 1 + poison.size() * (1 + ceil_log2(n)));
}

TEST_CASE("jobs linked by one operation are refused together",
          "[pg][isolate]") {
  test_db db;
  auto s = db.session();
  auto admin = db.connect();
  auto batch = batch_with_poison(10, {4});
  batch.linked.push_back({id_of(4), id_of(8)});
  auto r = must(s.write_isolated(batch));
  std::set<std::string> failed;
  for (const auto& kv : r.failed)
    failed.insert(kv.first);
  CHECK(failed == std::set<std::string>{id_of(4), id_of(8)});
  CHECK(stored_ids(admin).size() == 8);
}

TEST_CASE("a batch without refused data is one transaction, a lost "
          "connection is not isolated",
          "[pg][isolate]") {
  test_db db;
  auto s = db.session();
  auto r = must(s.write_isolated(batch_with_poison(50, {})));
  CHECK(r.transactions == 1);
  CHECK(r.failed.empty());
  auto admin = db.connect();
  run(admin, "SELECT pg_terminate_backend($1, 5000)",
      pg::params{}.int32(s.conn().backend_pid()));
  pg::write_batch more;
  add_submit(more, "job-after", "t", "");
  auto err = s.write_isolated(more);
  REQUIRE_FALSE(err);
  CHECK(is(err.error(), errc::unavailable));
  CHECK(pg::failure_class_of(err.error()) == pg::failure_class::connection);
  CHECK_FALSE(s.ok());
}
