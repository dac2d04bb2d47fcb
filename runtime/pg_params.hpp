#pragma once

// The values of PostgreSQL statements (runtime/pg.hpp): a statement's
// result and its parameters, arrays included. Implemented in
// runtime/pg_connection.cpp (result) and runtime/pg_params.cpp.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// libpq's result handle (PGresult), declared here so that this header does
// not pull in libpq-fe.h.
struct pg_result;

namespace drover::pg {

// -- results ------------------------------------------------------------------

/// Owns one PGresult (PQclear on destruction). Values are text or binary
/// depending on how the query asked for them.
class result {
public:
  result() noexcept = default;
  /// Takes ownership of `res` (may be null).
  explicit result(pg_result* res) noexcept : res_(res) {}
  result(result&& other) noexcept : res_(std::exchange(other.res_, nullptr)) {}
  result& operator=(result&& other) noexcept;
  result(const result&) = delete;
  result& operator=(const result&) = delete;
  ~result();

  int rows() const;
  int columns() const;
  bool is_null(int row, int col) const;
  /// The raw value (binary results: the wire bytes); valid while `*this`
  /// lives.
  std::string_view value(int row, int col) const;
  /// Affected rows of INSERT/UPDATE/DELETE (PQcmdTuples), 0 if none.
  uint64_t affected() const;

  pg_result* get() const noexcept {
    return res_;
  }
  explicit operator bool() const noexcept {
    return res_ != nullptr;
  }

private:
  pg_result* res_ = nullptr;
};

/// Reads a binary int2/int4/int8 value (network byte order).
int64_t binary_int(std::string_view wire);

// -- parameters ---------------------------------------------------------------

class array_param;

/// Parameters of one statement, owned and typed (the server never has to
/// guess a type). Text must not contain NUL bytes: libpq passes text as C
/// strings, so a NUL would silently truncate the value; such a value marks
/// the list invalid and the statement is refused with `invalid_value`.
class params {
public:
  params& text(std::string_view x);
  /// `x` or SQL NULL when empty.
  params& text_or_null(std::string_view x);
  params& int16(int16_t x);
  params& int32(int32_t x);
  params& int64(int64_t x);
  /// An int8 parameter that is SQL NULL.
  params& null_int64();
  params& boolean(bool x);
  /// bytea, sent in binary.
  params& bytes(const char* data, size_t size);
  params& bytes(const std::vector<char>& x) {
    return bytes(x.data(), x.size());
  }
  /// A binary array parameter (see array_param).
  params& array(const array_param& x);

  size_t size() const noexcept {
    return values_.size();
  }
  bool empty() const noexcept {
    return values_.empty();
  }
  void reserve(size_t n);

private:
  friend class connection;
  void add(std::string value, uint32_t type, int format, bool null);
  /// The arrays libpq takes: a pointer (null = SQL NULL) and a length per
  /// value, valid while this list lives.
  struct wire_form {
    std::vector<const char*> values;
    std::vector<int> lengths;
  };
  wire_form wire() const;

  std::vector<std::string> values_;
  std::vector<uint32_t> types_;
  std::vector<int> formats_;
  std::vector<char> nulls_;
  /// Why the list can't be sent; empty = fine.
  std::string invalid_;
};

/// A one-dimensional array parameter, sent in PostgreSQL's binary array
/// format: a whole column of a batch in one parameter, so one prepared
/// statement (`INSERT .. SELECT * FROM unnest($1::text[], ..)`) serves
/// batches of any size without being parsed and planned again.
class array_param {
public:
  enum class element { int2, int4, int8, boolean, text, bytea };

  explicit array_param(element type, size_t expected_items = 0);

  array_param& int16(int16_t x);
  array_param& int32(int32_t x);
  array_param& int64(int64_t x);
  array_param& boolean(bool x);
  /// Text must hold no NUL byte (the params list reports it).
  array_param& text(std::string_view x);
  /// `x` or SQL NULL when empty.
  array_param& text_or_null(std::string_view x);
  array_param& bytes(const char* data, size_t size);
  array_param& bytes(const std::vector<char>& x) {
    return bytes(x.data(), x.size());
  }
  array_param& null();

  size_t size() const noexcept {
    return count_;
  }

private:
  friend class params;
  /// Appends one element: its length (-1 = NULL), then its bytes.
  void item(const char* data, int32_t size);
  /// The array's wire form: header, then the items.
  std::string encode() const;

  element type_;
  uint32_t count_ = 0;
  bool has_null_ = false;
  std::string items_;
  std::string invalid_;
};

/// libpq's limit on parameters per statement.
constexpr size_t max_params = 65535;

} // namespace drover::pg
