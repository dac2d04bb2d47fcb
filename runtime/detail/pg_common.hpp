#pragma once

// What runtime/pg.cpp and runtime/pg_read.cpp share: how a decoder's error
// reads, and strict number parsing of PostgreSQL's text. Internal.

#include "runtime/errors.hpp"

#include <caf/error.hpp>

#include <charconv>
#include <string>
#include <string_view>

namespace drover::pg::detail {

/// The context string of a Drover error (empty for others).
inline std::string context_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return caf::to_string(err);
}

/// The Drover code of `err`; decoders only return Drover errors, anything
/// else counts as malformed.
inline errc code_of(const caf::error& err) {
  if (err.category() == errc_category)
    return static_cast<errc>(err.code());
  return errc::malformed;
}

/// The whole of `str` as a number, or false.
template <class T>
bool parse_number(std::string_view str, T& out) {
  auto [end, ec] = std::from_chars(str.data(), str.data() + str.size(), out);
  return ec == std::errc{} && end == str.data() + str.size();
}

} // namespace drover::pg::detail
