#pragma once

// A JSON document tree for tests that read the HTTP API's answers. Parsing
// is Cap'n Proto's JSON parser (capnp::JsonCodec::decodeRaw, a third-party
// parser the gateway's own writer does not use), so the tests check the
// gateway's output against an independent reader. Access is strict: a
// missing key or a value of the wrong type fails the test with the path and
// the document, never a default.

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace drover::testing {

class json_value {
public:
  enum class kind { null, boolean, number, string, array, object };

  json_value() = default;

  /// Parses `text`; a text that isn't JSON fails the test.
  static json_value parse(std::string_view text) {
    capnp::MallocMessageBuilder message;
    auto failure = kj::runCatchingExceptions([&] {
      capnp::JsonCodec codec;
      auto root = message.initRoot<capnp::JsonValue>();
      codec.decodeRaw(kj::ArrayPtr<const char>{text.data(), text.size()}, root);
    });
    if (failure != nullptr)
      FAIL("not JSON: " << text);
    auto out = from(message.getRoot<capnp::JsonValue>().asReader());
    out.share_text(std::make_shared<std::string>(text));
    return out;
  }

  kind type() const {
    return kind_;
  }
  bool is_null() const {
    return kind_ == kind::null;
  }
  bool is_object() const {
    return kind_ == kind::object;
  }
  bool is_array() const {
    return kind_ == kind::array;
  }
  bool is_string() const {
    return kind_ == kind::string;
  }
  bool is_number() const {
    return kind_ == kind::number;
  }

  bool has(const std::string& key) const {
    if (kind_ != kind::object)
      return false;
    for (auto& kv : members_)
      if (kv.first == key)
        return true;
    return false;
  }

  const json_value& operator[](const std::string& key) const& {
    if (kind_ != kind::object)
      FAIL("'" << key << "' of a non-object in " << doc());
    for (auto& kv : members_)
      if (kv.first == key)
        return kv.second;
    FAIL("no key '" << key << "' in " << doc());
    return *this; // not reached
  }

  /// Of a temporary document: a copy, which cannot dangle.
  json_value operator[](const std::string& key) && {
    return static_cast<const json_value&>(*this)[key];
  }

  const json_value& operator[](size_t i) const {
    if (kind_ != kind::array || i >= items_.size())
      FAIL("no element [" << i << "] in " << doc());
    return items_[i];
  }

  size_t size() const {
    if (kind_ == kind::array)
      return items_.size();
    if (kind_ == kind::object)
      return members_.size();
    FAIL("size of a scalar in " << doc());
    return 0;
  }

  const std::vector<json_value>& items() const& {
    if (kind_ != kind::array)
      FAIL("expected an array in " << doc());
    return items_;
  }

  /// Of a temporary: a copy, so `for (auto& x : parse_json(t)["a"].items())`
  /// iterates over something alive.
  std::vector<json_value> items() && {
    return static_cast<const json_value&>(*this).items();
  }

  const std::vector<std::pair<std::string, json_value>>& members() const& {
    if (kind_ != kind::object)
      FAIL("expected an object in " << doc());
    return members_;
  }

  std::vector<std::pair<std::string, json_value>> members() && {
    return static_cast<const json_value&>(*this).members();
  }

  const std::string& str() const {
    if (kind_ != kind::string)
      FAIL("expected a string in " << doc());
    return string_;
  }

  double num() const {
    if (kind_ != kind::number)
      FAIL("expected a number in " << doc());
    return number_;
  }

  int64_t integer() const {
    auto x = num();
    if (static_cast<double>(static_cast<int64_t>(x)) != x)
      FAIL("expected an integer in " << doc());
    return static_cast<int64_t>(x);
  }

  bool boolean() const {
    if (kind_ != kind::boolean)
      FAIL("expected true or false in " << doc());
    return boolean_;
  }

  /// The whole document this value came from (for failure messages).
  std::string doc() const {
    return text_ ? *text_ : std::string{"(a JSON value)"};
  }

private:
  static json_value from(capnp::JsonValue::Reader v) {
    json_value out;
    switch (v.which()) {
      case capnp::JsonValue::NULL_:
        out.kind_ = kind::null;
        break;
      case capnp::JsonValue::BOOLEAN:
        out.kind_ = kind::boolean;
        out.boolean_ = v.getBoolean();
        break;
      case capnp::JsonValue::NUMBER:
        out.kind_ = kind::number;
        out.number_ = v.getNumber();
        break;
      case capnp::JsonValue::STRING: {
        out.kind_ = kind::string;
        auto s = v.getString();
        out.string_.assign(s.cStr(), s.size());
        break;
      }
      case capnp::JsonValue::ARRAY:
        out.kind_ = kind::array;
        for (auto x : v.getArray())
          out.items_.push_back(from(x));
        break;
      case capnp::JsonValue::OBJECT:
        out.kind_ = kind::object;
        for (auto f : v.getObject()) {
          auto name = f.getName();
          out.members_.emplace_back(std::string{name.cStr(), name.size()},
                                    from(f.getValue()));
        }
        break;
      default:
        FAIL("unexpected JSON value kind");
    }
    return out;
  }

  void share_text(const std::shared_ptr<std::string>& text) {
    text_ = text;
    for (auto& x : items_)
      x.share_text(text);
    for (auto& kv : members_)
      kv.second.share_text(text);
  }

  kind kind_ = kind::null;
  bool boolean_ = false;
  double number_ = 0;
  std::string string_;
  std::vector<json_value> items_;
  std::vector<std::pair<std::string, json_value>> members_;
  std::shared_ptr<std::string> text_;
};

/// Parses `text` (see json_value::parse).
inline json_value parse_json(std::string_view text) {
  return json_value::parse(text);
}

} // namespace drover::testing
