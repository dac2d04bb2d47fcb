#include "runtime/log.hpp"

#include <spdlog/formatter.h>
#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <memory>
#include <mutex>
#include <unistd.h>

namespace drover::log {

namespace {

// -- escaping ----------------------------------------------------------------

/// Length of the valid UTF-8 sequence at s[i], or 0 if the bytes there are
/// not one (overlong forms, surrogates and code points above U+10FFFF are
/// invalid too).
size_t utf8_sequence(std::string_view s, size_t i, uint32_t& code_point) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  auto c = byte(i);
  size_t n;
  uint32_t cp;
  uint32_t min;
  if (c < 0x80) {
    code_point = c;
    return 1;
  } else if ((c & 0xE0) == 0xC0) {
    n = 2, cp = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, cp = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, cp = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size())
    return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  code_point = cp;
  return n;
}

void append_hex_byte(std::string& out, const char* prefix, unsigned char c) {
  static constexpr char digits[] = "0123456789abcdef";
  out += prefix;
  out += digits[c >> 4];
  out += digits[c & 0xF];
}

/// A JSON string literal, quotes included.
void append_json_string(std::string& out, std::string_view s) {
  out += '"';
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default:
        break;
    }
    if (c < 0x20 || c == 0x7F) {
      append_hex_byte(out, "\\u00", c);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    auto n = utf8_sequence(s, i, cp);
    if (n == 0) {
      out += "\\ufffd"; // not UTF-8: one replacement character per byte
      ++i;
    } else if (cp == 0x2028 || cp == 0x2029) {
      // Line separators end a line for some JavaScript readers.
      out += cp == 0x2028 ? "\\u2028" : "\\u2029";
      i += n;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
  out += '"';
}

/// Text form: control bytes and bytes that are not UTF-8 as escapes, so a
/// value never breaks the line. With `quoted`, also '"' and '\\'.
void append_text_escaped(std::string& out, std::string_view s, bool quoted) {
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (quoted && (c == '"' || c == '\\')) {
      out += '\\';
      out += static_cast<char>(c);
      ++i;
      continue;
    }
    if (c == '\n' || c == '\r' || c == '\t') {
      out += c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t";
      ++i;
      continue;
    }
    if (c < 0x20 || c == 0x7F) {
      append_hex_byte(out, "\\x", c);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    auto n = utf8_sequence(s, i, cp);
    if (n == 0 || cp == 0x2028 || cp == 0x2029 || cp == 0x85) {
      auto count = n == 0 ? 1 : n;
      for (size_t k = 0; k < count; ++k)
        append_hex_byte(out, "\\x", static_cast<unsigned char>(s[i + k]));
      i += count;
    } else {
      out.append(s.data() + i, n);
      i += n;
    }
  }
}

/// A text field value: bare if it is a plain word, quoted otherwise.
void append_text_value(std::string& out, std::string_view s) {
  bool plain = !s.empty();
  for (auto ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == '"' || c == '=' || c == '\\' || c >= 0x7F) {
      plain = false;
      break;
    }
  }
  if (plain) {
    out += s;
    return;
  }
  out += '"';
  append_text_escaped(out, s, true);
  out += '"';
}

bool reserved_key(std::string_view key) {
  return key == "ts" || key == "level" || key == "component" || key == "job"
         || key == "msg";
}

/// A field key: "field.<key>" if it would collide with a record key, and
/// in text only [A-Za-z0-9_.-] (anything else becomes '_').
std::string key_of(std::string_view key, format fmt) {
  std::string out = reserved_key(key) ? "field." : "";
  if (fmt == format::json) {
    out += key;
    return out;
  }
  for (auto ch : key) {
    auto c = static_cast<unsigned char>(ch);
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
              || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
    out += ok ? ch : '_';
  }
  if (out.empty())
    out = "_";
  return out;
}

// -- records -----------------------------------------------------------------

/// Everything after level: "component: message job=J k=v" (text) or
/// "\"component\":...,\"msg\":...,..." (JSON, no braces).
template <class Fields>
std::string body(format fmt, std::string_view component,
                 std::string_view job_id, std::string_view message,
                 const Fields& extra) {
  std::string out;
  out.reserve(64 + message.size());
  if (fmt == format::json) {
    out += "\"component\":";
    append_json_string(out, component);
    if (!job_id.empty()) {
      out += ",\"job\":";
      append_json_string(out, job_id);
    }
    out += ",\"msg\":";
    append_json_string(out, message);
    for (auto& f : extra) {
      out += ',';
      append_json_string(out, key_of(f.key(), fmt));
      out += ':';
      if (f.bare())
        out += f.value();
      else
        append_json_string(out, f.value());
    }
    return out;
  }
  append_text_escaped(out, component, false);
  out += ": ";
  append_text_escaped(out, message, false);
  if (!job_id.empty()) {
    out += " job=";
    append_text_value(out, job_id);
  }
  for (auto& f : extra) {
    out += ' ';
    out += key_of(f.key(), fmt);
    out += '=';
    append_text_value(out, f.value());
  }
  return out;
}

/// The whole line (no newline) from a timestamp, a level and a body.
void wrap(std::string& out, format fmt, std::string_view ts, level lv,
          std::string_view rendered_body) {
  if (fmt == format::json) {
    out += "{\"ts\":\"";
    out += ts;
    out += "\",\"level\":\"";
    out += to_string(lv);
    out += "\",";
    out += rendered_body;
    out += '}';
  } else {
    out += ts;
    out += ' ';
    out += to_string(lv);
    out += ' ';
    out += rendered_body;
  }
}

/// RFC 3339, UTC, milliseconds: 2026-12-01T23:00:52.123Z.
std::string timestamp(std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  auto ms = duration_cast<milliseconds>(t.time_since_epoch()).count();
  auto secs = static_cast<std::time_t>(ms / 1000);
  auto frac = static_cast<int>(ms % 1000);
  if (frac < 0) {
    frac += 1000;
    secs -= 1;
  }
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, frac);
  return buf;
}

spdlog::level::level_enum to_spdlog(level lv) {
  switch (lv) {
    case level::trace:
      return spdlog::level::trace;
    case level::debug:
      return spdlog::level::debug;
    case level::info:
      return spdlog::level::info;
    case level::warn:
      return spdlog::level::warn;
    case level::error:
      return spdlog::level::err;
    case level::off:
      break;
  }
  return spdlog::level::off;
}

level from_spdlog(spdlog::level::level_enum lv) {
  switch (lv) {
    case spdlog::level::trace:
      return level::trace;
    case spdlog::level::debug:
      return level::debug;
    case spdlog::level::info:
      return level::info;
    case spdlog::level::warn:
      return level::warn;
    case spdlog::level::err:
    case spdlog::level::critical:
      return level::error;
    default:
      break;
  }
  return level::off;
}

/// spdlog formatter: the payload is the rendered body; this adds the
/// timestamp spdlog took when the record was made, the level and '\n'.
class record_formatter final : public spdlog::formatter {
public:
  explicit record_formatter(log::format fmt) : fmt_(fmt) {}

  void format(const spdlog::details::log_msg& msg,
              spdlog::memory_buf_t& dest) override {
    std::string line;
    line.reserve(msg.payload.size() + 64);
    wrap(line, fmt_, timestamp(msg.time), from_spdlog(msg.level),
         std::string_view{msg.payload.data(), msg.payload.size()});
    line += '\n';
    dest.append(line.data(), line.data() + line.size());
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<record_formatter>(fmt_);
  }

private:
  log::format fmt_;
};

/// Writes each formatted record with one write(2) (retrying only the rest
/// of a partial write), under base_sink's mutex: lines never interleave
/// within the process, and a line up to PIPE_BUF bytes is atomic even when
/// other processes write to the same pipe or O_APPEND file.
class fd_sink final : public spdlog::sinks::base_sink<std::mutex> {
public:
  explicit fd_sink(int fd) : fd_(fd) {}

protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t buf;
    formatter_->format(msg, buf);
    const char* p = buf.data();
    size_t left = buf.size();
    while (left > 0) {
      auto n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        return; // nowhere left to report it
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }

  void flush_() override {
    // Nothing is buffered.
  }

private:
  int fd_;
};

struct state {
  options opts;
  std::shared_ptr<spdlog::logger> records;
  std::shared_ptr<spdlog::logger> announcements;
};

std::shared_ptr<spdlog::logger> make_logger(const char* name, int fd,
                                            format fmt, level min) {
  auto sink = std::make_shared<fd_sink>(fd);
  sink->set_formatter(std::make_unique<record_formatter>(fmt));
  auto logger = std::make_shared<spdlog::logger>(name, std::move(sink));
  logger->set_level(to_spdlog(min));
  // Every record is written at once (fd_sink buffers nothing).
  logger->flush_on(spdlog::level::off);
  return logger;
}

std::shared_ptr<const state> make_state(const options& opts) {
  auto st = std::make_shared<state>();
  st->opts = opts;
  st->records = make_logger("drover", opts.fd, opts.fmt, opts.min_level);
  st->announcements = make_logger("drover.announce", opts.announce_fd, opts.fmt,
                                  level::trace);
  return st;
}

/// Never destroyed: threads that outlive main() (or static destructors)
/// may still log.
std::shared_ptr<const state>& current_slot() {
  static auto* slot = new std::shared_ptr<const state>(make_state(options{}));
  return *slot;
}

std::shared_ptr<const state> current() {
  return std::atomic_load(&current_slot());
}

} // namespace

std::string_view to_string(level lv) {
  switch (lv) {
    case level::trace:
      return "trace";
    case level::debug:
      return "debug";
    case level::info:
      return "info";
    case level::warn:
      return "warn";
    case level::error:
      return "error";
    case level::off:
      break;
  }
  return "off";
}

std::optional<level> parse_level(std::string_view name) {
  for (auto lv : {level::trace, level::debug, level::info, level::warn,
                  level::error, level::off})
    if (name == to_string(lv))
      return lv;
  return std::nullopt;
}

std::optional<format> parse_format(std::string_view name) {
  if (name == "text")
    return format::text;
  if (name == "json")
    return format::json;
  return std::nullopt;
}

field::field(std::string_view key, double value) : key_(key) {
  if (!std::isfinite(value)) {
    value_ = std::isnan(value) ? "nan" : value < 0 ? "-inf" : "inf";
    return; // quoted: JSON has no such numbers
  }
  char buf[32];
  auto res = std::to_chars(buf, buf + sizeof(buf), value);
  value_.assign(buf, res.ptr);
  bare_ = true;
}

void configure(const options& opts) {
  std::atomic_store(&current_slot(), make_state(opts));
}

bool enabled(level lv) {
  return lv != level::off && current()->records->should_log(to_spdlog(lv));
}

void write(level lv, std::string_view component, std::string_view job_id,
           std::string_view message, fields extra) {
  if (lv == level::off)
    return;
  auto st = current();
  auto spd = to_spdlog(lv);
  if (!st->records->should_log(spd))
    return;
  auto text = body(st->opts.fmt, component, job_id, message, extra);
  st->records->log(spd, spdlog::string_view_t{text.data(), text.size()});
}

void announce(std::string_view component, std::string_view message,
              fields extra) {
  auto st = current();
  auto text = body(st->opts.fmt, component, {}, message, extra);
  st->announcements->log(spdlog::level::info,
                         spdlog::string_view_t{text.data(), text.size()});
}

void announce(std::string_view component, std::string_view message,
              const std::vector<field>& extra) {
  auto st = current();
  auto text = body(st->opts.fmt, component, {}, message, extra);
  st->announcements->log(spdlog::level::info,
                         spdlog::string_view_t{text.data(), text.size()});
}

std::string render(format fmt, std::string_view ts, level lv,
                   std::string_view component, std::string_view job_id,
                   std::string_view message, fields extra) {
  std::string line;
  wrap(line, fmt, ts, lv, body(fmt, component, job_id, message, extra));
  return line;
}

} // namespace drover::log
