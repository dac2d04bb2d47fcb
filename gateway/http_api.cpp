#include "gateway/http_api.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_strict.hpp"
#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <kj/exception.h>

#include <cmath>
#include <cstdio>
#include <ctime>
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

void write_error(writer& w, const error_info& e) {
  if (e.code.empty() && e.message.empty()) {
    w.null();
    return;
  }
  w.open_object()
      .key("code")
      .str(e.code)
      .key("message")
      .str(e.message)
      .key("retryable")
      .boolean(e.retryable)
      .close_object();
}

void write_stages(writer& w, const std::vector<stage>& stages) {
  w.open_array();
  for (auto& s : stages)
    w.open_object()
        .key("name")
        .str(s.name)
        .key("percent")
        .num(s.percent)
        .key("state")
        .str(to_string(s.state))
        .close_object();
  w.close_array();
}

void write_eta(writer& w, int64_t eta_ms) {
  if (eta_ms < 0)
    w.null();
  else
    w.num(static_cast<double>(eta_ms) / 1000.0);
}

/// The submission-shaped part of a spec (what the client asked for, with
/// the type's defaults filled in).
void write_spec_fields(writer& w, const job_spec& spec) {
  w.key("type")
      .str(spec.type)
      .key("priority")
      .str(to_string(spec.prio))
      .key("max_attempts")
      .num(static_cast<int64_t>(spec.max_attempts));
  w.key("timeout_seconds");
  if (spec.timeout_ms > 0)
    w.num(static_cast<double>(spec.timeout_ms) / 1000.0);
  else
    w.null();
  w.key("run_at").time(spec.run_at_ms);
  w.key("idempotency_key");
  spec.idempotency_key.empty() ? w.null() : w.str(spec.idempotency_key);
  w.key("callback_url");
  spec.callback_url.empty() ? w.null() : w.str(spec.callback_url);
  w.key("rate_limit_key");
  spec.rate_limit_key.empty() ? w.null() : w.str(spec.rate_limit_key);
  w.key("rate_limit_keys").open_array();
  for (const auto& k : rate_limit_keys_of(spec))
    w.str(k);
  w.close_array();
  w.key("breaker_key");
  spec.breaker_key.empty() ? w.null() : w.str(spec.breaker_key);
  w.key("concurrency_key");
  spec.concurrency_key.empty() ? w.null() : w.str(spec.concurrency_key);
  w.key("concurrency_limit");
  spec.concurrency_key.empty()
      ? w.null()
      : w.num(static_cast<int64_t>(spec.concurrency_limit));
  w.key("resources").open_object();
  for (auto& r : spec.resources)
    w.key(r.name).num(static_cast<int64_t>(r.amount));
  w.close_object();
  w.key("backoff")
      .open_object()
      .key("initial_seconds")
      .num(spec.backoff.initial_delay_ms / 1000.0)
      .key("max_seconds")
      .num(spec.backoff.max_delay_ms / 1000.0)
      .key("multiplier")
      .num(spec.backoff.multiplier)
      .key("jitter")
      .num(spec.backoff.jitter)
      .close_object();
}

std::string running_stage(const std::vector<stage>& stages) {
  for (auto& s : stages)
    if (s.state == stage_state::running)
      return s.name;
  return {};
}

std::string job_url(const std::string& id) {
  return "/api/jobs/" + id;
}

void write_job(writer& w, const job_record& job) {
  w.open_object()
      .key("job_id")
      .str(job.job_id)
      .key("tenant")
      .str(job.spec.tenant)
      .key("status")
      .str(to_string(job.status));
  write_spec_fields(w, job.spec);
  w.key("attempt")
      .num(static_cast<int64_t>(job.attempt))
      .key("retry_count")
      .num(static_cast<int64_t>(job.retry_count))
      .key("lost_count")
      .num(static_cast<int64_t>(job.lost_count))
      .key("progress")
      .num(job.progress);
  auto st = running_stage(job.stages);
  w.key("stage");
  st.empty() ? w.null() : w.str(st);
  w.key("stages");
  write_stages(w, job.stages);
  w.key("eta_seconds");
  write_eta(w, is_terminal(job.status) ? -1 : job.eta_ms);
  w.key("error");
  write_error(w, job.error);
  w.key("dead_lettered")
      .boolean(job.dead_lettered)
      .key("cancel_requested")
      .boolean(job.cancel_requested)
      .key("worker_id");
  job.worker_id.empty() ? w.null() : w.str(job.worker_id);
  w.key("waiting_for");
  job.waiting_for.empty() ? w.null() : w.str(job.waiting_for);
  w.key("created_at")
      .time(job.created_at_ms)
      .key("started_at")
      .time(job.started_at_ms)
      .key("finished_at")
      .time(job.completed_at_ms)
      .key("retry_at")
      .time(job.retry_at_ms)
      .key("check_status_url")
      .str(job_url(job.job_id))
      .key("result_url");
  if (job.status == job_status::completed)
    w.str(job_url(job.job_id) + "/result");
  else
    w.null();
  w.close_object();
}

void write_event_details(writer& w, const job_event& e) {
  w.open_object();
  switch (e.kind) {
    case event_kind::submitted:
      w.key("spec").open_object();
      write_spec_fields(w, e.spec);
      w.key("tenant").str(e.spec.tenant).close_object();
      break;
    case event_kind::scheduled:
      w.key("run_at").time(e.run_at_ms);
      break;
    case event_kind::queued:
      break;
    case event_kind::started:
    case event_kind::lease_expired:
    case event_kind::worker_lost:
      w.key("worker_id")
          .str(e.worker_id)
          .key("lease_expires_at")
          .time(e.lease_expiry_ms);
      break;
    case event_kind::progressed: {
      auto& p = e.progress;
      w.key("percent").num(p.percent).key("stage");
      auto st = p.stage.empty() ? running_stage(p.stages) : p.stage;
      st.empty() ? w.null() : w.str(st);
      w.key("message");
      p.message.empty() ? w.null() : w.str(p.message);
      w.key("stages");
      write_stages(w, p.stages);
      w.key("eta_seconds");
      write_eta(w, p.eta_ms);
      break;
    }
    case event_kind::checkpointed:
      w.key("checkpoint_bytes").num(static_cast<int64_t>(e.checkpoint.size()));
      break;
    case event_kind::retry_scheduled:
      w.key("error");
      write_error(w, e.error);
      w.key("next_attempt_at").time(e.next_attempt_at_ms);
      break;
    case event_kind::completed:
      w.key("result").raw(e.result);
      break;
    case event_kind::failed:
    case event_kind::dead_lettered:
      w.key("error");
      write_error(w, e.error);
      break;
    case event_kind::cancel_requested:
    case event_kind::cancelled:
    case event_kind::redriven:
    case event_kind::purged:
      w.key("reason").str(e.reason);
      break;
    case event_kind::webhook_attempted: {
      auto& h = e.webhook;
      w.key("url")
          .str(h.url)
          .key("webhook_id")
          .str(h.webhook_id)
          .key("attempt_number")
          .num(static_cast<int64_t>(h.attempt_number))
          .key("status_code");
      h.status_code == 0 ? w.null()
                         : w.num(static_cast<int64_t>(h.status_code));
      w.key("outcome").str(snake_case(to_string(h.outcome))).key("error");
      h.error.empty() ? w.null() : w.str(h.error);
      w.key("attempted_at")
          .time(h.at_ms)
          .key("next_attempt_at")
          .time(h.next_attempt_at_ms)
          .key("terminal_sequence")
          .num(static_cast<int64_t>(h.terminal_sequence));
      break;
    }
    default:
      // Kinds added after this writer: the codec's JSON of the whole event.
      w.key("event").raw(to_json(e));
      break;
  }
  w.close_object();
}

void write_event(writer& w, const job_event& e) {
  w.open_object()
      .key("job_id")
      .str(e.job_id)
      .key("sequence")
      .num(static_cast<int64_t>(e.sequence))
      .key("attempt")
      .num(static_cast<int64_t>(e.attempt))
      .key("kind")
      .str(snake_case(to_string(e.kind)))
      .key("at")
      .time(e.at_ms)
      .key("details");
  write_event_details(w, e);
  w.close_object();
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

std::string rfc3339(int64_t unix_ms) {
  auto secs = static_cast<time_t>(unix_ms >= 0 ? unix_ms / 1000
                                               : (unix_ms - 999) / 1000);
  auto millis = static_cast<int>(unix_ms - int64_t{secs} * 1000);
  struct tm tm;
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, millis);
  return buf;
}

std::string snake_case(std::string_view camel) {
  std::string out;
  out.reserve(camel.size() + 4);
  for (char c : camel) {
    if (c >= 'A' && c <= 'Z') {
      out += '_';
      out += static_cast<char>(c - 'A' + 'a');
    } else {
      out += c;
    }
  }
  return out;
}

std::string job_json(const job_record& job) {
  writer w;
  write_job(w, job);
  return w.take();
}

std::string submitted_json(const job_record& job) {
  writer w;
  w.open_object()
      .key("job_id")
      .str(job.job_id)
      .key("status")
      .str(to_string(job.status))
      .key("check_status_url")
      .str(job_url(job.job_id))
      .close_object();
  return w.take();
}

std::string event_json(const job_event& event) {
  writer w;
  write_event(w, event);
  return w.take();
}

std::string events_json(const std::string& job_id,
                        const std::vector<job_event>& events) {
  writer w;
  w.open_object().key("job_id").str(job_id).key("events").open_array();
  for (auto& e : events)
    write_event(w, e);
  w.close_array().close_object();
  return w.take();
}

std::string progress_json(const progress_update& p) {
  writer w;
  w.open_object()
      .key("job_id")
      .str(p.job_id)
      .key("attempt")
      .num(static_cast<int64_t>(p.attempt))
      .key("percent")
      .num(p.percent)
      .key("stage");
  auto st = p.stage.empty() ? running_stage(p.stages) : p.stage;
  st.empty() ? w.null() : w.str(st);
  w.key("message");
  p.message.empty() ? w.null() : w.str(p.message);
  w.key("stages");
  write_stages(w, p.stages);
  w.key("eta_seconds");
  write_eta(w, p.eta_ms);
  w.key("at").time(p.at_ms).close_object();
  return w.take();
}

std::string job_page_json(const std::vector<job_record>& jobs, bool has_more) {
  writer w;
  w.open_object().key("data").open_array();
  for (auto& j : jobs)
    write_job(w, j);
  w.close_array().key("has_more").boolean(has_more).key("next_cursor");
  if (has_more && !jobs.empty())
    w.str(jobs.back().job_id);
  else
    w.null();
  w.close_object();
  return w.take();
}

std::string queues_json(const queue_stats& s,
                        const std::array<double, 3>& rates) {
  static constexpr const char* names[] = {"high", "normal", "low"};
  writer w;
  w.open_object().key("priorities").open_object();
  for (size_t i = 0; i < 3; ++i) {
    w.key(names[i])
        .open_object()
        .key("depth")
        .num(static_cast<int64_t>(s.depth[i]))
        .key("oldest_age_seconds")
        .num(s.oldest_age_ms[i] / 1000.0)
        .key("dispatched_total")
        .num(static_cast<int64_t>(s.dispatched[i]))
        .key("dispatched_per_second");
    rates[i] < 0 ? w.null() : w.num(rates[i]);
    w.close_object();
  }
  w.close_object()
      .key("delayed")
      .num(static_cast<int64_t>(s.delayed))
      .key("running")
      .num(static_cast<int64_t>(s.running))
      .key("idle_workers")
      .num(static_cast<int64_t>(s.idle_workers))
      .key("completed_total")
      .num(static_cast<int64_t>(s.completed))
      .key("failed_total")
      .num(static_cast<int64_t>(s.failed))
      .key("cancelled_total")
      .num(static_cast<int64_t>(s.cancelled))
      .key("retried_total")
      .num(static_cast<int64_t>(s.retried))
      .key("counters_since")
      .time(s.since_ms)
      .key("admission")
      .open_object()
      .key("in_flight")
      .num(static_cast<int64_t>(s.admission_in_flight))
      .key("queued_memory_bytes")
      .num(static_cast<int64_t>(s.admission_memory_bytes))
      .key("queued_memory_limit_bytes");
  s.admission_memory_limit_bytes == 0
      ? w.null()
      : w.num(static_cast<int64_t>(s.admission_memory_limit_bytes));
  w.key("refused_total")
      .num(static_cast<int64_t>(s.admission_refused))
      .close_object()
      .key("types")
      .open_array();
  for (const auto& t : s.by_type)
    w.open_object()
        .key("resource_class")
        .str(t.resource_class)
        .key("job_type")
        .str(t.job_type)
        .key("ready")
        .num(static_cast<int64_t>(t.ready))
        .key("oldest_age_seconds")
        .num(t.oldest_age_ms / 1000.0)
        .key("delayed")
        .num(static_cast<int64_t>(t.delayed))
        .key("running")
        .num(static_cast<int64_t>(t.running))
        .key("dispatched_total")
        .num(static_cast<int64_t>(t.dispatched))
        .key("completed_total")
        .num(static_cast<int64_t>(t.completed))
        .key("arrivals_per_second")
        .num(t.arrivals_per_second)
        .key("completions_per_second")
        .num(t.completions_per_second)
        .key("mean_run_seconds")
        .num(t.mean_run_ms / 1000.0)
        .key("recommended_slots")
        .num(static_cast<int64_t>(t.recommended_slots))
        .close_object();
  w.close_array().key("partitions").open_array();
  for (const auto& p : s.by_partition)
    w.open_object()
        .key("partition")
        .num(static_cast<int64_t>(p.partition))
        .key("waiting")
        .num(static_cast<int64_t>(p.waiting))
        .key("running")
        .num(static_cast<int64_t>(p.running))
        .close_object();
  w.close_array().close_object();
  return w.take();
}

namespace {

void write_tree(writer& w, const tree_node& n,
                const std::map<std::string, job_record>& jobs) {
  w.open_object()
      .key("name")
      .str(n.name)
      .key("kind")
      .str(to_string(n.kind))
      .key("state")
      .str(to_string(n.state))
      .key("restart")
      .str(to_string(n.restart));
  if (n.kind == child_kind::supervisor)
    w.key("strategy").str(snake_case(to_string(n.strat)));
  w.key("restarts")
      .num(static_cast<int64_t>(n.restarts))
      .key("uptime_seconds")
      .num(n.uptime_ms / 1000.0)
      .key("last_exit");
  n.last_exit.empty() ? w.null() : w.str(n.last_exit);
  if (n.name.rfind("job ", 0) == 0) {
    auto j = jobs.find(n.name.substr(4));
    if (j != jobs.end()) {
      auto& job = j->second;
      w.key("job")
          .open_object()
          .key("job_id")
          .str(job.job_id)
          .key("type")
          .str(job.spec.type)
          .key("status")
          .str(to_string(job.status))
          .key("attempt")
          .num(static_cast<int64_t>(job.attempt))
          .key("progress")
          .num(job.progress)
          .key("stage");
      auto st = running_stage(job.stages);
      st.empty() ? w.null() : w.str(st);
      w.key("eta_seconds");
      write_eta(w, job.eta_ms);
      w.key("worker_id")
          .str(job.worker_id)
          .key("started_at")
          .time(job.started_at_ms)
          .close_object();
    }
  }
  w.key("children").open_array();
  for (auto& c : n.children)
    write_tree(w, c, jobs);
  w.close_array().close_object();
}

} // namespace

std::string tree_json(const tree_node& root,
                      const std::map<std::string, job_record>& jobs) {
  writer w;
  write_tree(w, root, jobs);
  return w.take();
}

void running_job_ids(const tree_node& root, std::vector<std::string>& out) {
  if (root.name.rfind("job ", 0) == 0)
    out.push_back(root.name.substr(4));
  for (auto& c : root.children)
    running_job_ids(c, out);
}

std::string error_json(std::string_view code, std::string_view message) {
  writer w;
  w.open_object()
      .key("error")
      .open_object()
      .key("code")
      .str(code)
      .key("message")
      .str(message)
      .close_object()
      .close_object();
  return w.take();
}

error_status classify(const caf::error& err) {
  if (err.category() != errc_category) {
    // CAF's own errors: a request that timed out or a node that went away.
    return {503, "unavailable"};
  }
  switch (static_cast<errc>(err.code())) {
    case errc::truncated:
    case errc::malformed:
      return {400, "malformed_json"};
    case errc::too_deep:
      return {400, "too_deep"};
    case errc::invalid_value:
    case errc::invalid_request:
      return {400, "invalid_request"};
    case errc::too_large:
      return {413, "too_large"};
    case errc::not_found:
      return {404, "not_found"};
    case errc::conflict:
      return {409, "conflict"};
    case errc::unavailable:
      return {503, "unavailable"};
    case errc::not_owner:
      // Another coordinator owns the job's partition (--share-partitions):
      // the request may succeed through that one, or here once it moved.
      return {503, "not_owner"};
    case errc::stale_attempt:
      return {409, "conflict"};
    case errc::forbidden:
      return {403, "forbidden"};
    case errc::unauthenticated:
      return {401, "unauthenticated"};
    case errc::rate_limited:
      return {429, "rate_limited"};
    case errc::overloaded:
      return {503, "overloaded"};
    case errc::outcome_unknown:
      // The node that took the request stopped before it answered (a
      // sharing gateway's coordinator died): it may or may not be done.
      return {504, "outcome_unknown"};
    default:
      return {500, "internal"};
  }
}

std::string current_stage(const progress_update& update) {
  return update.stage.empty() ? running_stage(update.stages) : update.stage;
}

std::string current_stage(const job_event& event) {
  if (event.kind != event_kind::progressed)
    return {};
  return current_stage(event.progress);
}

std::string sse_event_name(const job_event& event,
                           const std::string& previous_stage) {
  switch (event.kind) {
    case event_kind::progressed:
      return current_stage(event) != previous_stage ? "stage" : "progress";
    case event_kind::completed:
      return "completed";
    case event_kind::failed:
      return "failed";
    case event_kind::cancelled:
      return "cancelled";
    case event_kind::webhook_attempted:
      return "webhook"; // after the terminal event: not a status change
    default:
      return "status";
  }
}

std::string context_of(const caf::error& err) {
  auto& ctx = err.context();
  if (ctx.match_elements<std::string>())
    return ctx.get_as<std::string>(0);
  return err.category() == errc_category
             ? std::string{to_string(static_cast<errc>(err.code()))}
             : std::string{"the node did not answer in time; retry"};
}

} // namespace drover::http
