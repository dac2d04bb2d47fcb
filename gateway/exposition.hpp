#pragma once

// The Prometheus text exposition format (version 0.0.4) as Drover writes
// it: one family at a time, HELP and TYPE lines before its samples, label
// values escaped. Shared by the writers of gateway/metrics.hpp; not an API
// of its own.

#include "runtime/job_api.hpp"

#include <array>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>

namespace drover::http::detail {

/// A label value, escaped as the text format wants (\\, \", \n).
inline std::string label(const char* name, std::string_view value) {
  std::string out = name;
  out += "=\"";
  for (char c : value) {
    if (c == '\\' || c == '"')
      out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + '"';
}

inline constexpr const char* priority_labels[]
    = {"priority=\"high\"", "priority=\"normal\"", "priority=\"low\""};

/// One metric family: HELP, TYPE and its samples.
class exposition {
public:
  void family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << '\n'
         << "# TYPE " << name << ' ' << type << '\n';
  }

  void sample(const char* name, uint64_t value, const char* labels = nullptr) {
    start(name, labels);
    out_ << value << '\n';
  }

  /// Milliseconds are the finest unit here: three decimals.
  void sample(const char* name, double value, const char* labels = nullptr) {
    sample(name, value, std::string{labels == nullptr ? "" : labels});
  }

  void sample(const char* name, double value, const std::string& labels) {
    if (labels.empty()) {
      start(name, nullptr);
    } else {
      start(name, labels.c_str());
    }
    char buf[64];
    std::snprintf(buf, sizeof(buf), "%.3f", value);
    out_ << buf << '\n';
  }

  /// A family of one unlabelled sample.
  template <class T>
  void one(const char* name, const char* type, const char* help, T value) {
    family(name, type, help);
    sample(name, value);
  }

  /// A family with one sample per priority (label `priority`).
  template <class T>
  void per_priority(const char* name, const char* type, const char* help,
                    const std::array<T, 3>& values) {
    family(name, type, help);
    for (size_t i = 0; i < 3; ++i)
      sample(name, values[i], priority_labels[i]);
  }

  /// A histogram family in seconds from per-bucket counts of
  /// latency_bounds_ms (cumulative here, as the format wants).
  void histogram(const char* name, const char* help,
                 const latency_histogram& h) {
    family(name, "histogram", help);
    std::string base = name;
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= latency_bounds_ms.size(); ++i) {
      auto add = i < h.counts.size() ? h.counts[i] : 0;
      // Saturating: counts from another node are not trusted to be sane.
      cumulative
          = add > UINT64_MAX - cumulative ? UINT64_MAX : cumulative + add;
      char le[32];
      if (i < latency_bounds_ms.size())
        std::snprintf(le, sizeof le, "le=\"%g\"",
                      static_cast<double>(latency_bounds_ms[i]) / 1000.0);
      else
        std::snprintf(le, sizeof le, "le=\"+Inf\"");
      sample((base + "_bucket").c_str(), cumulative, le);
    }
    sample((base + "_sum").c_str(), static_cast<double>(h.sum_ms) / 1000.0);
    sample((base + "_count").c_str(), h.count());
  }

  std::string take() {
    return out_.str();
  }

private:
  void start(const char* name, const char* labels) {
    out_ << name;
    if (labels != nullptr)
      out_ << '{' << labels << '}';
    out_ << ' ';
  }

  std::ostringstream out_;
};

} // namespace drover::http::detail
