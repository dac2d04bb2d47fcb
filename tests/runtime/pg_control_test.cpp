// The control log of rate limiters and circuit breakers (runtime/
// pg_control.cpp) against a real PostgreSQL: what a coordinator sharing the
// partitions follows (control_followed: run-time settings and breaker
// openings after a sequence, six columns a row, a page at a time), the
// last states read back at start (control_last: four columns a row) and
// the log's last sequence.

#include "support/pg_batches.hpp"
#include "support/test_db.hpp"

#include "runtime/errors.hpp"
#include "runtime/pg.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace drover;
using drover::testing::must;
using drover::testing::must_ok;
using drover::testing::run;
using drover::testing::test_db;

TEST_CASE("control log: a follow read answers the settings and breaker "
          "openings after a sequence in pages of six columns a row, and the "
          "last states read back at start have four",
          "[pg][flow]") {
  test_db db;
  auto s = db.session();
  CHECK(must(s.control_sequence()) == 0);
  CHECK(must(s.control_followed(0)).empty());
  struct entry {
    const char* kind;
    const char* key;
    const char* state;
    const char* detail;
  };
  std::vector<entry> entries{
      {"rate_limit", "mail", "configured", "rate=7,burst=3"},
      {"breaker", "mail", "open", "2 failure(s) in a row"},
      {"breaker", "mail", "half_open", ""},
      {"breaker", "mail", "closed", "a probe succeeded"},
      {"rate_limit", "mail", "limited", "parked"},
      {"breaker", "sms", "configured", "failures=4,cooldown=10"},
      {"breaker", "sms", "open", "smtp_down"},
  };
  int64_t at = 1796451428350;
  for (const auto& e : entries)
    must_ok(s.append_control(at++, e.kind, e.key, e.state, e.detail));
  CHECK(must(s.control_sequence()) == 7);

  auto all = must(s.control_followed(0));
  REQUIRE(all.size() == 4 * 6);
  CHECK(std::vector<std::string>(all.begin(), all.begin() + 6)
        == std::vector<std::string>{"1", "rate_limit", "mail", "configured",
                                    "1796451428350", "rate=7,burst=3"});
  CHECK(std::vector<std::string>(all.begin() + 6, all.begin() + 12)
        == std::vector<std::string>{"2", "breaker", "mail", "open",
                                    "1796451428351", "2 failure(s) in a row"});
  CHECK(all[12] == "6");
  CHECK(all[15] == "configured");
  CHECK(all[18] == "7");
  CHECK(all[21] == "open");
  // After a sequence; a page of at most `limit` rows, in sequence order.
  auto later = must(s.control_followed(2));
  REQUIRE(later.size() == 2 * 6);
  CHECK(later[0] == "6");
  auto page = must(s.control_followed(0, 3));
  REQUIRE(page.size() == 3 * 6);
  CHECK(page[12] == "6");
  CHECK(must(s.control_followed(7)).empty());
  CHECK(is(s.control_followed(0, 0).error(), errc::invalid_request));
  CHECK(is(s.control_followed(0, 10001).error(), errc::invalid_request));

  // Every key's last setting over the whole log, one per key, sextuples.
  must_ok(s.append_control(at++, "rate_limit", "mail", "configured",
                           "rate=9,burst=3"));
  auto settings = must(s.control_settings());
  REQUIRE(settings.size() == 2 * 6);
  CHECK(std::vector<std::string>(settings.begin(), settings.begin() + 6)
        == std::vector<std::string>{"6", "breaker", "sms", "configured",
                                    "1796451428355", "failures=4,cooldown=10"});
  CHECK(settings[6] == "8");
  CHECK(settings[8] == "mail");
  CHECK(settings[11] == "rate=9,burst=3");

  // Read back at start: the last state of each key and, apart, its last
  // setting, four columns a row.
  auto breakers = must(s.control_last("breaker"));
  REQUIRE(breakers.size() == 3 * 4);
  CHECK(std::vector<std::string>(breakers.begin(), breakers.begin() + 4)
        == std::vector<std::string>{"mail", "closed", "1796451428353",
                                    "a probe succeeded"});

  // A time PostgreSQL cannot turn into ms (written by hand: the log is
  // append-only) reads as 0 (an opening long over), not as a read that
  // fails at every poll.
  auto admin = db.connect();
  run(admin, "INSERT INTO drover.control_log (at, kind, key, state, detail, "
             "partition, epoch, owner_node) VALUES ('infinity', 'breaker', "
             "'fax', 'open', 'by hand', 0, 0, '')");
  auto inf = must(s.control_followed(8));
  REQUIRE(inf.size() == 6);
  CHECK(inf[2] == "fax");
  CHECK(inf[4] == "0");
  // So does the read of the last states at start: one such row failed it
  // every time, and no coordinator could start.
  auto last = must(s.control_last("breaker"));
  REQUIRE(last.size() == 4 * 4);
  CHECK(last[0] == "fax");
  CHECK(last[2] == "0");
}
