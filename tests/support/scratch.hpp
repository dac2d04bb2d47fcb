#pragma once

// Scratch directories and log tails for tests that run real processes.

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <system_error>

namespace drover::testing {

/// A directory under /tmp, removed with everything in it on destruction
/// (kept when DROVER_TEST_KEEP is set, to read a node's log afterwards).
class scratch_dir {
public:
  explicit scratch_dir(const char* prefix) {
    std::string tmpl = std::string{"/tmp/"} + prefix + "-XXXXXX";
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~scratch_dir() {
    if (const char* keep = std::getenv("DROVER_TEST_KEEP"); keep && *keep) {
      std::cout << "kept " << path_ << std::endl;
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  scratch_dir(const scratch_dir&) = delete;
  scratch_dir& operator=(const scratch_dir&) = delete;

  const std::string& path() const {
    return path_;
  }

private:
  std::string path_;
};

/// The last `bytes` of a file (a node's log, for failure messages).
inline std::string tail_of(const std::string& path, size_t bytes = 6000) {
  std::ifstream in{path, std::ios::binary};
  std::stringstream ss;
  ss << in.rdbuf();
  auto all = ss.str();
  return all.size() > bytes ? "..." + all.substr(all.size() - bytes) : all;
}

} // namespace drover::testing
