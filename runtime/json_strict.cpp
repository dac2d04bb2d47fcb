#include "runtime/json_strict.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace drover {

namespace {

caf::error invalid_at(const std::string& path, std::string what) {
  return make_error(errc::invalid_request,
                    (path.empty() ? std::string{"body"} : path) + ": "
                        + std::move(what));
}

/// Recursive-descent checker; one instance per text.
class strict_parser {
public:
  strict_parser(std::string_view text, size_t max_depth, bool canonical)
      : text_(text), max_depth_(max_depth), canonical_(canonical) {}

  caf::error run(std::string path, std::string* out) {
    root_ = path;
    skip_ws();
    std::string value;
    if (auto err = parse_value(path, 0, value))
      return err;
    skip_ws();
    if (pos_ != text_.size())
      return malformed("unexpected text after the JSON value");
    if (out != nullptr)
      *out = std::move(value);
    return {};
  }

private:
  caf::error malformed(std::string what) const {
    return make_error(errc::malformed,
                      std::move(what) + " at byte " + std::to_string(pos_));
  }

  caf::error too_deep() const {
    return make_error(errc::too_deep,
                      (root_.empty() ? std::string{"body"} : root_)
                          + ": nested deeper than "
                          + std::to_string(max_depth_));
  }

  bool at_end() const {
    return pos_ >= text_.size();
  }

  char peek() const {
    return text_[pos_];
  }

  void skip_ws() {
    while (!at_end()
           && (peek() == ' ' || peek() == '\t' || peek() == '\n'
               || peek() == '\r'))
      ++pos_;
  }

  caf::error parse_value(const std::string& path, size_t depth,
                         std::string& out) {
    if (at_end())
      return malformed("the text ends where a value should start");
    switch (peek()) {
      case '{':
        return parse_object(path, depth + 1, out);
      case '[':
        return parse_array(path, depth + 1, out);
      case '"': {
        std::string decoded;
        if (auto err = parse_string(path, decoded))
          return err;
        if (canonical_)
          out += json_quote(decoded);
        return {};
      }
      case 't':
        return literal("true", out);
      case 'f':
        return literal("false", out);
      case 'n':
        return literal("null", out);
      default:
        return parse_number(out);
    }
  }

  caf::error literal(std::string_view word, std::string& out) {
    if (text_.substr(pos_, word.size()) != word)
      return malformed("not a JSON value");
    pos_ += word.size();
    if (canonical_)
      out += word;
    return {};
  }

  caf::error parse_number(std::string& out) {
    auto start = pos_;
    auto digit = [this] { return !at_end() && peek() >= '0' && peek() <= '9'; };
    if (!at_end() && peek() == '-')
      ++pos_;
    if (!digit())
      return malformed("not a JSON value");
    if (peek() == '0') {
      ++pos_;
    } else {
      while (digit())
        ++pos_;
    }
    if (!at_end() && peek() == '.') {
      ++pos_;
      if (!digit())
        return malformed("a number needs digits after '.'");
      while (digit())
        ++pos_;
    }
    if (!at_end() && (peek() == 'e' || peek() == 'E')) {
      ++pos_;
      if (!at_end() && (peek() == '+' || peek() == '-'))
        ++pos_;
      if (!digit())
        return malformed("a number needs digits in its exponent");
      while (digit())
        ++pos_;
    }
    if (canonical_)
      out.append(text_.substr(start, pos_ - start));
    return {};
  }

  /// Four hex digits at pos_ as a number; false if they are not hex.
  bool hex4(uint32_t& value) {
    if (pos_ + 4 > text_.size())
      return false;
    value = 0;
    for (size_t i = 0; i < 4; ++i) {
      char c = text_[pos_ + i];
      uint32_t d;
      if (c >= '0' && c <= '9')
        d = static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        d = static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        d = static_cast<uint32_t>(c - 'A' + 10);
      else
        return false;
      value = value * 16 + d;
    }
    pos_ += 4;
    return true;
  }

  /// A string literal at pos_ (on its opening quote), decoded into `out`.
  caf::error parse_string(const std::string& path, std::string& out) {
    auto start = pos_;
    ++pos_;
    for (;;) {
      if (at_end())
        return malformed("a string starting at byte " + std::to_string(start)
                         + " is not closed");
      auto c = static_cast<unsigned char>(peek());
      if (c == '"') {
        ++pos_;
        return {};
      }
      if (c < 0x20)
        return invalid_at(path, "a raw control character (byte "
                                    + std::to_string(c)
                                    + ") in a string; escape it");
      if (c == '\\') {
        if (auto err = parse_escape(path, out))
          return err;
        continue;
      }
      auto n = utf8_sequence_length(text_.substr(pos_));
      if (n == 0)
        return invalid_at(path, "not valid UTF-8 (at byte "
                                    + std::to_string(pos_) + ")");
      out.append(text_.substr(pos_, n));
      pos_ += n;
    }
  }

  caf::error parse_escape(const std::string& path, std::string& out) {
    ++pos_; // the backslash
    if (at_end())
      return malformed("the text ends inside an escape");
    char e = peek();
    ++pos_;
    switch (e) {
      case '"':
      case '\\':
      case '/':
        out += e;
        return {};
      case 'b':
        out += '\b';
        return {};
      case 'f':
        out += '\f';
        return {};
      case 'n':
        out += '\n';
        return {};
      case 'r':
        out += '\r';
        return {};
      case 't':
        out += '\t';
        return {};
      case 'u':
        break;
      default:
        return malformed("unknown escape '\\" + std::string(1, e) + "'");
    }
    uint32_t cp;
    if (!hex4(cp))
      return malformed("\\u needs four hex digits");
    if (cp == 0)
      return invalid_at(path, "contains a NUL character (\\u0000)");
    if (cp >= 0xDC00 && cp <= 0xDFFF)
      return invalid_at(path, "an unpaired UTF-16 surrogate escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      uint32_t low = 0;
      if (text_.substr(pos_, 2) != "\\u" || (pos_ += 2, !hex4(low))
          || low < 0xDC00 || low > 0xDFFF)
        return invalid_at(path, "an unpaired UTF-16 surrogate escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    append_utf8(out, cp);
    return {};
  }

  caf::error parse_object(const std::string& path, size_t depth,
                          std::string& out) {
    if (depth > max_depth_)
      return too_deep();
    ++pos_; // {
    std::vector<std::pair<std::string, std::string>> members;
    skip_ws();
    if (!at_end() && peek() == '}') {
      ++pos_;
      if (canonical_)
        out += "{}";
      return {};
    }
    for (;;) {
      skip_ws();
      if (at_end() || peek() != '"')
        return malformed("expected a member name");
      std::string name;
      if (auto err = parse_string(
              "a member name in " + (path.empty() ? std::string{"body"} : path),
              name))
        return err;
      auto member_path = path.empty() ? name : path + "." + name;
      for (auto& m : members)
        if (m.first == name)
          return invalid_at(member_path, "appears twice in one object");
      skip_ws();
      if (at_end() || peek() != ':')
        return malformed("expected ':' after a member name");
      ++pos_;
      skip_ws();
      std::string value;
      if (auto err = parse_value(member_path, depth, value))
        return err;
      members.emplace_back(std::move(name), std::move(value));
      skip_ws();
      if (at_end())
        return malformed("an object is not closed");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == '}') {
        ++pos_;
        break;
      }
      return malformed("expected ',' or '}' in an object");
    }
    if (canonical_) {
      std::sort(members.begin(), members.end(),
                [](const auto& x, const auto& y) { return x.first < y.first; });
      out += '{';
      for (size_t i = 0; i < members.size(); ++i) {
        if (i > 0)
          out += ',';
        out += json_quote(members[i].first);
        out += ':';
        out += members[i].second;
      }
      out += '}';
    }
    return {};
  }

  caf::error parse_array(const std::string& path, size_t depth,
                         std::string& out) {
    if (depth > max_depth_)
      return too_deep();
    ++pos_; // [
    if (canonical_)
      out += '[';
    skip_ws();
    if (!at_end() && peek() == ']') {
      ++pos_;
      if (canonical_)
        out += ']';
      return {};
    }
    for (size_t index = 0;; ++index) {
      skip_ws();
      if (index > 0 && canonical_)
        out += ',';
      if (auto err
          = parse_value(path + "[" + std::to_string(index) + "]", depth, out))
        return err;
      skip_ws();
      if (at_end())
        return malformed("an array is not closed");
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() == ']') {
        ++pos_;
        break;
      }
      return malformed("expected ',' or ']' in an array");
    }
    if (canonical_)
      out += ']';
    return {};
  }

  std::string_view text_;
  size_t max_depth_;
  bool canonical_;
  std::string root_;
  size_t pos_ = 0;
};

} // namespace

caf::error check_json_strict(std::string_view text, size_t max_depth,
                             std::string_view root, std::string* canonical) {
  strict_parser parser{text, max_depth, canonical != nullptr};
  return parser.run(std::string{root}, canonical);
}

caf::error check_text_field(std::string_view value, std::string_view field,
                            bool allow_controls) {
  size_t pos = 0;
  while (pos < value.size()) {
    auto c = static_cast<unsigned char>(value[pos]);
    if (c == 0)
      return invalid_at(std::string{field}, "contains a NUL byte");
    if (!allow_controls && (c < 0x20 || c == 0x7F))
      return invalid_at(std::string{field},
                        "contains a control character (byte "
                            + std::to_string(c) + ")");
    auto n = utf8_sequence_length(value.substr(pos));
    if (n == 0)
      return invalid_at(std::string{field}, "not valid UTF-8 (at byte "
                                                + std::to_string(pos) + ")");
    pos += n;
  }
  return {};
}

} // namespace drover
