#include "runtime/submit.hpp"

#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/resources.hpp"
#include "runtime/url.hpp"

#include <cctype>
#include <cmath>
#include <ctime>
#include <tuple>

namespace drover {

namespace {

caf::error invalid(std::string what) {
  return make_error(errc::invalid_request, std::move(what));
}

bool is_digits(const std::string& s, size_t pos, size_t n) {
  if (pos + n > s.size())
    return false;
  for (size_t i = pos; i < pos + n; ++i)
    if (!std::isdigit(static_cast<unsigned char>(s[i])))
      return false;
  return true;
}

int to_int(const std::string& s, size_t pos, size_t n) {
  return std::stoi(s.substr(pos, n));
}

/// The message a Drover error carries (its context), or its rendering.
std::string message_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return describe(err);
}

bool valid_key_text(const std::string& s) {
  for (auto c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return false;
  return true;
}

} // namespace

caf::optional<int64_t> parse_rfc3339_ms(const std::string& t) {
  // YYYY-MM-DDTHH:MM:SS[.fff...](Z|+HH:MM|-HH:MM)
  if (t.size() < 20 || !is_digits(t, 0, 4) || t[4] != '-' || !is_digits(t, 5, 2)
      || t[7] != '-' || !is_digits(t, 8, 2)
      || (t[10] != 'T' && t[10] != 't' && t[10] != ' ') || !is_digits(t, 11, 2)
      || t[13] != ':' || !is_digits(t, 14, 2) || t[16] != ':'
      || !is_digits(t, 17, 2))
    return caf::none;
  int year = to_int(t, 0, 4);
  int month = to_int(t, 5, 2);
  int day = to_int(t, 8, 2);
  int hour = to_int(t, 11, 2);
  int minute = to_int(t, 14, 2);
  int second = to_int(t, 17, 2);
  static constexpr int days_in_month[]
      = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 || day > days_in_month[month - 1]
      || hour > 23 || minute > 59 || second > 60)
    return caf::none;
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  if (month == 2 && day == 29 && !leap)
    return caf::none;
  size_t pos = 19;
  int64_t millis = 0;
  if (pos < t.size() && t[pos] == '.') {
    ++pos;
    size_t digits = 0;
    while (pos < t.size() && std::isdigit(static_cast<unsigned char>(t[pos]))) {
      if (digits < 3)
        millis = millis * 10 + (t[pos] - '0');
      ++digits;
      ++pos;
    }
    if (digits == 0)
      return caf::none;
    for (size_t i = digits; i < 3; ++i)
      millis *= 10;
  }
  int64_t offset_minutes = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    if (!is_digits(t, pos + 1, 2) || pos + 3 >= t.size() || t[pos + 3] != ':'
        || !is_digits(t, pos + 4, 2))
      return caf::none;
    int oh = to_int(t, pos + 1, 2);
    int om = to_int(t, pos + 4, 2);
    if (oh > 23 || om > 59)
      return caf::none;
    offset_minutes = (oh * 60 + om) * (t[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return caf::none;
  }
  if (pos != t.size())
    return caf::none;
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = month - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = minute;
  tm.tm_sec = std::min(second, 59); // a leap second counts as :59
  int64_t secs = static_cast<int64_t>(timegm(&tm)) - offset_minutes * 60;
  return secs * 1000 + millis;
}

bool operator==(const submit_request& x, const submit_request& y) {
  return std::tie(x.type, x.input, x.tenant, x.idempotency_key, x.callback_url,
                  x.rate_limit_key, x.rate_limit_keys, x.breaker_key,
                  x.concurrency_key, x.concurrency_limit, x.resources,
                  x.priority, x.run_at, x.delay_ms, x.max_attempts,
                  x.timeout_ms, x.backoff)
         == std::tie(y.type, y.input, y.tenant, y.idempotency_key,
                     y.callback_url, y.rate_limit_key, y.rate_limit_keys,
                     y.breaker_key, y.concurrency_key, y.concurrency_limit,
                     y.resources, y.priority, y.run_at, y.delay_ms,
                     y.max_attempts, y.timeout_ms, y.backoff);
}

std::vector<std::string> rate_limit_keys_of(const job_spec& spec) {
  std::vector<std::string> out;
  if (spec.rate_limit_key.empty())
    return out;
  out.reserve(1 + spec.extra_rate_limit_keys.size());
  out.push_back(spec.rate_limit_key);
  out.insert(out.end(), spec.extra_rate_limit_keys.begin(),
             spec.extra_rate_limit_keys.end());
  return out;
}

const std::string& resource_class_of(const job_spec& spec) {
  static const std::string default_class = "cpu";
  return spec.resources.empty() ? default_class : spec.resources.front().name;
}

caf::expected<job_spec> prepare_spec(const submit_request& req,
                                     const handler_registry& handlers,
                                     const submit_limits& limits,
                                     int64_t now_ms) {
  if (req.type.empty())
    return invalid("type is required");
  // Text that reaches the store: valid UTF-8 without NUL, checked before
  // anything else looks at it.
  for (auto [value, name] :
       {std::pair{&req.type, "type"}, std::pair{&req.tenant, "tenant"},
        std::pair{&req.idempotency_key, "idempotency_key"},
        std::pair{&req.callback_url, "callback_url"},
        std::pair{&req.rate_limit_key, "rate_limit_key"},
        std::pair{&req.breaker_key, "breaker_key"},
        std::pair{&req.concurrency_key, "concurrency_key"}})
    if (auto err = check_text_field(*value, name))
      return err;
  if (req.run_at)
    if (auto err = check_text_field(*req.run_at, "run_at"))
      return err;
  for (const auto& k : req.rate_limit_keys)
    if (auto err = check_text_field(k, "rate_limit_keys"))
      return err;
  for (const auto& r : req.resources)
    if (auto err = check_text_field(r.name, "resources"))
      return err;
  // rate_limit_key and breaker_key must name a limiter or breaker the
  // coordinator declares: the queue checks (runtime/flow_control.hpp).
  const auto* handler = handlers.find(req.type);
  if (handler == nullptr)
    return invalid("unknown job type '" + req.type.substr(0, 128) + "'");
  const auto& defaults = handler->options.retry;
  job_spec spec;
  spec.type = req.type;
  // Input: size first (cheap), then well-formedness and depth.
  if (req.input.size() > limits.max_input_bytes)
    return make_error(errc::too_large,
                      "input is " + std::to_string(req.input.size())
                          + " bytes; the limit is "
                          + std::to_string(limits.max_input_bytes));
  if (!req.input.empty()) {
    if (auto err = check_json_strict(req.input, limits.max_input_depth, "input",
                                     &spec.input)) {
      if (is(err, errc::invalid_request) || is(err, errc::too_deep))
        return err;
      return invalid("input is not valid JSON: " + message_of(err));
    }
  }
  // Priority.
  if (req.priority) {
    if (*req.priority < 0 || *req.priority > 2)
      return invalid("priority must be high (0), normal (1) or low (2), got "
                     + std::to_string(*req.priority));
    spec.prio = static_cast<priority>(*req.priority);
  }
  // Attempts.
  if (req.max_attempts) {
    if (*req.max_attempts <= 0)
      return invalid("max_attempts must be at least 1, got "
                     + std::to_string(*req.max_attempts));
    if (*req.max_attempts > limits.max_attempts)
      return invalid("max_attempts must be at most "
                     + std::to_string(limits.max_attempts) + ", got "
                     + std::to_string(*req.max_attempts));
    spec.max_attempts = static_cast<uint32_t>(*req.max_attempts);
  } else {
    spec.max_attempts = defaults.max_attempts;
  }
  // Timeout.
  if (req.timeout_ms) {
    if (*req.timeout_ms <= 0)
      return invalid("timeout must be positive, got "
                     + std::to_string(*req.timeout_ms) + " ms");
    if (*req.timeout_ms > limits.max_timeout_ms)
      return invalid("timeout must be at most "
                     + std::to_string(limits.max_timeout_ms) + " ms");
    spec.timeout_ms = *req.timeout_ms;
  } else {
    spec.timeout_ms = defaults.timeout_ms;
  }
  // Backoff.
  if (req.backoff) {
    const auto& b = *req.backoff;
    if (b.initial_delay_ms < 0 || b.max_delay_ms < b.initial_delay_ms)
      return invalid("backoff needs 0 <= initial_delay_ms <= max_delay_ms");
    if (b.max_delay_ms > limits.max_schedule_ahead_ms)
      return invalid("backoff max_delay_ms is absurdly large");
    if (!std::isfinite(b.multiplier) || b.multiplier < 1.0
        || b.multiplier > 100.0)
      return invalid("backoff multiplier must be within [1, 100]");
    if (!(b.jitter >= 0.0 && b.jitter <= 1.0))
      return invalid("backoff jitter must be within [0, 1]");
    spec.backoff = b;
  } else {
    spec.backoff = defaults.backoff;
  }
  // Schedule.
  if (req.run_at && req.delay_ms)
    return invalid("give run_at or delay, not both");
  if (req.run_at) {
    auto at = parse_rfc3339_ms(*req.run_at);
    if (!at)
      return invalid("run_at '" + req.run_at->substr(0, 64)
                     + "' is not an RFC 3339 time such as "
                       "2026-12-01T10:00:00Z");
    if (*at - now_ms > limits.max_schedule_ahead_ms)
      return invalid("run_at is too far in the future (limit "
                     + std::to_string(limits.max_schedule_ahead_ms / 86400000)
                     + " days)");
    spec.run_at_ms = *at > now_ms ? *at : 0; // a past time means now
  }
  if (req.delay_ms) {
    if (*req.delay_ms < 0)
      return invalid("delay must not be negative");
    if (*req.delay_ms > limits.max_schedule_ahead_ms)
      return invalid("delay is too long");
    spec.run_at_ms = *req.delay_ms > 0 ? now_ms + *req.delay_ms : 0;
  }
  // Keys and URLs.
  auto check_key = [&](const std::string& v, const char* name) -> caf::error {
    if (v.size() > limits.max_key_bytes)
      return invalid(std::string{name} + " is longer than "
                     + std::to_string(limits.max_key_bytes) + " bytes");
    if (!valid_key_text(v))
      return invalid(std::string{name} + " contains control characters");
    return caf::none;
  };
  if (auto err = check_key(req.tenant, "tenant"))
    return err;
  if (auto err = check_key(req.idempotency_key, "idempotency_key"))
    return err;
  if (auto err = check_key(req.rate_limit_key, "rate_limit_key"))
    return err;
  if (!req.rate_limit_key.empty() && !req.rate_limit_keys.empty())
    return invalid("give rate_limit_key or rate_limit_keys, not both");
  if (req.rate_limit_keys.size() > max_rate_limit_keys)
    return invalid("rate_limit_keys: at most "
                   + std::to_string(max_rate_limit_keys) + " keys");
  for (size_t i = 0; i < req.rate_limit_keys.size(); ++i) {
    const auto& k = req.rate_limit_keys[i];
    if (k.empty())
      return invalid("rate_limit_keys: a key is empty");
    if (auto err = check_key(k, "rate_limit_keys"))
      return err;
    for (size_t j = 0; j < i; ++j)
      if (req.rate_limit_keys[j] == k)
        return invalid("rate_limit_keys: '" + k.substr(0, 128)
                       + "' is named twice");
  }
  if (auto err = check_key(req.breaker_key, "breaker_key"))
    return err;
  if (auto err = check_key(req.concurrency_key, "concurrency_key"))
    return err;
  if (req.concurrency_limit && req.concurrency_key.empty())
    return invalid("concurrency_limit needs a concurrency_key");
  if (req.concurrency_limit
      && (*req.concurrency_limit < 1 || *req.concurrency_limit > 1'000'000))
    return invalid("concurrency_limit must be within [1, 1000000], got "
                   + std::to_string(*req.concurrency_limit));
  if (!req.callback_url.empty()) {
    // Syntax only; where the host resolves to is checked at delivery time
    // (gateway/webhook.hpp), when it matters.
    const auto& u = req.callback_url;
    if (u.size() > limits.max_url_bytes)
      return invalid("callback_url must be an http(s) URL of at most "
                     + std::to_string(limits.max_url_bytes) + " bytes");
    if (auto url = parse_http_url(u); !url)
      return invalid("callback_url is not a valid http(s) URL: "
                     + message_of(url.error()));
  }
  spec.tenant = req.tenant;
  spec.idempotency_key = req.idempotency_key;
  spec.rate_limit_key = req.rate_limit_key;
  if (!req.rate_limit_keys.empty()) {
    spec.rate_limit_key = req.rate_limit_keys.front();
    spec.extra_rate_limit_keys.assign(req.rate_limit_keys.begin() + 1,
                                      req.rate_limit_keys.end());
  }
  spec.breaker_key = req.breaker_key;
  spec.concurrency_key = req.concurrency_key;
  if (!spec.concurrency_key.empty())
    spec.concurrency_limit
        = static_cast<uint32_t>(req.concurrency_limit.value_or(1));
  spec.callback_url = req.callback_url;
  // Resources: the first names the slot class (one slot), the others are
  // drawn from the worker node's pools (runtime/resources.hpp).
  if (req.resources.empty()) {
    if (handler->options.resource_class != "cpu")
      spec.resources.push_back({handler->options.resource_class, 1});
  } else {
    const auto& r = req.resources.front();
    if (r.name.empty() || r.name.size() > 64 || !valid_key_text(r.name))
      return invalid("resource class must be 1 to 64 printable characters");
    if (r.amount != 1)
      return invalid("resources: the first names the slot class, and a job "
                     "occupies exactly one slot of it ('"
                     + r.name.substr(0, 64) + "' must be 1)");
    auto needs = pool_needs(req.resources);
    if (!needs)
      return std::move(needs.error());
    // The pools in one order: the same job asked twice is the same spec.
    spec.resources = {r};
    for (auto& p : requests_of(*needs))
      spec.resources.push_back(std::move(p));
  }
  if (!limits.resource_classes.empty()) {
    if (limits.resource_classes.count(resource_class_of(spec)) == 0) {
      std::string known;
      for (const auto& c : limits.resource_classes)
        known += (known.empty() ? "" : ", ") + c;
      return invalid("no worker has slots of resource class '"
                     + resource_class_of(spec).substr(0, 64)
                     + "' (this cluster has: " + known + ")");
    }
    for (size_t i = 1; i < spec.resources.size(); ++i) {
      const auto& r = spec.resources[i];
      auto p = limits.resource_pools.find(r.name);
      uint32_t has = p == limits.resource_pools.end() ? 0 : p->second;
      if (has < r.amount)
        return invalid("no worker has " + r.name + "="
                       + std::to_string(r.amount)
                       + " (this node's workers have " + std::to_string(has)
                       + "; see --resources)");
    }
  }
  // Last: the job type's own check of its input (it may be the costliest,
  // and the spec's own fields are reported first).
  if (handler->options.validate_input)
    if (auto what = handler->options.validate_input(spec.input); !what.empty())
      return invalid("input: " + what);
  return spec;
}

} // namespace drover
