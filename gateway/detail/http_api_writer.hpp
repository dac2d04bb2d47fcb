#pragma once

// The JSON writer the HTTP API's resources are written with, and what more
// than one resource shows of a job (its running stage, an ETA). Internal to
// gateway/http_api_jobs.cpp, gateway/http_api_admin.cpp and
// gateway/http_api_errors.cpp; the contract is gateway/http_api.hpp.

#include "gateway/http_api.hpp"

#include "runtime/json_text.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace drover::http::api_detail {

// -- writing ------------------------------------------------------------------

/// A minimal JSON writer: keys and values in order, commas handled.
class writer {
public:
  writer& open_object() {
    return open('{');
  }
  writer& close_object() {
    return close('}');
  }
  writer& open_array() {
    return open('[');
  }
  writer& close_array() {
    return close(']');
  }
  writer& key(std::string_view k) {
    separate();
    out_ += json_quote(k);
    out_ += ':';
    after_key_ = true;
    return *this;
  }
  writer& str(std::string_view v) {
    separate();
    out_ += json_quote(v);
    return *this;
  }
  writer& num(int64_t v) {
    separate();
    out_ += std::to_string(v);
    return *this;
  }
  writer& num(double v) {
    separate();
    if (!std::isfinite(v)) {
      out_ += "null";
    } else {
      char buf[32];
      std::snprintf(buf, sizeof(buf), "%.6g", v);
      out_ += buf;
    }
    return *this;
  }
  writer& boolean(bool v) {
    separate();
    out_ += v ? "true" : "false";
    return *this;
  }
  writer& null() {
    separate();
    out_ += "null";
    return *this;
  }
  /// Embeds JSON text as it is ("" = null).
  writer& raw(std::string_view json_text) {
    separate();
    if (json_text.empty())
      out_ += "null";
    else
      out_ += json_text;
    return *this;
  }
  /// A time, or null when 0.
  writer& time(int64_t unix_ms) {
    return unix_ms == 0 ? null() : str(rfc3339(unix_ms));
  }
  std::string take() {
    return std::move(out_);
  }

private:
  writer& open(char bracket) {
    separate();
    out_ += bracket;
    first_.push_back(true);
    return *this;
  }
  writer& close(char bracket) {
    out_ += bracket;
    first_.pop_back();
    return *this;
  }
  void separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_.empty()) {
      if (!first_.back())
        out_ += ',';
      first_.back() = false;
    }
  }
  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

inline void write_eta(writer& w, int64_t eta_ms) {
  if (eta_ms < 0)
    w.null();
  else
    w.num(static_cast<double>(eta_ms) / 1000.0);
}

inline std::string running_stage(const std::vector<stage>& stages) {
  for (auto& s : stages)
    if (s.state == stage_state::running)
      return s.name;
  return {};
}

} // namespace drover::http::api_detail
