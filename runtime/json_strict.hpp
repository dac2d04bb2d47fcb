#pragma once

// Strict checks of text that came from outside, before anything is kept.
//
// Every string that reaches the store must be valid UTF-8 without NUL:
// PostgreSQL refuses anything else, and a refused row must never cost other
// requests their transaction (issue 11). These checks run at the edges —
// the HTTP gateway on bodies, headers, query and path, and prepare_spec on
// every submission whatever path it came by — and name the offending field
// so a client can fix its request. Their messages describe the problem by
// position only; they never echo the offending bytes.
//
// check_json_strict(text, max_depth, root, canonical) accepts exactly one
// RFC 8259 JSON value, and refuses what lenient parsers let through:
// - bytes that are not well-formed UTF-8 (RFC 3629: no overlongs, no
//   surrogates, at most U+10FFFF), anywhere in the text;
// - raw control characters inside strings (they must be escaped);
// - the escape \u0000 (a NUL), and UTF-16 surrogate escapes that are not a
//   high one directly followed by a low one;
// - duplicate member names within one object (compared after decoding
//   escapes: "a" and "\u0061" are the same name);
// - nesting deeper than `max_depth`; trailing text after the value.
// A refusal is errc::invalid_request "<path>: <what>", where path is `root`
// followed by member names and indexes ("input.files[2].name"); text that
// is not JSON at all is errc::malformed. With `canonical` non-null and the
// text accepted, *canonical receives the value's canonical form: no
// insignificant whitespace, object members sorted by name (UTF-8 byte
// order), strings decoded and re-escaped minimally (json_quote), numbers
// and literals verbatim. Two texts denoting the same JSON value with the
// same number spellings have the same canonical form, so idempotent
// submissions compare specs canonically (key order does not matter).
// Never throws except std::bad_alloc; recursion is bounded by max_depth.

#include <caf/error.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace drover {

caf::error check_json_strict(std::string_view text, size_t max_depth,
                             std::string_view root,
                             std::string* canonical = nullptr);

/// A text field (a key, a reason, a header value, a query value): valid
/// UTF-8 without NUL, else errc::invalid_request naming `field`. With
/// `allow_controls` false, every other C0 control and DEL is refused too.
caf::error check_text_field(std::string_view value, std::string_view field,
                            bool allow_controls = false);

} // namespace drover
