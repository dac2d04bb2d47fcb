// libFuzzer target: the JSON side of runtime/codec.hpp (from_json<T> for
// every message kind, validate_json) and the text repairs it relies on
// (runtime/json_text.hpp).
//
// Input: one byte choosing the kind (see fuzz_check.hpp), then JSON text.
// Properties, beyond "no crash, no sanitizer report, no exception":
// - json_text: fix_unicode_escapes never lengthens its input and is
//   idempotent; valid_utf8 returns well-formed UTF-8 and leaves well-formed
//   UTF-8 alone; json_quote gives one JSON value (validate_json) that
//   decodes back to valid_utf8 of its input;
// - whatever from_json<T> accepts renders with to_json into text that
//   from_json<T> accepts again, and that second rendering is the same text
//   (payload numbers are normalised once, then stable).

#include "fuzz_check.hpp"

#include "runtime/codec.hpp"
#include "runtime/json_text.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

bool well_formed_utf8(std::string_view s) {
  while (!s.empty()) {
    auto n = drover::utf8_sequence_length(s);
    if (n == 0)
      return false;
    s.remove_prefix(n);
  }
  return true;
}

void check_json_text(std::string_view text) {
  auto fixed = drover::fix_unicode_escapes(text);
  FUZZ_CHECK(fixed.size() <= text.size(),
             "fix_unicode_escapes must never lengthen its input");
  FUZZ_CHECK(drover::fix_unicode_escapes(fixed) == fixed,
             "fix_unicode_escapes must be idempotent");
  auto valid = drover::valid_utf8(text);
  FUZZ_CHECK(well_formed_utf8(valid), "valid_utf8 must return valid UTF-8");
  if (well_formed_utf8(text))
    FUZZ_CHECK(valid == text, "valid_utf8 must keep valid UTF-8 as it is");
  auto quoted = drover::json_quote(text);
  FUZZ_CHECK(!drover::validate_json(quoted),
             "json_quote must produce one JSON value");
  // The quoted string decodes back to the text (invalid bytes replaced):
  // carry it as an error_info's message, a plain Text field.
  auto err
      = drover::from_json<drover::error_info>("{\"message\":" + quoted + "}");
  FUZZ_CHECK(err, "json_quote's string must decode");
  FUZZ_CHECK(err->message == valid,
             "json_quote's string must decode to valid_utf8 of its input");
}

template <class T>
void check_kind(std::string_view text) {
  auto x = drover::from_json<T>(text);
  if (!x)
    return;
  auto first = drover::to_json(*x);
  auto y = drover::from_json<T>(first);
  FUZZ_CHECK(y, "a decoded value's JSON must decode again");
  FUZZ_CHECK(drover::to_json(*y) == first,
             "JSON must be stable after one decode/encode round");
  (void)drover::to_bytes(*x);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  auto kind = data[0] % drover_fuzz_codec_kind_count;
  std::string_view text{reinterpret_cast<const char*>(data + 1), size - 1};
  check_json_text(text);
  (void)drover::validate_json(text);
  unsigned i = 0;
#define DROVER_FUZZ_DISPATCH(type)                                             \
  if (kind == i++) {                                                           \
    check_kind<drover::type>(text);                                            \
    return 0;                                                                  \
  }
  DROVER_FUZZ_CODEC_KINDS(DROVER_FUZZ_DISPATCH)
#undef DROVER_FUZZ_DISPATCH
  return 0;
}
