#pragma once

// One JSON log line (runtime/log.hpp) read back for tests by Boost.Property
// Tree's JSON parser: an independent reader (nothing of the logger's), whose
// \uXXXX decoding is right for control characters, U+FFFD and U+2028 (Cap'n
// Proto 0.9's decodeRaw is not, so support/json_value.hpp is not used here).
// Keeps the top-level members in order, duplicates included.

#ifndef BOOST_BIND_GLOBAL_PLACEHOLDERS
#define BOOST_BIND_GLOBAL_PLACEHOLDERS
#endif
#include <boost/property_tree/json_parser.hpp>
#include <boost/property_tree/ptree.hpp>

#include <catch2/catch.hpp>

#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace drover::testing {

struct log_record {
  /// Top-level members in the order written; values as text (numbers and
  /// booleans as written, strings decoded).
  std::vector<std::pair<std::string, std::string>> members;

  /// The value of `key`; a missing key fails the test.
  const std::string& operator[](const std::string& key) const {
    for (const auto& m : members)
      if (m.first == key)
        return m.second;
    FAIL("no member '" << key << "' in the record");
    static const std::string none;
    return none;
  }

  bool has(const std::string& key) const {
    for (const auto& m : members)
      if (m.first == key)
        return true;
    return false;
  }

  /// Parses one line; anything but a JSON object of scalars fails the test.
  static log_record parse(const std::string& line) {
    INFO(line);
    boost::property_tree::ptree tree;
    std::istringstream in{line};
    try {
      boost::property_tree::read_json(in, tree);
    } catch (const boost::property_tree::json_parser_error& e) {
      FAIL("not JSON: " << e.what());
    }
    log_record out;
    for (const auto& [key, child] : tree) {
      REQUIRE(!key.empty());  // an array has unnamed members
      REQUIRE(child.empty()); // scalars only
      out.members.emplace_back(key, child.data());
    }
    REQUIRE(line.size() >= 2);
    REQUIRE(line.front() == '{');
    REQUIRE(line.back() == '}');
    return out;
  }
};

} // namespace drover::testing
