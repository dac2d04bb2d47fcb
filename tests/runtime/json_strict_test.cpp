// Strict JSON and text-field checks (runtime/json_strict.hpp): what reaches
// the store is valid UTF-8 without NUL, duplicate names and unpaired
// surrogates are refused with the field's path, and the canonical form is
// independent of member order and spelling of escapes.

#include "runtime/json_strict.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

#include <string>

using drover::check_json_strict;
using drover::check_text_field;
using drover::errc;

namespace {

/// The refusal's message ("" when accepted).
std::string refusal(std::string_view text, std::string_view root = "") {
  auto err = check_json_strict(text, 64, root);
  if (!err)
    return {};
  const auto& ctx = err.context();
  REQUIRE(ctx.match_elements<std::string>());
  return ctx.get_as<std::string>(0);
}

std::string canonical(std::string_view text) {
  std::string out;
  auto err = check_json_strict(text, 64, "input", &out);
  INFO(drover::describe(err));
  REQUIRE_FALSE(err);
  return out;
}

} // namespace

TEST_CASE("strict JSON accepts RFC 8259 values", "[json_strict]") {
  for (auto text :
       {"{}", "[]", "0", "-0.5e+10", "\"\"", "true", "null",
        R"({"a": [1, 2, {"b": "\u00e9\ud83d\ude00"}], "c": "\t\n"})",
        " \r\n\t{\"x\" : 1 } ", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""}) {
    INFO(text);
    CHECK(refusal(text).empty());
  }
}

TEST_CASE("strict JSON refuses invalid UTF-8 and names the field",
          "[json_strict]") {
  // The overlong '/' of the issue's poison request, in a top-level field.
  auto msg = refusal("{\"idempotency_key\": \"\xc0\xaf\"}");
  CHECK(msg.find("idempotency_key: not valid UTF-8") == 0);
  // Nested inside the input, through objects and arrays.
  msg = refusal("{\"input\": {\"files\": [\"ok\", {\"name\": \"a\xff\"}]}}");
  CHECK(msg.find("input.files[1].name: not valid UTF-8") == 0);
  // A lone continuation byte, a cut-off sequence, an encoded surrogate.
  for (auto bad : {"\"\x80\"", "\"\xe2\x82\"", "\"\xed\xa0\x80\""}) {
    INFO(bad);
    CHECK(refusal(bad).find("body: not valid UTF-8") == 0);
  }
  // The message never echoes the offending bytes.
  CHECK(msg.find('\xff') == std::string::npos);
  // In a member name.
  CHECK(refusal("{\"k\xc0\": 1}").find("a member name in body") == 0);
}

TEST_CASE("strict JSON refuses NUL, raw controls and unpaired surrogates",
          "[json_strict]") {
  CHECK(refusal(R"({"a": "x\u0000y"})")
        == "a: contains a NUL character "
           "(\\u0000)");
  CHECK(refusal(std::string{"{\"a\": \"x\0y\"}", 12}).find("a: a raw control")
        == 0);
  CHECK(refusal("{\"a\": \"line\nbreak\"}").find("a: a raw control") == 0);
  CHECK(refusal(R"({"s": "\ud83d"})")
        == "s: an unpaired UTF-16 surrogate "
           "escape");
  CHECK(refusal(R"({"s": "\ude00"})")
        == "s: an unpaired UTF-16 surrogate "
           "escape");
  CHECK(refusal(R"({"s": "\ud83d\u0041"})")
        == "s: an unpaired UTF-16 surrogate escape");
  CHECK(refusal(R"(["\ud83dx"])", "input")
        == "input[0]: an unpaired UTF-16 "
           "surrogate escape");
}

TEST_CASE("strict JSON refuses duplicate member names", "[json_strict]") {
  CHECK(refusal(R"({"type": "a", "type": "b"})")
        == "type: appears twice in one object");
  // Compared after decoding: \u0061 is "a".
  CHECK(refusal(R"({"input": {"a": 1, "\u0061": 2}})")
        == "input.a: appears twice in one object");
  // The same name in different objects is fine.
  CHECK(refusal(R"({"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]})").empty());
}

TEST_CASE("strict JSON: malformed text, depth and trailing text",
          "[json_strict]") {
  for (auto text :
       {"", "{", "{\"a\" 1}", "[1,]", "{\"a\":1,}", "01", "1.", "-", "tru",
        "\"\\x\"", "\"\\u12G4\"", "{} x", "'a'", "{a: 1}", "NaN", "[1 2]"}) {
    INFO(text);
    auto err = check_json_strict(text, 64, "");
    CHECK(drover::is(err, errc::malformed));
  }
  std::string deep(65, '[');
  deep += std::string(65, ']');
  CHECK(drover::is(check_json_strict(deep, 64, ""), errc::too_deep));
  std::string ok(64, '[');
  ok += std::string(64, ']');
  CHECK_FALSE(check_json_strict(ok, 64, ""));
}

TEST_CASE("canonical JSON ignores member order, whitespace and escape "
          "spelling",
          "[json_strict]") {
  CHECK(canonical(R"( { "b" : 1 , "a" : [ true , null , "x" ] } )")
        == R"({"a":[true,null,"x"],"b":1})");
  CHECK(canonical(R"({"a": {"z": 1, "y": 2}, "A": 0})")
        == canonical(R"({"A": 0, "a": {"y": 2, "z": 1}})"));
  // Escapes are decoded and written minimally.
  CHECK(canonical(R"("\u00e9\/\u0041")") == "\"\xc3\xa9/A\"");
  CHECK(canonical(R"("\ud83d\ude00")") == "\"\xf0\x9f\x98\x80\"");
  CHECK(canonical(R"("a\"b\\c\nd\u001f")") == R"("a\"b\\c\nd\u001f")");
  // Numbers keep their spelling: 1 and 1.0 are different texts.
  CHECK(canonical("[1, 1.0, -0, 2e3]") == "[1,1.0,-0,2e3]");
  // Different values stay different.
  CHECK(canonical(R"({"a": 1})") != canonical(R"({"a": 2})"));
  CHECK(canonical(R"(["a", "b"])") != canonical(R"(["b", "a"])"));
}

TEST_CASE("text fields: valid UTF-8 without NUL", "[json_strict]") {
  CHECK_FALSE(check_text_field("order-42 caf\xc3\xa9", "idempotency_key"));
  auto err = check_text_field("\xc0\xaf", "idempotency_key");
  REQUIRE(drover::is(err, errc::invalid_request));
  CHECK(err.context().get_as<std::string>(0)
        == "idempotency_key: not valid UTF-8 (at byte 0)");
  err = check_text_field(std::string{"a\0b", 3}, "reason", true);
  CHECK(err.context().get_as<std::string>(0) == "reason: contains a NUL byte");
  CHECK(check_text_field("tab\there", "type"));
  CHECK_FALSE(check_text_field("line\nbreak", "reason", true));
  CHECK(check_text_field("del\x7f", "type"));
}
