#pragma once

// Reads a Prometheus text exposition the way a scraper does: with the
// Prometheus client library's own parser (tests/support/parse_metrics.py,
// Debian python3-prometheus-client), never with a copy of our writer.
// Needs DROVER_TEST_SUPPORT_DIR (the folder of the script).

#include "support/process.hpp"
#include "support/scratch.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace drover::testing {

/// Parses `text`: sample name -> (labels "k=v,..." sorted -> value as the
/// parser prints it, e.g. "2.0"), and the type of its family under
/// "#type <sample name>". Text that does not parse fails the test.
inline std::map<std::string, std::map<std::string, std::string>>
parse_metrics(const std::string& text) {
  scratch_dir dir{"drover-metrics"};
  auto path = dir.path() + "/metrics.txt";
  {
    std::ofstream out{path};
    out << text;
  }
  auto [rc, out] = run_to_exit(
      {"/usr/bin/python3", DROVER_TEST_SUPPORT_DIR "/parse_metrics.py", path});
  INFO(out);
  REQUIRE(rc == 0);
  std::map<std::string, std::map<std::string, std::string>> found;
  std::istringstream lines{out};
  std::string line;
  while (std::getline(lines, line)) {
    std::vector<std::string> f;
    std::istringstream fields{line};
    std::string x;
    while (std::getline(fields, x, '\t'))
      f.push_back(x);
    REQUIRE(f.size() == 4);
    found[f[0]][f[2]] = f[3];
    found["#type " + f[0]][""] = f[1];
  }
  return found;
}

} // namespace drover::testing
