#pragma once

// How much slower than a Release build the code under test runs: the
// factor scripts/test sets in DROVER_TEST_TIME_SCALE for sanitizer builds
// (ASan about 3x, TSan about 5x; 1 otherwise). Tests stretch what depends
// on the speed of the code by it -- their deadlines (poll_until,
// process::wait_for_line) and the durations of the jobs whose overlap a
// test relies on -- and nothing else: what a test asserts about the
// system's own timers (a lease TTL) is compared against the stretched
// slack, never a stretched TTL.

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace drover::testing {

/// DROVER_TEST_TIME_SCALE, an integer from 1 to 20 (1 when unset). A bad
/// value stops the tests at once rather than silently running unscaled.
inline int time_scale() {
  static const int scale = [] {
    const char* text = std::getenv("DROVER_TEST_TIME_SCALE");
    if (text == nullptr || *text == '\0')
      return 1;
    char* end = nullptr;
    long value = std::strtol(text, &end, 10);
    if (*end != '\0' || value < 1 || value > 20)
      throw std::invalid_argument{
          "DROVER_TEST_TIME_SCALE must be an integer from 1 to 20, not '"
          + std::string{text} + "'"};
    return static_cast<int>(value);
  }();
  return scale;
}

/// `d` stretched by time_scale().
template <class Rep, class Period>
std::chrono::duration<Rep, Period>
scaled(std::chrono::duration<Rep, Period> d) {
  return d * time_scale();
}

} // namespace drover::testing
