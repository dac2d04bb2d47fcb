#pragma once

// Helpers of the codec tests (tests/runtime/codec_*_test.cpp): round trips
// through bytes and JSON, the errc of an error, forged messages and the
// seed of randomised tests.

#include "runtime/codec.hpp"
#include "runtime/errors.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>
#include <vector>

namespace drover::testing::codec_checks {

/// The errc of `err`, or errc::none when it isn't a Drover error.
inline errc code_of(const caf::error& err) {
  if (err.category() != errc_category)
    return errc::none;
  return static_cast<errc>(err.code());
}

template <class T>
void check_round_trip(const T& x) {
  auto bytes = to_bytes(x);
  CHECK(bytes.size() % 8 == 0);
  auto from_b = from_bytes<T>(bytes);
  REQUIRE(from_b);
  CHECK(*from_b == x);
  auto json = to_json(x);
  INFO("JSON: " << json);
  auto from_j = from_json<T>(json);
  if (!from_j)
    FAIL(describe(from_j.error()));
  CHECK(*from_j == x);
  // Encoding is deterministic: the decoded value encodes identically.
  CHECK(to_bytes(*from_j) == bytes);
}

template <class T>
void check_round_trip_non_default(const T& x) {
  REQUIRE(x != T{});
  check_round_trip(x);
  check_round_trip(T{});
}

inline std::vector<char> forge(capnp::MessageBuilder& message) {
  auto words = capnp::messageToFlatArray(message);
  auto chars = words.asChars();
  return {chars.begin(), chars.end()};
}

/// Seed for randomised tests: $DROVER_TEST_SEED if set, else random. Always
/// printed so a failure can be replayed.
inline uint64_t test_seed() {
  uint64_t seed;
  // Tests run one at a time; nothing modifies the environment meanwhile.
  // NOLINTNEXTLINE(concurrency-mt-unsafe)
  const char* env = std::getenv("DROVER_TEST_SEED");
  if (env != nullptr)
    seed = std::strtoull(env, nullptr, 10);
  else
    seed = std::random_device{}();
  std::cout << "codec_test seed: " << seed
            << " (replay with DROVER_TEST_SEED=" << seed << ")\n";
  return seed;
}

} // namespace drover::testing::codec_checks
