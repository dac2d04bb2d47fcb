#pragma once

// Repairs JSON text before Cap'n Proto 0.9.2's JsonCodec decodes it.
//
// That decoder gets every \uXXXX escape containing a hex letter wrong (it
// reads a-f/A-F as 0-5, so "\u00e9" becomes "I"; fixed upstream in 2022, PR
// 1552) and doesn't pair UTF-16 surrogates. Every JsonCodec decode of text
// from outside (runtime/codec.cpp, runtime/builtin_input.cpp) runs the
// text through `fix_unicode_escapes` first.
//
// Contract of fix_unicode_escapes(text):
// - Rewrites, inside string literals only, each \uXXXX escape whose four hex
//   digits contain a letter, into what it denotes:
//     high surrogate escape directly followed by a low surrogate escape
//       ("\ud83d\ude00")          -> the code point as 4 UTF-8 bytes
//     unpaired surrogate (a high one not directly followed by a low one, or
//       a lone low one)           -> U+FFFD as UTF-8 (EF BF BD); never an
//                                    error, as in most JSON decoders
//     U+005C backslash            -> \\   (stays escaped)
//     U+000A, U+000C, U+000D      -> \n, \f, \r
//     other code points below U+0020 (U+000B, U+000E, U+000F,
//       U+001A-U+001F)            -> the raw byte
//     anything else               -> its UTF-8 bytes
// - Leaves everything else byte for byte: escapes of decimal digits only
//   (\u0041, \u0000, \u0022: the decoder reads those right), the other
//   escapes (\" \\ \/ \b \f \n \r \t), malformed escapes ("\u12G4", a cut-off
//   "\u12") for the decoder to reject, text outside strings, and raw bytes,
//   invalid UTF-8 included.
// - The output is JSON text equivalent to the input: a correct decoder reads
//   the same values from both, and Cap'n Proto's decoder reads from the
//   output what a correct one reads from the input. String boundaries and
//   structure are unchanged (a rewrite never produces an unescaped quote or
//   backslash), so the decoder accepts the output exactly when it accepts
//   the input. The one departure from RFC 8259: the control characters
//   listed above as "raw byte" end up unescaped inside strings, which
//   Cap'n Proto's decoder accepts (it takes raw control characters).
// - The output is never longer than the input: a rewritten escape of 6 bytes
//   becomes at most 3 (a pair of 12 becomes 4), all else is copied. Size
//   limits should still be checked on the input, before calling this.
// - Never throws except std::bad_alloc.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace drover {

/// `text` with the \uXXXX escapes Cap'n Proto 0.9.2 misreads rewritten (see
/// the contract above).
std::string fix_unicode_escapes(std::string_view text);

/// Appends `code_point` (a Unicode scalar value: not a surrogate, at most
/// U+10FFFF) to `out` as 1 to 4 bytes of UTF-8.
void append_utf8(std::string& out, uint32_t code_point);

/// Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
/// surrogates, at most U+10FFFF) at the start of `str`; 0 if there is none
/// (also for an empty `str`).
size_t utf8_sequence_length(std::string_view str);

/// `str` with each byte that isn't part of a well-formed UTF-8 sequence
/// replaced by U+FFFD. Program output and user input are bytes; messages
/// and JSON text must be UTF-8.
std::string valid_utf8(std::string_view str);

/// A JSON string literal (quotes included) for arbitrary bytes: invalid
/// UTF-8 replaced as by valid_utf8, `"` `\` and control characters
/// escaped (RFC 8259), everything else verbatim.
std::string json_quote(std::string_view bytes);

} // namespace drover
