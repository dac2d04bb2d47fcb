// The JSON inputs of the built-in job types `exec` and `sleep`
// (runtime/detail/builtin_input.hpp): parsing, and the checks that need no
// node policy. docs/handlers.md is the user-facing contract; the handlers
// are in builtin_handlers.cpp.

#include "runtime/detail/builtin_input.hpp"

#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <initializer_list>
#include <map>

namespace drover::detail {
namespace {

using json_value = capnp::JsonValue;

/// Deep enough for every valid input of the built-in types.
constexpr uint32_t max_json_depth = 16;

/// sleep: upper bounds of its inputs.
constexpr int64_t max_sleep_ms = 86'400'000;
constexpr int64_t max_sleep_steps = 10'000;
constexpr int64_t max_sleep_tokens = 1'000'000;

} // namespace

// -- text helpers -------------------------------------------------------------

std::string quote_for_message(std::string_view str) {
  constexpr size_t max_bytes = 200;
  auto text = valid_utf8(str);
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7F)
      c = '?';
  if (text.size() > max_bytes) {
    auto cut = max_bytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
      --cut; // don't split a character
    text.resize(cut);
    text += "...";
  }
  return "'" + text + "'";
}

namespace {

// -- JSON input ---------------------------------------------------------------

/// Parses `text` into `message`; returns "" and sets `root`, or the reason
/// the text isn't acceptable JSON.
std::string parse_json(const std::string& text,
                       capnp::MallocMessageBuilder& message,
                       json_value::Reader& root) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    return "input must be a JSON object, got nothing";
  // Cap'n Proto 0.9.2 misreads \uXXXX escapes with hex letters
  // (runtime/json_text.hpp); the rewrite never makes the text longer.
  auto fixed = fix_unicode_escapes(text);
  capnp::JsonCodec codec;
  codec.setMaxNestingDepth(max_json_depth);
  auto builder = message.initRoot<json_value>();
  try {
    codec.decodeRaw(kj::ArrayPtr<const char>{fixed.data(), fixed.size()},
                    builder);
  } catch (const kj::Exception& ex) {
    // KJ prefixes the failed condition ("expected x == y; "): keep the
    // sentence meant for people.
    std::string description = ex.getDescription().cStr();
    auto sentence = description.rfind("; ");
    if (sentence != std::string::npos)
      description.erase(0, sentence + 2);
    return "input is not valid JSON: " + description;
  }
  root = builder.asReader();
  return {};
}

std::string_view kind_name(json_value::Reader value) {
  switch (value.which()) {
    case json_value::NULL_:
      return "null";
    case json_value::BOOLEAN:
      return "a boolean";
    case json_value::NUMBER:
      return "a number";
    case json_value::STRING:
      return "a string";
    case json_value::ARRAY:
      return "an array";
    case json_value::OBJECT:
      return "an object";
    default:
      return "a function call";
  }
}

std::string to_std_string(capnp::Text::Reader text) {
  return std::string{text.begin(), text.size()};
}

/// The members of the object `value`; rejects other kinds of values,
/// duplicate keys and keys not in `allowed`.
std::string object_members(json_value::Reader value,
                           std::initializer_list<std::string_view> allowed,
                           std::map<std::string, json_value::Reader>& out) {
  if (!value.isObject())
    return "input must be a JSON object, got " + std::string{kind_name(value)};
  for (auto member : value.getObject()) {
    auto name = to_std_string(member.getName());
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string expected;
      for (auto key : allowed)
        expected += (expected.empty() ? "" : ", ") + std::string{key};
      return "unknown key " + quote_for_message(name)
             + " (expected: " + expected + ")";
    }
    if (!out.emplace(name, member.getValue()).second)
      return "duplicate key " + quote_for_message(name);
  }
  return {};
}

/// `value` as an integer within [lo, hi], or the reason it isn't one.
std::string read_integer(json_value::Reader value, std::string_view name,
                         int64_t lo, int64_t hi, int64_t& out) {
  auto expected = std::string{name} + " must be an integer in ["
                  + std::to_string(lo) + ", " + std::to_string(hi) + "], got ";
  if (!value.isNumber())
    return expected + std::string{kind_name(value)};
  auto number = value.getNumber();
  if (!std::isfinite(number) || number != std::floor(number)
      || number < static_cast<double>(lo) || number > static_cast<double>(hi)) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.15g", number);
    return expected + buf;
  }
  out = static_cast<int64_t>(number);
  return {};
}

/// `value` as a string free of NUL characters (argv, env and cwd end up as
/// C strings).
std::string read_c_string(json_value::Reader value, const std::string& name,
                          std::string& out) {
  if (!value.isString())
    return name + " must be a string, got " + std::string{kind_name(value)};
  out = to_std_string(value.getString());
  if (out.find('\0') != std::string::npos)
    return name + " contains a NUL character";
  return {};
}

// -- exec ---------------------------------------------------------------------

/// The optional "limits" object: each member an integer >= 1 (whether it
/// is within the node's limits is exec_check's decision).
std::string parse_exec_limits(json_value::Reader value,
                              exec_limit_request& out) {
  std::map<std::string, json_value::Reader> members;
  if (!value.isObject())
    return "limits must be an object, got " + std::string{kind_name(value)};
  if (auto err = object_members(
          value, {"cpu_seconds", "address_space_mb", "open_files", "processes"},
          members);
      !err.empty())
    return "limits: " + err;
  for (auto& [name, member] : members) {
    int64_t number = 0;
    if (auto err
        = read_integer(member, "limits." + name, 1, int64_t{1} << 40, number);
        !err.empty())
      return err;
    auto& slot = name == "cpu_seconds"        ? out.cpu_seconds
                 : name == "address_space_mb" ? out.address_space_mb
                 : name == "open_files"       ? out.open_files
                                              : out.processes;
    slot = static_cast<uint64_t>(number);
  }
  return {};
}

} // namespace

std::string parse_exec_input(const std::string& input, exec_request& spec) {
  capnp::MallocMessageBuilder message;
  json_value::Reader root;
  if (auto err = parse_json(input, message, root); !err.empty())
    return err;
  std::map<std::string, json_value::Reader> members;
  if (auto err = object_members(root, {"argv", "env", "cwd", "stdin", "limits"},
                                members);
      !err.empty())
    return err;
  auto argv = members.find("argv");
  if (argv == members.end())
    return "'argv' is required: the program and its arguments, e.g. "
           "{\"argv\": [\"ls\", \"-l\"]}";
  if (!argv->second.isArray())
    return "argv must be an array of strings, got "
           + std::string{kind_name(argv->second)};
  auto args = argv->second.getArray();
  if (args.size() == 0)
    return "argv must not be empty: its first element is the program";
  for (unsigned i = 0; i < args.size(); ++i) {
    std::string arg;
    auto name = "argv[" + std::to_string(i) + "]";
    if (auto err = read_c_string(args[i], name, arg); !err.empty())
      return err;
    spec.argv.push_back(std::move(arg));
  }
  if (spec.argv[0].empty())
    return "argv[0] (the program) must not be empty";
  if (auto env = members.find("env"); env != members.end()) {
    if (!env->second.isObject())
      return "env must be an object of strings, got "
             + std::string{kind_name(env->second)};
    for (auto variable : env->second.getObject()) {
      auto name = to_std_string(variable.getName());
      if (name.empty())
        return "env names must not be empty";
      if (name.find('\0') != std::string::npos)
        return "env name " + quote_for_message(name)
               + " contains a NUL character";
      if (name.find('=') != std::string::npos)
        return "env name " + quote_for_message(name) + " must not contain '='";
      for (const auto& seen : spec.env)
        if (seen.first == name)
          return "env name " + quote_for_message(name) + " appears twice";
      std::string value;
      if (auto err
          = read_c_string(variable.getValue(),
                          "env value of " + quote_for_message(name), value);
          !err.empty())
        return err;
      spec.env.emplace_back(std::move(name), std::move(value));
    }
  }
  if (auto cwd = members.find("cwd"); cwd != members.end()) {
    if (auto err = read_c_string(cwd->second, "cwd", spec.cwd); !err.empty())
      return err;
    if (spec.cwd.empty())
      return "cwd must not be empty (omit it to keep the node's)";
  }
  if (auto in = members.find("stdin"); in != members.end()) {
    if (!in->second.isString())
      return "stdin must be a string, got "
             + std::string{kind_name(in->second)};
    spec.stdin_text = to_std_string(in->second.getString());
  }
  if (auto limits = members.find("limits"); limits != members.end())
    return parse_exec_limits(limits->second, spec.requested);
  return {};
}

// -- sleep --------------------------------------------------------------------

std::string parse_sleep_input(const std::string& input, sleep_request& req) {
  capnp::MallocMessageBuilder message;
  json_value::Reader root;
  if (auto err = parse_json(input, message, root); !err.empty())
    return err;
  std::map<std::string, json_value::Reader> members;
  if (auto err = object_members(root, {"ms", "steps", "tokens"}, members);
      !err.empty())
    return err;
  auto ms = members.find("ms");
  if (ms == members.end())
    return "'ms' is required: how long to sleep, in milliseconds";
  if (auto err = read_integer(ms->second, "ms", 0, max_sleep_ms, req.ms);
      !err.empty())
    return err;
  if (auto steps = members.find("steps"); steps != members.end())
    if (auto err
        = read_integer(steps->second, "steps", 0, max_sleep_steps, req.steps);
        !err.empty())
      return err;
  if (auto tokens = members.find("tokens"); tokens != members.end())
    if (auto err = read_integer(tokens->second, "tokens", 0, max_sleep_tokens,
                                req.tokens);
        !err.empty())
      return err;
  return {};
}

} // namespace drover::detail
