// The worker node's handover board (actors/handover_board.hpp): an
// attempt one agent lends is offered by the others, claimed once, and
// withdrawn or finished only by its lender.

#include "actors/handover_board.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <string>

using namespace drover;

namespace {

lender_actor spawn_lender(caf::actor_system& sys) {
  return sys.spawn([]() -> lender_actor::behavior_type {
    return {[](lent_atom, std::string&, uint32_t, attempt_owner_actor&,
               worker_home_actor&) {}};
  });
}

handover_board::entry entry_of(const std::string& job, uint32_t attempt,
                               lender_actor lender) {
  handover_board::entry e;
  e.job_id = job;
  e.attempt = attempt;
  e.resource_class = "cpu";
  e.rate_key = "mail";
  e.lender = std::move(lender);
  return e;
}

/// `entry_of`, posted by an agent going home (a move).
handover_board::entry move_of(const std::string& job, uint32_t attempt,
                              lender_actor lender) {
  auto e = entry_of(job, attempt, std::move(lender));
  e.move = true;
  return e;
}

/// Three agents of one node and their board.
struct agents {
  caf::actor_system_config cfg;
  caf::actor_system sys{cfg};
  std::array<lender_actor, 3> lenders{spawn_lender(sys), spawn_lender(sys),
                                      spawn_lender(sys)};
  handover_board board;
};

} // namespace

TEST_CASE("a lent attempt is offered by the other agents and claimed once",
          "[handover]") {
  agents f;
  auto& [a, b, c] = f.lenders;
  auto& board = f.board;
  CHECK(board.posts() == 0);
  board.post(entry_of("job-1", 3, a));
  CHECK(board.size() == 1);
  CHECK(board.posts() == 1); // what tells an away agent to look home
  // The lender does not offer its own attempt; the others do.
  CHECK(board.offers(a.address(), {}).empty());
  auto offered = board.offers(b.address(), {});
  REQUIRE(offered.size() == 1);
  CHECK(offered[0].job_id == "job-1");
  CHECK(offered[0].attempt == 3);
  CHECK(offered[0].resource_class == "cpu");
  // Neither the lender nor another attempt number claims it.
  CHECK(!board.claim("job-1", 3, a.address(), {}));
  CHECK(!board.claim("job-1", 2, b.address(), {}));
  auto claimed = board.claim("job-1", 3, b.address(), {});
  REQUIRE(claimed);
  CHECK(claimed->lender == a);
  CHECK(claimed->rate_key == "mail");
  CHECK(!claimed->done);
  // Once claimed: no second claim, no offer, and the lender can neither
  // withdraw it nor leave its outcome there.
  CHECK(!board.claim("job-1", 3, c.address(), {}));
  CHECK(board.offers(c.address(), {}).empty());
  CHECK(!board.withdraw("job-1", 3, a.address()));
  CHECK(!board.finish("job-1", 3, a.address(), completion{}));
  CHECK(board.size() == 0);
}

TEST_CASE("only its lender withdraws a lent attempt or leaves its outcome",
          "[handover]") {
  agents f;
  auto& [a, b, c] = f.lenders;
  auto& board = f.board;
  board.post(entry_of("job-1", 1, a));
  // Posted again by the agent that claimed it (its coordinator handed the
  // partition on): the first lender's deadline must not take it.
  REQUIRE(board.claim("job-1", 1, b.address(), {}));
  board.post(entry_of("job-1", 1, b));
  CHECK(!board.withdraw("job-1", 1, a.address()));
  completion done;
  done.job_id = "job-1";
  done.attempt = 1;
  done.result = "{\"ok\":true}";
  CHECK(!board.finish("job-1", 1, a.address(), done));
  CHECK(board.finish("job-1", 1, b.address(), done));
  // The outcome goes with the entry to whoever claims it.
  auto claimed = board.claim("job-1", 1, a.address(), {});
  REQUIRE(claimed);
  REQUIRE(claimed->done);
  CHECK(claimed->done->result == "{\"ok\":true}");
  CHECK(!claimed->worker);
  // Withdrawn by its lender: gone.
  board.post(entry_of("job-2", 4, a));
  CHECK(board.withdraw("job-2", 4, a.address()));
  CHECK(!board.claim("job-2", 4, b.address(), {}));
  CHECK(board.size() == 0);
}

TEST_CASE("an agent offers and takes back its own attempt only from another "
          "coordinator than the one it lent it from",
          "[handover]") {
  agents f;
  auto& [a, b, c] = f.lenders;
  auto& board = f.board;
  // a lent it while joined through link 1 (here b's address stands for
  // it), and later joined another coordinator through link 2 (c's).
  auto link1 = b.address();
  auto link2 = c.address();
  auto e = entry_of("job-1", 2, a);
  e.link = link1;
  board.post(std::move(e));
  CHECK(board.offers(a.address(), link1).empty());
  CHECK(!board.claim("job-1", 2, a.address(), link1));
  CHECK(board.offers(a.address(), {}).empty()); // not joined anywhere
  auto offered = board.offers(a.address(), link2);
  REQUIRE(offered.size() == 1);
  CHECK(offered[0].job_id == "job-1");
  auto taken = board.claim("job-1", 2, a.address(), link2);
  REQUIRE(taken);
  CHECK(taken->lender == a);
  CHECK(board.size() == 0);
  // A withdrawn entry comes back whole: a move's outcome is not lost.
  board.post(move_of("job-2", 1, a));
  completion done;
  done.job_id = "job-2";
  done.attempt = 1;
  done.result = "{}";
  REQUIRE(board.finish("job-2", 1, a.address(), done));
  auto back = board.withdraw("job-2", 1, a.address());
  REQUIRE(back);
  CHECK(back->move);
  REQUIRE(back->done);
  CHECK(back->done->result == "{}");
}

TEST_CASE("a move its lender took back is offered no more but still claimed "
          "by the agent whose coordinator moved it",
          "[handover]") {
  agents f;
  auto& [a, b, c] = f.lenders;
  auto& board = f.board;
  board.post(move_of("job-1", 1, a));
  CHECK(board.offers(b.address(), {}).size() == 1);
  CHECK(!board.stop_offering("job-1", 1, b.address())); // not b's
  CHECK(board.stop_offering("job-1", 1, a.address()));
  CHECK(board.offers(b.address(), {}).empty());
  CHECK(board.offers(c.address(), {}).empty());
  auto late = board.claim("job-1", 1, b.address(), {});
  REQUIRE(late);
  CHECK(late->move);
  CHECK(!board.stop_offering("job-1", 1, a.address())); // claimed
  // Made a hand-over (its coordinator handed the partition on): offered
  // again.
  board.post(move_of("job-2", 1, a));
  REQUIRE(board.stop_offering("job-2", 1, a.address()));
  REQUIRE(board.as_hand_over("job-2", 1, a.address()));
  CHECK(board.offers(b.address(), {}).size() == 1);
}
