// The books of routing by resources (runtime/resources.hpp): parsing
// hostile text, a job's pool needs, and what fits a node now and ever.

#include "runtime/resources.hpp"

#include "runtime/model.hpp"

#include <catch2/catch.hpp>

using namespace drover;

namespace {

resource_amounts amounts(const std::string& text) {
  auto a = parse_amounts(text, "test", errc::invalid_request);
  REQUIRE(a);
  return *a;
}

std::string refusal(const std::string& text) {
  auto a = parse_amounts(text, "resources", errc::invalid_request);
  REQUIRE_FALSE(a);
  return describe(a.error());
}

} // namespace

TEST_CASE("resource amounts: text form, sorted, hostile text refused",
          "[resources]") {
  CHECK(amounts("").empty());
  CHECK(to_text(amounts("scratch_gb=5,memory_gb=64"))
        == "memory_gb=64,scratch_gb=5");
  CHECK(refusal("memory_gb").find("expected name=amount") != std::string::npos);
  CHECK(refusal("m=1,").find("expected name=amount") != std::string::npos);
  CHECK(refusal("m=1,,n=2").find("expected name=amount") != std::string::npos);
  CHECK(refusal("m=-1").find("within [1, 1000000]") != std::string::npos);
  CHECK(refusal("m=99999999999").find("within [1, 1000000]")
        != std::string::npos);
  CHECK(refusal("=1").find("resource names") != std::string::npos);
  CHECK(refusal(std::string(65, 'a') + "=1").find("resource names")
        != std::string::npos);
  CHECK(refusal("m\x01=1").find("resource names") != std::string::npos);
  CHECK(refusal("m=1,m=2").find("'m' is named twice") != std::string::npos);
  std::string many;
  for (int i = 0; i < 17; ++i)
    many += (i ? "," : "") + std::string{"p"} + std::to_string(i) + "=1";
  CHECK(refusal(many).find("at most 16") != std::string::npos);
  CHECK(refusal(std::string(5000, 'x')).find("too long") != std::string::npos);
  // A client's list keeps its order: the first is the slot class.
  auto ordered = parse_requests("gpu=1,memory_gb=16");
  REQUIRE(ordered);
  REQUIRE(ordered->size() == 2);
  CHECK((*ordered)[0].name == "gpu");
  CHECK((*ordered)[1].amount == 16);
}

TEST_CASE("a job's pool needs are its resources after the slot class",
          "[resources]") {
  auto needs = pool_needs({{"gpu", 1}, {"scratch_gb", 5}, {"memory_gb", 16}});
  REQUIRE(needs);
  CHECK(to_text(*needs) == "memory_gb=16,scratch_gb=5");
  CHECK(pool_needs({{"cpu", 1}})->empty());
  CHECK_FALSE(pool_needs({{"cpu", 1}, {"cpu", 1}}));
  CHECK_FALSE(pool_needs({{"cpu", 1}, {"m", 0}}));
}

TEST_CASE("the ledger: fits now, fits ever, what is short, and release",
          "[resources]") {
  resource_ledger books;
  books.declare("a", amounts("memory_gb=8"));
  books.declare("b", amounts("memory_gb=64,gpu_mem=16"));
  auto small = books.shape_of(amounts("memory_gb=4"));
  auto big = books.shape_of(amounts("memory_gb=32,gpu_mem=8"));
  CHECK(books.shape_of({}) == nullptr);
  CHECK(books.shape_of(amounts("memory_gb=4")) == small); // shared
  CHECK(books.fits_now("a", nullptr));
  CHECK(books.fits_now("a", small));
  CHECK_FALSE(books.fits_ever("a", big));
  CHECK(books.never_reason("a", big) == "gpu_mem=8 (it has 0)");
  CHECK(books.never_reason("nowhere", small) == "memory_gb=4 (it has 0)");
  books.acquire("a", small);
  books.acquire("a", small);
  CHECK_FALSE(books.fits_now("a", small));
  CHECK(books.fits_ever("a", small));
  CHECK(books.short_of("a", small) == std::vector<std::string>{"memory_gb"});
  CHECK(books.to_json()
        == R"({"a":{"memory_gb":{"total":8,"used":8}},)"
           R"("b":{"gpu_mem":{"total":16,"used":0},)"
           R"("memory_gb":{"total":64,"used":0}}})");
  books.release("a", small);
  CHECK(books.fits_now("a", small));
  // A node that declares less keeps what its attempts hold.
  books.declare("a", amounts("memory_gb=2"));
  CHECK_FALSE(books.fits_now("a", small));
  books.release("a", small);
  books.release("a", small); // more than held: never below zero
  CHECK_FALSE(books.fits_now("a", small));
  CHECK(books.fits_now("b", big));
}

TEST_CASE("the ledger forgets shapes no entry holds", "[resources]") {
  resource_ledger books;
  auto kept = books.shape_of(amounts("m=1"));
  for (int i = 2; i < 5000; ++i)
    books.shape_of(amounts("m=" + std::to_string(i))); // dropped at once
  // The live one is still the one handed out.
  CHECK(books.shape_of(amounts("m=1")) == kept);
}

TEST_CASE("the ledger admits at most max_live_shapes distinct needs",
          "[resources]") {
  resource_ledger books;
  std::vector<shape_ref> held;
  for (size_t i = 1; i <= max_live_shapes; ++i)
    held.push_back(books.shape_of(amounts("m=" + std::to_string(i))));
  CHECK(books.admits({}));
  CHECK(books.admits(amounts("m=1"))); // held already
  CHECK_FALSE(books.admits(amounts("m=5000")));
  held.pop_back(); // one fewer held: room for another
  CHECK(books.admits(amounts("m=5000")));
}
