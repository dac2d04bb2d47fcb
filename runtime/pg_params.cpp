// The parameters of a statement (text, integers, booleans, bytes and
// arrays in PostgreSQL's binary format) and binary integers from results;
// the connection and session are in pg.cpp.

#include "runtime/pg.hpp"

#include <libpq-fe.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

namespace drover::pg {

namespace {

// Type OIDs of the built-in types we send (fixed in pg_type.dat).
constexpr uint32_t bool_oid = 16;
constexpr uint32_t bytea_oid = 17;
constexpr uint32_t int8_oid = 20;
constexpr uint32_t int2_oid = 21;
constexpr uint32_t int4_oid = 23;
constexpr uint32_t text_oid = 25;

constexpr auto int32_max
    = static_cast<uint32_t>(std::numeric_limits<int32_t>::max());

} // namespace

int64_t binary_int(std::string_view wire) {
  uint64_t x = 0;
  for (unsigned char c : wire)
    x = (x << 8) | c;
  switch (wire.size()) {
    case 2:
      return static_cast<int16_t>(x);
    case 4:
      return static_cast<int32_t>(x);
    default:
      return static_cast<int64_t>(x);
  }
}

// -- params -------------------------------------------------------------------

void params::reserve(size_t n) {
  values_.reserve(n);
  types_.reserve(n);
  formats_.reserve(n);
  nulls_.reserve(n);
}

void params::add(std::string value, uint32_t type, int format, bool null) {
  values_.push_back(std::move(value));
  types_.push_back(type);
  formats_.push_back(format);
  nulls_.push_back(null ? 1 : 0);
}

params& params::text(std::string_view x) {
  if (invalid_.empty() && x.find('\0') != std::string_view::npos)
    invalid_ = "text parameter $" + std::to_string(values_.size() + 1)
               + " holds a NUL byte";
  add(std::string{x}, text_oid, 0, false);
  return *this;
}

params& params::text_or_null(std::string_view x) {
  if (x.empty()) {
    add({}, text_oid, 0, true);
    return *this;
  }
  return text(x);
}

params& params::int16(int16_t x) {
  add(std::to_string(x), int2_oid, 0, false);
  return *this;
}

params& params::int32(int32_t x) {
  add(std::to_string(x), int4_oid, 0, false);
  return *this;
}

params& params::int64(int64_t x) {
  add(std::to_string(x), int8_oid, 0, false);
  return *this;
}

params& params::null_int64() {
  add({}, int8_oid, 0, true);
  return *this;
}

params& params::boolean(bool x) {
  add(x ? "t" : "f", bool_oid, 0, false);
  return *this;
}

params& params::bytes(const char* data, size_t size) {
  add(std::string{data, size}, bytea_oid, 1, false);
  return *this;
}

params::wire_form params::wire() const {
  wire_form w;
  w.values.resize(values_.size());
  w.lengths.resize(values_.size());
  for (size_t i = 0; i < values_.size(); ++i) {
    w.values[i] = nulls_[i] != 0 ? nullptr : values_[i].data();
    w.lengths[i] = static_cast<int>(values_[i].size());
  }
  return w;
}

params& params::array(const array_param& x) {
  static constexpr uint32_t array_oids[] = {
      1005, // int2[]
      1007, // int4[]
      1016, // int8[]
      1000, // bool[]
      1009, // text[]
      1001, // bytea[]
  };
  if (invalid_.empty() && !x.invalid_.empty())
    invalid_ = "array parameter $" + std::to_string(values_.size() + 1) + ": "
               + x.invalid_;
  add(x.encode(), array_oids[static_cast<int>(x.type_)], 1, false);
  return *this;
}

// -- array_param --------------------------------------------------------------

namespace {

void put_be32(std::string& out, uint32_t x) {
  char b[4] = {static_cast<char>(x >> 24), static_cast<char>(x >> 16),
               static_cast<char>(x >> 8), static_cast<char>(x)};
  out.append(b, 4);
}

template <class T>
std::array<char, sizeof(T)> big_endian(T x) {
  using U = std::make_unsigned_t<T>;
  auto u = static_cast<U>(x);
  std::array<char, sizeof(T)> b{};
  for (size_t i = 0; i < sizeof(T); ++i)
    b[i] = static_cast<char>(u >> (8 * (sizeof(T) - 1 - i)));
  return b;
}

} // namespace

array_param::array_param(element type, size_t expected_items) : type_(type) {
  items_.reserve(expected_items * 12);
}

void array_param::item(const char* data, int32_t size) {
  put_be32(items_, static_cast<uint32_t>(size));
  if (size > 0)
    items_.append(data, static_cast<size_t>(size));
  ++count_;
}

array_param& array_param::int16(int16_t x) {
  auto b = big_endian(x);
  item(b.data(), b.size());
  return *this;
}

array_param& array_param::int32(int32_t x) {
  auto b = big_endian(x);
  item(b.data(), b.size());
  return *this;
}

array_param& array_param::int64(int64_t x) {
  auto b = big_endian(x);
  item(b.data(), b.size());
  return *this;
}

array_param& array_param::boolean(bool x) {
  char b = x ? 1 : 0;
  item(&b, 1);
  return *this;
}

array_param& array_param::text(std::string_view x) {
  if (invalid_.empty() && x.find('\0') != std::string_view::npos)
    invalid_ = "text item " + std::to_string(count_ + 1) + " holds a NUL byte";
  return bytes(x.data(), x.size());
}

array_param& array_param::text_or_null(std::string_view x) {
  return x.empty() ? null() : text(x);
}

array_param& array_param::bytes(const char* data, size_t size) {
  if (size > static_cast<size_t>(int32_max)) {
    if (invalid_.empty())
      invalid_ = "item " + std::to_string(count_ + 1) + " is too long";
    return null();
  }
  item(data, static_cast<int32_t>(size));
  return *this;
}

array_param& array_param::null() {
  has_null_ = true;
  put_be32(items_, 0xFFFFFFFFu); // length -1
  ++count_;
  return *this;
}

std::string array_param::encode() const {
  static constexpr uint32_t element_oids[]
      = {int2_oid, int4_oid, int8_oid, bool_oid, text_oid, bytea_oid};
  std::string out;
  out.reserve(20 + items_.size());
  // ndim, has-null flag, element type; then per dimension: length and
  // lower bound. An empty array has no dimensions.
  put_be32(out, count_ == 0 ? 0 : 1);
  put_be32(out, has_null_ ? 1 : 0);
  put_be32(out, element_oids[static_cast<int>(type_)]);
  if (count_ > 0) {
    put_be32(out, count_);
    put_be32(out, 1);
  }
  out += items_;
  return out;
}

} // namespace drover::pg
