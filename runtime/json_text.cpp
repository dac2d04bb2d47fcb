#include "runtime/json_text.hpp"

#include <algorithm>
#include <cstdint>
#include <string>

namespace drover {

namespace {

bool is_hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')
         || (c >= 'A' && c <= 'F');
}

uint32_t hex_value(std::string_view digits) {
  uint32_t value = 0;
  for (char c : digits)
    value = value * 16
            + static_cast<uint32_t>(c <= '9'   ? c - '0'
                                    : c <= 'F' ? c - 'A' + 10
                                               : c - 'a' + 10);
  return value;
}

bool is_high_surrogate(uint32_t code_point) {
  return code_point >= 0xD800 && code_point <= 0xDBFF;
}

bool is_low_surrogate(uint32_t code_point) {
  return code_point >= 0xDC00 && code_point <= 0xDFFF;
}

/// Appends `code_point` the way the contract in json_text.hpp says: at most
/// 4 bytes, and never an unescaped quote or backslash.
void append_decoded(std::string& out, uint32_t code_point) {
  switch (code_point) {
    case '"':
      out += "\\\"";
      return;
    case '\\':
      out += "\\\\";
      return;
    case '\n':
      out += "\\n";
      return;
    case '\f':
      out += "\\f";
      return;
    case '\r':
      out += "\\r";
      return;
    default:
      append_utf8(out, code_point);
  }
}

} // namespace

void append_utf8(std::string& out, uint32_t code_point) {
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
}

std::string fix_unicode_escapes(std::string_view text) {
  if (text.find("\\u") == std::string_view::npos)
    return std::string{text};
  std::string out;
  out.reserve(text.size());
  // A well-formed \uXXXX escape at `i`.
  auto escape_at = [&text](size_t i) {
    return i + 6 <= text.size() && text[i] == '\\' && text[i + 1] == 'u'
           && std::all_of(text.begin() + i + 2, text.begin() + i + 6,
                          is_hex_digit);
  };
  bool in_string = false;
  size_t i = 0;
  while (i < text.size()) {
    char c = text[i];
    if (c == '"') {
      in_string = !in_string;
    } else if (in_string && c == '\\' && i + 1 < text.size()) {
      if (!escape_at(i)) {
        out.append(text.substr(i, 2)); // \" \\ \n ... (or garbage)
        i += 2;
        continue;
      }
      auto digits = text.substr(i + 2, 4);
      if (std::none_of(digits.begin(), digits.end(),
                       [](char d) { return d > '9'; })) {
        // Decoded correctly as it is (no surrogate is written without a
        // hex letter).
        out.append(text.substr(i, 6));
        i += 6;
        continue;
      }
      auto code_point = hex_value(digits);
      size_t consumed = 6;
      if (is_high_surrogate(code_point)) {
        auto low = escape_at(i + 6) ? hex_value(text.substr(i + 8, 4)) : 0;
        if (is_low_surrogate(low)) {
          code_point = 0x10000 + ((code_point - 0xD800) << 10) + (low - 0xDC00);
          consumed = 12;
        } else {
          code_point = 0xFFFD;
        }
      } else if (is_low_surrogate(code_point)) {
        code_point = 0xFFFD;
      }
      append_decoded(out, code_point);
      i += consumed;
      continue;
    }
    out += c;
    ++i;
  }
  return out;
}

// -- writing JSON text
// ---------------------------------------------------------

/// Length of the well-formed UTF-8 sequence at the start of `str`, or 0.
size_t utf8_sequence_length(std::string_view str) {
  auto byte = [&str](size_t i) { return static_cast<unsigned char>(str[i]); };
  auto lead = byte(0);
  if (lead < 0x80)
    return 1;
  size_t length;
  uint32_t min_code_point;
  uint32_t code_point;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    min_code_point = 0x80;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    min_code_point = 0x800;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    min_code_point = 0x10000;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (str.size() < length)
    return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80)
      return 0;
    code_point = (code_point << 6) | (byte(i) & 0x3F);
  }
  if (code_point < min_code_point || code_point > 0x10FFFF
      || (code_point >= 0xD800 && code_point <= 0xDFFF))
    return 0;
  return length;
}

/// Program output and user input are bytes; messages and results must be
/// UTF-8. Each byte that isn't part of a well-formed sequence becomes
/// U+FFFD.
std::string valid_utf8(std::string_view str) {
  std::string out;
  out.reserve(str.size());
  while (!str.empty()) {
    auto length = utf8_sequence_length(str);
    if (length == 0) {
      out += "\xEF\xBF\xBD";
      length = 1;
    } else {
      out.append(str.substr(0, length));
    }
    str.remove_prefix(length);
  }
  return out;
}

/// A JSON string literal for arbitrary bytes (invalid UTF-8 replaced).
std::string json_quote(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char c : valid_utf8(bytes)) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += hex[(c >> 4) & 0xF];
          out += hex[c & 0xF];
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

} // namespace drover
