// The logger (runtime/log.hpp): the line format in text and JSON with
// hostile strings (log injection), levels, the announce stream, and whole
// lines under many concurrent writers. JSON lines are read back with
// Boost.PropertyTree's JSON parser (tests/support/log_record.hpp), not with
// anything of the logger's.

#include "runtime/log.hpp"

#include "support/log_record.hpp"
#include "support/scratch.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace drover;
using drover::testing::log_record;

namespace {

const std::string ts = "2026-12-01T23:00:52.123Z";

/// Strings a client controls (a job id, an error text, a URL) at their worst.
const std::string hostile_message
    = "first line\nsecond line\r\"quoted\" back\\slash \x01\x1f\x7f tab\there";
const std::string hostile_job = "j\"}\n{\"level\":\"error\",\"msg\":\"forged";
/// Not UTF-8: an overlong '/', a lone continuation byte, 0xFF.
const std::string invalid_utf8 = "\xc0\xaf-\x80-\xff";
const std::string line_separator = "a\xe2\x80\xa8z"; // U+2028

/// No byte that could end or split a line, and no other control byte.
bool one_clean_line(const std::string& line) {
  for (auto ch : line) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F)
      return false;
  }
  return line.find("\xe2\x80\xa8") == std::string::npos
         && line.find("\xe2\x80\xa9") == std::string::npos;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line))
    out.push_back(line);
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in{path, std::ios::binary};
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// The logger writing into a fresh file; restores the default (stderr,
/// text, info) when it goes.
class captured_log {
public:
  explicit captured_log(log::format fmt, log::level min = log::level::trace)
      : dir_("drover-log") {
    path_ = dir_.path() + "/records";
    announce_path_ = dir_.path() + "/announce";
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                 0644);
    announce_fd_ = ::open(announce_path_.c_str(),
                          O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    REQUIRE(fd_ >= 0);
    REQUIRE(announce_fd_ >= 0);
    log::options opts;
    opts.fmt = fmt;
    opts.min_level = min;
    opts.fd = fd_;
    opts.announce_fd = announce_fd_;
    log::configure(opts);
  }

  ~captured_log() {
    log::configure(log::options{});
    ::close(fd_);
    ::close(announce_fd_);
  }

  std::string records() const {
    return read_file(path_);
  }

  std::string announcements() const {
    return read_file(announce_path_);
  }

private:
  drover::testing::scratch_dir dir_;
  std::string path_;
  std::string announce_path_;
  int fd_ = -1;
  int announce_fd_ = -1;
};

} // namespace

TEST_CASE("a text record is one line: timestamp, level, component, message, "
          "job and fields",
          "[log]") {
  auto line = log::render(log::format::text, ts, log::level::warn, "queue",
                          "0a1b2c", "recovering failed",
                          {{"error", "store unavailable"},
                           {"attempt", 3},
                           {"ok", false},
                           {"ratio", 0.5}});
  CHECK(line
        == "2026-12-01T23:00:52.123Z warn queue: recovering failed job=0a1b2c "
           "error=\"store unavailable\" attempt=3 ok=false ratio=0.5");
  // No job: no job field.
  CHECK(
      log::render(log::format::text, ts, log::level::info, "node", {}, "ready")
      == "2026-12-01T23:00:52.123Z info node: ready");
}

TEST_CASE("hostile strings cannot break a text line or forge fields",
          "[log][injection]") {
  auto line = log::render(log::format::text, ts, log::level::error, "gateway",
                          hostile_job, hostile_message,
                          {{"url", invalid_utf8},
                           {"sep", line_separator},
                           {"level", "debug"},
                           {"weird key=x", "v"},
                           {"empty", ""}});
  INFO(line);
  CHECK(one_clean_line(line));
  // Control bytes are escaped where they were.
  CHECK(line.find("first line\\nsecond line\\r") != std::string::npos);
  CHECK(line.find("\\x01\\x1f\\x7f tab\\there") != std::string::npos);
  // A value with quotes is quoted and its quotes escaped: the forged
  // "level" stays inside job=.
  CHECK(line.find(" job=\"j\\\"}\\n{\\\"level\\\":\\\"error\\\",")
        != std::string::npos);
  // Bytes that are not UTF-8 are shown as escapes, never passed through.
  CHECK(line.find("url=\"\\xc0\\xaf-\\x80-\\xff\"") != std::string::npos);
  CHECK(line.find("sep=\"a\\xe2\\x80\\xa8z\"") != std::string::npos);
  // A field named like a record key cannot pose as one; keys are words.
  CHECK(line.find(" field.level=debug") != std::string::npos);
  CHECK(line.find(" weird_key_x=v") != std::string::npos);
  CHECK(line.find(" empty=\"\"") != std::string::npos);
  CHECK(line.rfind("2026-12-01T23:00:52.123Z error gateway: ", 0) == 0);
}

TEST_CASE("a JSON record is one object whose strings read back exactly",
          "[log][json][injection]") {
  auto line = log::render(log::format::json, ts, log::level::warn, "queue",
                          hostile_job, hostile_message,
                          {{"attempt", 3},
                           {"ok", true},
                           {"ratio", 0.25},
                           {"nan", std::nan("")},
                           {"url", invalid_utf8},
                           {"sep", line_separator},
                           {"msg", "forged message"},
                           {"quote\"key", "v"}});
  INFO(line);
  CHECK(one_clean_line(line));
  auto doc = log_record::parse(line);
  // The record's own keys first, each once.
  auto& members = doc.members;
  REQUIRE(members.size() == 13);
  CHECK(members[0].first == "ts");
  CHECK(members[1].first == "level");
  CHECK(members[2].first == "component");
  CHECK(members[3].first == "job");
  CHECK(members[4].first == "msg");
  std::set<std::string> keys;
  for (auto& m : members)
    CHECK(keys.insert(m.first).second);
  CHECK(doc["ts"] == ts);
  CHECK(doc["level"] == "warn");
  CHECK(doc["component"] == "queue");
  // Valid UTF-8, control bytes included, reads back byte for byte.
  CHECK(doc["job"] == hostile_job);
  CHECK(doc["msg"] == hostile_message);
  CHECK(doc["sep"] == line_separator);
  // Numbers and booleans are JSON numbers and booleans; NaN is a string.
  CHECK(line.find(R"("attempt":3,"ok":true,"ratio":0.25,"nan":"nan",)")
        != std::string::npos);
  // Each byte that is not UTF-8 becomes U+FFFD.
  CHECK(doc["url"] == "\xef\xbf\xbd\xef\xbf\xbd-\xef\xbf\xbd-\xef\xbf\xbd");
  // A field named like a record key does not replace it.
  CHECK(doc["field.msg"] == "forged message");
  CHECK(doc["quote\"key"] == "v");
}

TEST_CASE("levels filter records, announcements are always written", "[log]") {
  CHECK(log::parse_level("warn") == log::level::warn);
  CHECK(log::parse_level("warning") == std::nullopt);
  CHECK(log::parse_format("json") == log::format::json);
  CHECK(log::parse_format("xml") == std::nullopt);
  captured_log captured{log::format::text, log::level::warn};
  CHECK_FALSE(log::enabled(log::level::info));
  CHECK(log::enabled(log::level::error));
  log::debug("test", "dropped debug");
  log::info("test", "dropped info");
  log::warn("test", log::job{"j1"}, "kept warn", {{"n", 1}});
  log::error("test", "kept error");
  log::announce("node", "ready", {{"admin", "127.0.0.1:1"}});
  auto records = lines_of(captured.records());
  REQUIRE(records.size() == 2);
  // RFC 3339 UTC with milliseconds, then the level.
  std::regex text_line{
      R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (warn|error) test: .*$)"};
  CHECK(std::regex_match(records[0], text_line));
  CHECK(records[0].find(" warn test: kept warn job=j1 n=1")
        != std::string::npos);
  CHECK(records[1].find(" error test: kept error") != std::string::npos);
  auto announced = lines_of(captured.announcements());
  REQUIRE(announced.size() == 1);
  CHECK(announced[0].find(" info node: ready admin=127.0.0.1:1")
        != std::string::npos);
}

TEST_CASE("lines stay whole under many concurrent writers", "[log][json]") {
  constexpr int threads = 16;
  constexpr int per_thread = 400;
  captured_log captured{log::format::json};
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([t] {
      // Long, hostile records: a torn write would show as a broken line.
      std::string padding(300 + 37 * t, 'x');
      for (int i = 0; i < per_thread; ++i)
        log::warn("writer-" + std::to_string(t), log::job{hostile_job},
                  hostile_message,
                  {{"thread", t}, {"seq", i}, {"padding", padding}});
    });
  for (auto& w : writers)
    w.join();
  auto lines = lines_of(captured.records());
  REQUIRE(lines.size() == size_t{threads} * per_thread);
  std::regex rfc3339{R"(^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$)"};
  std::set<std::pair<int, int>> seen;
  for (const auto& line : lines) {
    REQUIRE(one_clean_line(line));
    auto doc = log_record::parse(line);
    REQUIRE(std::regex_match(doc["ts"], rfc3339));
    REQUIRE(doc["level"] == "warn");
    REQUIRE(doc["msg"] == hostile_message);
    REQUIRE(doc["job"] == hostile_job);
    auto t = std::stoi(doc["thread"]);
    REQUIRE(doc["component"] == "writer-" + std::to_string(t));
    REQUIRE(doc["padding"].size() == size_t(300 + 37 * t));
    REQUIRE(seen.emplace(t, std::stoi(doc["seq"])).second);
  }
  CHECK(seen.size() == size_t{threads} * per_thread);
}
