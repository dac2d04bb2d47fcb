// Tests of runtime/json_text.hpp: the rewrite of the \uXXXX escapes that
// Cap'n Proto 0.9.2's JSON decoder misreads.

#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>

using namespace drover;

namespace {

/// The string Cap'n Proto's decoder reads from the JSON string literal
/// `text`, or nullopt if it rejects the text.
std::optional<std::string> capnp_string(const std::string& text) {
  capnp::JsonCodec codec;
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::JsonValue>();
  std::optional<std::string> result;
  auto failure = kj::runCatchingExceptions([&] {
    codec.decodeRaw(kj::ArrayPtr<const char>{text.data(), text.size()}, root);
    if (root.isString()) {
      auto str = root.asReader().getString();
      result = std::string{str.begin(), str.size()};
    } else {
      result = std::string{};
    }
  });
  if (failure != nullptr)
    return std::nullopt;
  return result;
}

bool capnp_accepts(const std::string& text) {
  return capnp_string(text).has_value();
}

std::string utf8(uint32_t code_point) {
  std::string out;
  if (code_point < 0x80) {
    out += static_cast<char>(code_point);
  } else if (code_point < 0x800) {
    out += static_cast<char>(0xC0 | (code_point >> 6));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else if (code_point < 0x10000) {
    out += static_cast<char>(0xE0 | (code_point >> 12));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (code_point >> 18));
    out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (code_point & 0x3F));
  }
  return out;
}

std::string escape(uint32_t unit, bool upper = false) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), upper ? "\\u%04X" : "\\u%04x",
                static_cast<unsigned>(unit));
  return buf;
}

const std::string replacement = "\xEF\xBF\xBD"; // U+FFFD

} // namespace

TEST_CASE("escapes with hex letters become what they denote", "[json_text]") {
  CHECK(fix_unicode_escapes(R"("caf\u00e9")") == "\"caf\xC3\xA9\"");
  CHECK(fix_unicode_escapes(R"("\u00C9\u20AC\uFFFF")")
        == "\"\xC3\x89\xE2\x82\xAC\xEF\xBF\xBF\"");
  CHECK(fix_unicode_escapes(R"(["\u007f", "\u00e9"])")
        == "[\"\x7F\", \"\xC3\xA9\"]");
  SECTION("a quote or backslash stays escaped") {
    CHECK(fix_unicode_escapes(R"("a\u005cb\u005C")") == R"("a\\b\\")");
  }
  SECTION("control characters: short escapes where JSON has them, else raw") {
    CHECK(fix_unicode_escapes(R"("\u000a\u000C\u000d")") == R"("\n\f\r")");
    CHECK(fix_unicode_escapes(R"("\u000b\u000E\u001b\u001F")")
          == "\"\x0B\x0E\x1B\x1F\"");
  }
}

TEST_CASE("surrogates", "[json_text]") {
  SECTION("a pair is one code point") {
    CHECK(fix_unicode_escapes(R"("\ud83d\ude00")") == "\"\xF0\x9F\x98\x80\"");
    CHECK(fix_unicode_escapes(R"("\uD83D\uDE00")") == "\"\xF0\x9F\x98\x80\"");
    CHECK(fix_unicode_escapes(R"("\ud800\udc00")")
          == "\"" + utf8(0x10000) + "\"");
    CHECK(fix_unicode_escapes(R"("\udbff\udfff")")
          == "\"" + utf8(0x10FFFF) + "\"");
  }
  SECTION("an unpaired one becomes U+FFFD") {
    auto r = replacement;
    CHECK(fix_unicode_escapes(R"("\ud800")") == "\"" + r + "\"");
    CHECK(fix_unicode_escapes(R"("\udc00x")") == "\"" + r + "x\"");
    CHECK(fix_unicode_escapes(R"("\ud800x\udc00")")
          == "\"" + r + "x" + r + "\"");
    CHECK(fix_unicode_escapes(R"("\ud800\n")") == "\"" + r + "\\n\"");
    CHECK(fix_unicode_escapes(R"("\ud800\u0041")") == "\"" + r + "\\u0041\"");
    CHECK(fix_unicode_escapes(R"("\udc00\ud800")") == "\"" + r + r + "\"");
    // Two highs, then a low: the second high pairs.
    CHECK(fix_unicode_escapes(R"("\ud800\ud83d\ude00")")
          == "\"" + r + "\xF0\x9F\x98\x80\"");
    // A cut-off low escape doesn't pair; it is left for the decoder.
    CHECK(fix_unicode_escapes(R"("\ud83d\ude0")") == "\"" + r + "\\ude0\"");
  }
}

TEST_CASE("everything else is left as it is", "[json_text]") {
  for (std::string text : {
           R"({"a": [1, 2.5, true, null], "b": "plain"})",
           R"("\u0041\u0000\u0022\u0123")",  // digits only: read right
           R"("\" \\ \/ \b \f \n \r \t")",   // the other escapes
           R"("\\u00e9")",                   // escaped backslash, then text
           R"("\"\\"\u00e9)",                // \u00e9 outside a string
           R"(\u00e9 {"a": 1})",             // outside a string
           R"("\u00G9 \u00e" )",             // malformed
           "\"\\u00e",                       // cut off
           "\"raw \xC3\xA9 \xFF\xFE \x01\"", // raw bytes, invalid UTF-8 too
           "\"trailing backslash\\",
           "",
       }) {
    INFO("text: " << text);
    CHECK(fix_unicode_escapes(text) == text);
  }
}

TEST_CASE("Cap'n Proto reads every BMP escape right after the rewrite",
          "[json_text]") {
  for (uint32_t unit = 0; unit <= 0xFFFF; ++unit) {
    if (unit >= 0xD800 && unit <= 0xDFFF)
      continue;
    for (bool upper : {false, true}) {
      auto text = "\"" + escape(unit, upper) + "\"";
      auto fixed = fix_unicode_escapes(text);
      INFO("text: " << text);
      REQUIRE(fixed.size() <= text.size());
      auto decoded = capnp_string(fixed);
      REQUIRE(decoded);
      REQUIRE(*decoded == utf8(unit));
    }
  }
}

TEST_CASE("Cap'n Proto reads surrogate pairs right after the rewrite",
          "[json_text]") {
  for (uint32_t high : {0xD800u, 0xD83Du, 0xDA00u, 0xDBFFu})
    for (uint32_t low : {0xDC00u, 0xDE00u, 0xDE0Fu, 0xDFFFu}) {
      auto text = "\"" + escape(high) + escape(low, true) + "\"";
      auto fixed = fix_unicode_escapes(text);
      INFO("text: " << text);
      CHECK(fixed.size() == text.size() - 8);
      auto decoded = capnp_string(fixed);
      REQUIRE(decoded);
      CHECK(*decoded
            == utf8(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)));
    }
}

TEST_CASE("random text: never longer, accepted exactly when the input is",
          "[json_text]") {
  // Text made of pieces that stress the scanner: quotes, backslashes,
  // escapes of every kind, cut-off ones.
  const char* pieces[] = {
      "\"",      "\\",      "\\\\",    "\\\"",    "\\u",     "\\u00e9",
      "\\u0041", "\\ud83d", "\\ude00", "\\uDBFF", "\\u005c", "\\u001b",
      "\\u00",   "\\n",     "x",       ",",       "[",       "]",
      ":",       "{",       "}",       "1",       " ",       "\xC3\xA9",
  };
  constexpr size_t piece_count = sizeof(pieces) / sizeof(pieces[0]);
  auto seed = std::random_device{}();
  INFO("seed: " << seed);
  std::mt19937_64 rng{seed};
  std::uniform_int_distribution<size_t> pick{0, piece_count - 1};
  std::uniform_int_distribution<int> length{0, 12};
  for (int round = 0; round < 20000; ++round) {
    std::string body;
    for (int n = length(rng); n > 0; --n)
      body += pieces[pick(rng)];
    for (const auto& text : {body, "\"" + body + "\"", "[\"" + body + "\"]"}) {
      std::string fixed;
      REQUIRE_NOTHROW(fixed = fix_unicode_escapes(text));
      INFO("text: " << text << "\nfixed: " << fixed);
      REQUIRE(fixed.size() <= text.size());
      REQUIRE(capnp_accepts(fixed) == capnp_accepts(text));
      // Rewriting is idempotent: the output has nothing left to rewrite.
      REQUIRE(fix_unicode_escapes(fixed) == fixed);
    }
  }
}

TEST_CASE("json_quote escapes what JSON requires and repairs bad UTF-8",
          "[json_text]") {
  CHECK(json_quote("") == "\"\"");
  CHECK(json_quote("plain text") == "\"plain text\"");
  CHECK(json_quote("say \"hi\"\\") == "\"say \\\"hi\\\"\\\\\"");
  CHECK(json_quote("a\nb\rc\td") == "\"a\\nb\\rc\\td\"");
  CHECK(json_quote(std::string{"\x01\x1f", 2}) == "\"\\u0001\\u001f\"");
  CHECK(json_quote(std::string{"nul\0x", 5}) == "\"nul\\u0000x\"");
  // Valid UTF-8 stays as it is; "/" and DEL need no escape.
  CHECK(json_quote("caf\xc3\xa9 \xf0\x9f\x98\x80 /\x7f")
        == "\"caf\xc3\xa9 \xf0\x9f\x98\x80 /\x7f\"");
  // A stray continuation byte, a truncated sequence, an overlong encoding
  // and an encoded surrogate each become U+FFFD.
  CHECK(json_quote("a\x80"
                   "b")
        == "\"a\xef\xbf\xbd"
           "b\"");
  CHECK(json_quote("\xe2\x82") == "\"\xef\xbf\xbd\xef\xbf\xbd\"");
  CHECK(json_quote("\xc0\xaf") == "\"\xef\xbf\xbd\xef\xbf\xbd\"");
  CHECK(json_quote("\xed\xa0\x80")
        == "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
}
