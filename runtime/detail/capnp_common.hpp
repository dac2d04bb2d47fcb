#pragma once

// What the Cap'n Proto codec's files (runtime/detail/capnp_*.cpp) share:
// text and data views of strings, enum conversion, validation errors, struct
// lists and the DROVER_TRY shorthand. Internal to those files.

#include "runtime/detail/capnp_model.hpp"
#include "runtime/errors.hpp"

#include <capnp/schema.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace drover::detail {

// -- primitive helpers --------------------------------------------------------

inline capnp::Text::Reader as_text(const std::string& x) {
  // std::string keeps a NUL after its last character, as Text requires.
  return {x.data(), x.size()};
}

inline capnp::Data::Reader as_data(const std::string& x) {
  return {reinterpret_cast<const kj::byte*>(x.data()), x.size()};
}

inline std::string to_std(capnp::Text::Reader x) {
  return {x.cStr(), x.size()};
}

inline std::string to_std(capnp::Data::Reader x) {
  return {reinterpret_cast<const char*>(x.begin()), x.size()};
}

inline caf::error invalid(const char* where, const std::string& what) {
  return make_error(errc::invalid_value, std::string{where} + ": " + what);
}

/// Writes `texts` into the list `init(n)` makes (nothing when empty).
template <class Init>
void write_texts(const std::vector<std::string>& texts, Init init) {
  if (texts.empty())
    return;
  auto list = init(static_cast<unsigned>(texts.size()));
  for (unsigned i = 0; i < texts.size(); ++i)
    list.set(i, as_text(texts[i]));
}

/// Reads an enum, rejecting values the schema does not list (a newer peer
/// may know more; this node can't act on them). The model enums mirror the
/// schema enums value for value (tests/runtime/codec_model_test.cpp checks).
template <class Model, class Wire>
caf::error read_enum(Wire in, Model& out, const char* where) {
  static_assert(std::is_enum<Wire>::value, "Wire must be an enum");
  auto value = static_cast<uint16_t>(in);
  if (value >= capnp::Schema::from<Wire>().getEnumerants().size())
    return invalid(where, "unknown enum value " + std::to_string(value));
  out = static_cast<Model>(value);
  return {};
}

template <class Wire, class Model>
Wire to_wire(Model x) {
  return static_cast<Wire>(static_cast<uint16_t>(x));
}

inline caf::error check_non_negative(int64_t x, const char* where) {
  if (x < 0)
    return invalid(where, std::to_string(x) + " is negative");
  return {};
}

/// Reads a struct list into `out`, element by element.
template <class Model, class WireList>
caf::error read_list(WireList in, std::vector<Model>& out, const char* where,
                     read_context& ctx) {
  if (auto err = ctx.charge(in.size(), where))
    return err;
  out.clear();
  out.reserve(in.size());
  for (auto item : in) {
    Model x;
    if (auto err = read(item, x, ctx))
      return err;
    out.push_back(std::move(x));
  }
  return {};
}

template <class Model, class WireListBuilder>
void write_list(WireListBuilder out, const std::vector<Model>& xs) {
  for (unsigned i = 0; i < xs.size(); ++i)
    write(out[i], xs[i]);
}

} // namespace drover::detail

// Shorthand for the error-propagation idiom used by every read function.
#define DROVER_TRY(expr)                                                       \
  do {                                                                         \
    if (auto drover_try_err = (expr))                                          \
      return drover_try_err;                                                   \
  } while (false)
