#pragma once

// The JSON inputs of the built-in job types `exec` and `sleep`: what
// runtime/builtin_input.cpp parses for runtime/builtin_handlers.cpp (the
// handlers and their submit-time checks). Internal to those two files.

#include "runtime/exec_policy.hpp"

#include <cstdint>
#include <string>
#include <string_view>

namespace drover::detail {

/// User-supplied text for an error message: valid UTF-8, control
/// characters replaced, shortened, in single quotes.
std::string quote_for_message(std::string_view str);

/// exec: `input` as a request; returns "" or the reason it isn't one
/// (whether the node allows it is exec_check's decision).
std::string parse_exec_input(const std::string& input, exec_request& spec);

struct sleep_request {
  int64_t ms = 0;
  int64_t steps = 1;
  int64_t tokens = 0;
};

/// sleep: `input` as a request; returns "" or the reason it isn't one.
std::string parse_sleep_input(const std::string& input, sleep_request& req);

} // namespace drover::detail
