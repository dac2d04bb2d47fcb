#pragma once

// How flow control prints a number in its messages and views (six
// significant digits). Internal to runtime/flow_control*.cpp.

#include <cstdio>
#include <string>

namespace drover::flow_detail {

inline std::string format_number(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", x);
  return buf;
}

} // namespace drover::flow_detail
