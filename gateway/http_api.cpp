// The HTTP API's request bodies (gateway/http_api.hpp): submissions,
// batches, cancel and retry reasons, flow settings and WebSocket commands,
// parsed strictly, naming the offending field. The resources written back
// are gateway/http_api_jobs.cpp's and gateway/http_api_admin.cpp's; errors
// are mapped to HTTP by gateway/http_api_errors.cpp.

#include "gateway/http_api.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <optional>

namespace drover::http {

namespace {

using json = capnp::JsonValue;

caf::error bad(std::string_view field, std::string_view what) {
  return make_error(errc::invalid_request,
                    std::string{field} + ": " + std::string{what});
}

/// Parses `text` into `out` after the codec's size and depth checks.
caf::error parse_json(std::string_view text, const decode_limits& limits,
                      capnp::MallocMessageBuilder& message, json::Reader& out) {
  if (auto err = validate_json(text, limits))
    return err;
  // Strictly, on the whole body: invalid UTF-8, NUL, unpaired surrogates
  // and duplicate names anywhere (nested input included) are refused here,
  // naming the field, before anything can reach the store.
  if (auto err = check_json_strict(text, limits.max_json_depth, ""))
    return err;
  caf::error result;
  auto failure = kj::runCatchingExceptions([&] {
    auto fixed = fix_unicode_escapes(text);
    capnp::JsonCodec codec;
    codec.setMaxNestingDepth(limits.max_json_depth);
    auto root = message.initRoot<json>();
    codec.decodeRaw(kj::ArrayPtr<const char>{fixed.data(), fixed.size()}, root);
  });
  if (failure != nullptr)
    return make_error(errc::malformed, "the body is not valid JSON");
  out = message.getRoot<json>().asReader();
  return {};
}

/// JSON text of a parsed value (payloads are kept as text).
std::string encode_raw(json::Reader value) {
  std::string out;
  auto failure = kj::runCatchingExceptions([&] {
    capnp::JsonCodec codec;
    auto text = codec.encodeRaw(value);
    out.assign(text.cStr(), text.size());
  });
  if (failure != nullptr)
    out.clear();
  return out;
}

caf::expected<std::string> get_text(std::string_view field, json::Reader v) {
  if (v.which() != json::STRING)
    return bad(field, "expected a string");
  auto text = v.getString();
  return std::string{text.cStr(), text.size()};
}

caf::expected<int64_t> get_integer(std::string_view field, json::Reader v,
                                   int64_t min, int64_t max) {
  if (v.which() != json::NUMBER)
    return bad(field, "expected an integer");
  auto x = v.getNumber();
  if (!std::isfinite(x) || std::trunc(x) != x)
    return bad(field, "expected an integer");
  if (x < static_cast<double>(min) || x > static_cast<double>(max))
    return bad(field, "must be between " + std::to_string(min) + " and "
                          + std::to_string(max));
  return static_cast<int64_t>(x);
}

caf::expected<double> get_number(std::string_view field, json::Reader v,
                                 double min, double max) {
  if (v.which() != json::NUMBER)
    return bad(field, "expected a number");
  auto x = v.getNumber();
  if (!std::isfinite(x) || x < min || x > max) {
    char buf[96];
    std::snprintf(buf, sizeof(buf), "must be between %g and %g", min, max);
    return bad(field, buf);
  }
  return x;
}

/// Seconds (a number, fractions allowed) as milliseconds.
caf::expected<int64_t> get_seconds_ms(std::string_view field, json::Reader v,
                                      double max_seconds) {
  auto s = get_number(field, v, 0, max_seconds);
  if (!s)
    return s.error();
  return static_cast<int64_t>(std::llround(*s * 1000.0));
}

std::string field_name(json::Field::Reader f) {
  auto name = f.getName();
  return std::string{name.cStr(), name.size()};
}

caf::error read_backoff(json::Reader v, backoff_policy& out) {
  if (v.which() != json::OBJECT)
    return bad("backoff", "expected an object");
  for (auto f : v.getObject()) {
    auto name = field_name(f);
    auto value = f.getValue();
    auto path = "backoff." + name;
    if (name == "initial_seconds") {
      auto ms = get_seconds_ms(path, value, 86400.0 * 7);
      if (!ms)
        return ms.error();
      out.initial_delay_ms = *ms;
    } else if (name == "max_seconds") {
      auto ms = get_seconds_ms(path, value, 86400.0 * 7);
      if (!ms)
        return ms.error();
      out.max_delay_ms = *ms;
    } else if (name == "multiplier") {
      auto x = get_number(path, value, 1.0, 100.0);
      if (!x)
        return x.error();
      out.multiplier = *x;
    } else if (name == "jitter") {
      auto x = get_number(path, value, 0.0, 1.0);
      if (!x)
        return x.error();
      out.jitter = *x;
    } else {
      return bad(path, "unknown field");
    }
  }
  return {};
}

caf::expected<submit_request> read_submit(json::Reader root,
                                          const std::string& prefix) {
  if (root.which() != json::OBJECT)
    return bad(prefix.empty() ? "body" : prefix, "expected a JSON object");
  submit_request req;
  bool has_type = false;
  for (auto f : root.getObject()) {
    auto name = field_name(f);
    auto value = f.getValue();
    auto path = prefix + name;
    // null = not given, as with every optional field.
    if (value.which() == json::NULL_)
      continue;
    caf::error err;
    auto text = [&](std::string& dest) {
      auto x = get_text(path, value);
      if (x)
        dest = std::move(*x);
      else
        err = x.error();
    };
    if (name == "type") {
      text(req.type);
      has_type = true;
    } else if (name == "input") {
      req.input = encode_raw(value);
    } else if (name == "priority") {
      std::string p;
      text(p);
      drover::priority prio;
      if (!err) {
        if (p == "high" || p == "normal" || p == "low") {
          from_string(p, prio);
          req.priority = static_cast<int32_t>(prio);
        } else {
          err = bad(path, "expected \"high\", \"normal\" or \"low\"");
        }
      }
    } else if (name == "run_at") {
      std::string t;
      text(t);
      if (!err)
        req.run_at = std::move(t);
    } else if (name == "delay_seconds") {
      auto ms = get_seconds_ms(path, value, 366.0 * 86400);
      if (ms)
        req.delay_ms = *ms;
      else
        err = ms.error();
    } else if (name == "max_attempts") {
      auto n = get_integer(path, value, 1, std::numeric_limits<int32_t>::max());
      if (n)
        req.max_attempts = static_cast<int32_t>(*n);
      else
        err = n.error();
    } else if (name == "timeout_seconds") {
      auto ms = get_seconds_ms(path, value, 366.0 * 86400);
      if (ms && *ms <= 0)
        err = bad(path, "must be positive");
      else if (ms)
        req.timeout_ms = *ms;
      else
        err = ms.error();
    } else if (name == "idempotency_key") {
      text(req.idempotency_key);
      if (!err && req.idempotency_key.empty())
        err = bad(path, "must not be empty (omit it or use null for none)");
    } else if (name == "callback_url") {
      text(req.callback_url);
    } else if (name == "rate_limit_key") {
      text(req.rate_limit_key);
    } else if (name == "rate_limit_keys") {
      if (value.which() != json::ARRAY
          || value.getArray().size() > max_rate_limit_keys) {
        err = bad(path, "expected an array of at most "
                            + std::to_string(max_rate_limit_keys) + " strings");
      } else {
        for (auto k : value.getArray()) {
          auto x = get_text(path, k);
          if (!x) {
            err = x.error();
            break;
          }
          req.rate_limit_keys.push_back(std::move(*x));
        }
      }
    } else if (name == "breaker_key") {
      text(req.breaker_key);
    } else if (name == "concurrency_key") {
      text(req.concurrency_key);
    } else if (name == "concurrency_limit") {
      auto n = get_integer(path, value, 1, 1'000'000);
      if (n)
        req.concurrency_limit = *n;
      else
        err = n.error();
    } else if (name == "resources") {
      if (value.which() != json::OBJECT) {
        err = bad(path, "expected an object such as {\"gpu\": 1}");
      } else {
        for (auto r : value.getObject()) {
          auto n = get_integer(path + "." + field_name(r), r.getValue(), 1,
                               1'000'000);
          if (!n) {
            err = n.error();
            break;
          }
          req.resources.push_back(
              resource_request{field_name(r), static_cast<uint32_t>(*n)});
        }
      }
    } else if (name == "backoff") {
      backoff_policy b;
      err = read_backoff(value, b);
      if (!err)
        req.backoff = b;
    } else if (name == "tenant") {
      err = bad(path, "the tenant comes from the API key, not the body");
    } else {
      err = bad(path, "unknown field");
    }
    if (err)
      return err;
  }
  if (!has_type || req.type.empty())
    return bad(prefix + "type", "required");
  return req;
}

} // namespace

caf::expected<submit_request> parse_submit(std::string_view body,
                                           const decode_limits& limits) {
  capnp::MallocMessageBuilder message;
  json::Reader root;
  if (auto err = parse_json(body, limits, message, root))
    return err;
  return read_submit(root, "");
}

caf::expected<std::vector<batch_item>> parse_batch(std::string_view body,
                                                   const decode_limits& limits,
                                                   size_t max_items) {
  capnp::MallocMessageBuilder message;
  json::Reader root;
  if (auto err = parse_json(body, limits, message, root))
    return err;
  if (root.which() != json::OBJECT)
    return bad("body", "expected {\"jobs\": [...]}");
  bool seen = false;
  std::vector<batch_item> items;
  for (auto f : root.getObject()) {
    auto name = field_name(f);
    if (name != "jobs")
      return bad(name, "unknown field");
    auto value = f.getValue();
    if (value.which() != json::ARRAY)
      return bad("jobs", "expected an array");
    auto list = value.getArray();
    if (list.size() == 0)
      return bad("jobs", "at least one job is required");
    if (list.size() > max_items)
      return make_error(errc::too_large, "jobs: " + std::to_string(list.size())
                                             + " items, the limit is "
                                             + std::to_string(max_items));
    items.reserve(list.size());
    for (uint32_t i = 0; i < list.size(); ++i) {
      auto req = read_submit(list[i], "jobs[" + std::to_string(i) + "].");
      batch_item item;
      if (req)
        item.request = std::move(*req);
      else
        item.error = std::move(req.error());
      items.push_back(std::move(item));
    }
    seen = true;
  }
  if (!seen)
    return bad("jobs", "required");
  return items;
}

namespace {

/// The one text field `field` of a JSON object body (nullopt when it is
/// not there), at most 1024 bytes; any other field is refused.
caf::expected<std::optional<std::string>>
only_text_field(std::string_view body, const decode_limits& limits,
                const char* field) {
  capnp::MallocMessageBuilder message;
  json::Reader root;
  if (auto err = parse_json(body, limits, message, root))
    return err;
  if (root.which() != json::OBJECT)
    return bad("body", "expected a JSON object");
  std::optional<std::string> out;
  for (auto f : root.getObject()) {
    auto name = field_name(f);
    if (name != field)
      return bad(name, "unknown field");
    auto text = get_text(field, f.getValue());
    if (!text)
      return text.error();
    if (text->size() > 1024)
      return bad(field, "at most 1024 bytes");
    out = std::move(*text);
  }
  return out;
}

} // namespace

caf::expected<std::string> parse_reason(std::string_view body,
                                        const decode_limits& limits) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return std::string{};
  auto reason = only_text_field(body, limits, "reason");
  if (!reason)
    return std::move(reason.error());
  return reason->value_or(std::string{});
}

caf::expected<std::string> parse_flow_spec(std::string_view body,
                                           const decode_limits& limits) {
  auto spec = only_text_field(body, limits, "spec");
  if (!spec)
    return std::move(spec.error());
  if (!*spec || (*spec)->empty())
    return bad("spec", "required, e.g. {\"spec\": \"rate=14,burst=14\"}");
  return std::move(**spec);
}

caf::expected<ws_command> parse_ws_command(std::string_view text,
                                           const decode_limits& limits) {
  capnp::MallocMessageBuilder message;
  json::Reader root;
  if (auto err = parse_json(text, limits, message, root))
    return err;
  if (root.which() != json::OBJECT)
    return bad("message", "expected a JSON object");
  ws_command cmd;
  bool has_action = false;
  for (auto f : root.getObject()) {
    auto name = field_name(f);
    auto value = f.getValue();
    if (name == "action") {
      auto a = get_text(name, value);
      if (!a)
        return a.error();
      if (*a == "subscribe")
        cmd.subscribe = true;
      else if (*a == "unsubscribe")
        cmd.subscribe = false;
      else
        return bad(name, "expected \"subscribe\" or \"unsubscribe\"");
      has_action = true;
    } else if (name == "job_id") {
      auto id = get_text(name, value);
      if (!id)
        return id.error();
      cmd.job_id = std::move(*id);
    } else if (name == "last_event_id") {
      auto n = get_integer(name, value, 0, int64_t{1} << 53);
      if (!n)
        return n.error();
      cmd.last_event_id = static_cast<uint64_t>(*n);
    } else {
      return bad(name, "unknown field");
    }
  }
  if (!has_action)
    return bad("action", "required");
  if (cmd.job_id.empty())
    return bad("job_id", "required");
  return cmd;
}

} // namespace drover::http
