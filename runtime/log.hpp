#pragma once

// The project's one logger: structured records, one line each, written
// whole (one write(2) per line, under one lock) so lines from many threads
// never interleave. spdlog (Debian's libspdlog) formats the timestamp,
// filters by level and owns the sinks; this header keeps spdlog and CAF out
// of every translation unit that logs.
//
// A record: RFC 3339 UTC timestamp with milliseconds, level, component, the
// job id when there is one, a message and key=value fields.
//
//   text (default, for people):
//     2026-12-01T23:00:52.123Z warn queue: recovering failed job=0a1b
//     error="store unavailable"
//   json (one object per line, for machines):
//     {"ts":"2026-12-01T23:00:52.123Z","level":"warn","component":"queue","job":"0a1b","msg":"recovering
//     failed","error":"store unavailable"}
//
// Everything from outside (a job id, an error text, a URL) is escaped: in
// JSON as JSON strings (control bytes as \u00XX, invalid UTF-8 replaced by
// U+FFFD), in text with \n, \t, \xNN and quotes, so no value can start a new
// line or forge another record (log injection). Field keys that collide with
// a record key (ts, level, component, job, msg) are written as "field.<key>".
//
// Process-wide state, deliberately: the log is what std::cerr was. main()
// calls configure() once before it starts threads; until then (and in tests
// that never call it) records go to stderr as text at level info.
// Every function here is thread-safe.

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace drover::log {

enum class level : uint8_t { trace, debug, info, warn, error, off };

enum class format : uint8_t { text, json };

/// "trace", "debug", "info", "warn", "error", "off".
std::string_view to_string(level lv);
std::optional<level> parse_level(std::string_view name);
/// "text" or "json".
std::optional<format> parse_format(std::string_view name);

/// One key=value of a record. The value is kept as text; numbers and
/// booleans are written unquoted in JSON. `key` must outlive the record
/// (string literals do).
class field {
public:
  field(std::string_view key, std::string_view value)
      : key_(key), value_(value) {}
  field(std::string_view key, const char* value)
      : key_(key), value_(value != nullptr ? value : "") {}
  field(std::string_view key, const std::string& value)
      : key_(key), value_(value) {}
  field(std::string_view key, bool value)
      : key_(key), value_(value ? "true" : "false"), bare_(true) {}
  template <class T,
            std::enable_if_t<
                std::is_integral_v<
                    T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>,
                int> = 0>
  field(std::string_view key, T value)
      : key_(key), value_(std::to_string(value)), bare_(true) {}
  field(std::string_view key, double value);

  std::string_view key() const {
    return key_;
  }
  const std::string& value() const {
    return value_;
  }
  /// True for numbers and booleans (unquoted in JSON).
  bool bare() const {
    return bare_;
  }

private:
  std::string_view key_;
  std::string value_;
  bool bare_ = false;
};

using fields = std::initializer_list<field>;

/// Names the job a record is about: `log::warn("queue", log::job{id}, ...)`.
struct job {
  std::string_view id;
};

struct options {
  level min_level = level::info;
  format fmt = format::text;
  /// Where records go (stderr by default). Not closed by the logger.
  int fd = 2;
  /// Where announce() goes (stdout by default).
  int announce_fd = 1;
};

/// Installs the process's logger (replacing the previous one). Records
/// already being written finish on the old one.
void configure(const options& opts);

/// Whether a record at `lv` would be written.
bool enabled(level lv);

/// Writes one record (if `lv` is enabled). `job_id` may be empty.
void write(level lv, std::string_view component, std::string_view job_id,
           std::string_view message, fields extra = {});

/// Writes one info record to the announce stream (stdout), whatever the
/// level: the node's "ready" and "stopped" lines, which scripts and tests
/// wait for, in the same format as the log.
void announce(std::string_view component, std::string_view message,
              fields extra = {});
/// The same, with fields gathered at run time.
void announce(std::string_view component, std::string_view message,
              const std::vector<field>& extra);

/// Renders one record as write() would (without the trailing newline), at
/// a fixed timestamp: the formatter's contract, for tests and tools.
std::string render(format fmt, std::string_view timestamp, level lv,
                   std::string_view component, std::string_view job_id,
                   std::string_view message, fields extra = {});

#define DROVER_LOG_LEVEL_FUNCTION(name)                                        \
  inline void name(std::string_view component, std::string_view message,       \
                   fields extra = {}) {                                        \
    write(level::name, component, {}, message, extra);                         \
  }                                                                            \
  inline void name(std::string_view component, job j,                          \
                   std::string_view message, fields extra = {}) {              \
    write(level::name, component, j.id, message, extra);                       \
  }

DROVER_LOG_LEVEL_FUNCTION(trace)
DROVER_LOG_LEVEL_FUNCTION(debug)
DROVER_LOG_LEVEL_FUNCTION(info)
DROVER_LOG_LEVEL_FUNCTION(warn)
DROVER_LOG_LEVEL_FUNCTION(error)

#undef DROVER_LOG_LEVEL_FUNCTION

} // namespace drover::log
