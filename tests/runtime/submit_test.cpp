#include "runtime/submit.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

using namespace drover;

namespace {

constexpr int64_t now = 1'780'000'000'000; // 2026-05-28

handler_registry registry() {
  handler_registry r;
  handler_options gpu;
  gpu.resource_class = "gpu";
  gpu.retry.max_attempts = 7;
  gpu.retry.timeout_ms = 60000;
  gpu.retry.backoff.initial_delay_ms = 250;
  REQUIRE_FALSE(r.register_handler(
      "transcode", [](task_context&) { return task_outcome::success(); }, gpu));
  REQUIRE_FALSE(r.register_handler(
      "noop", [](task_context&) { return task_outcome::success(); }));
  return r;
}

submit_request req(std::string type = "noop") {
  submit_request r;
  r.type = std::move(type);
  return r;
}

void expect_invalid(const submit_request& r, const std::string& fragment,
                    errc code = errc::invalid_request,
                    submit_limits limits = {}) {
  auto handlers = registry();
  auto spec = prepare_spec(r, handlers, limits, now);
  REQUIRE_FALSE(spec);
  INFO(describe(spec.error()));
  CHECK(is(spec.error(), code));
  CHECK(describe(spec.error()).find(fragment) != std::string::npos);
}

} // namespace

TEST_CASE("defaults come from the job type, overrides from the request",
          "[submit]") {
  auto handlers = registry();
  auto spec = prepare_spec(req("transcode"), handlers, {}, now);
  REQUIRE(spec);
  CHECK(spec->max_attempts == 7);
  CHECK(spec->timeout_ms == 60000);
  CHECK(spec->backoff.initial_delay_ms == 250);
  CHECK(resource_class_of(*spec) == "gpu");
  CHECK(spec->prio == priority::normal);
  auto r = req("transcode");
  r.max_attempts = 2;
  r.timeout_ms = 5;
  r.priority = 0;
  r.input = R"({"url": "s3://x"})";
  r.delay_ms = 1500;
  r.resources = {{"cpu", 1}};
  spec = prepare_spec(r, handlers, {}, now);
  REQUIRE(spec);
  CHECK(spec->max_attempts == 2);
  CHECK(spec->timeout_ms == 5);
  CHECK(spec->prio == priority::high);
  CHECK(spec->input == R"({"url":"s3://x"})"); // stored canonically
  CHECK(spec->run_at_ms == now + 1500);
  CHECK(resource_class_of(*spec) == "cpu");
}

TEST_CASE("every validation error is specific", "[submit]") {
  expect_invalid(req(""), "type is required");
  expect_invalid(req("nope"), "unknown job type 'nope'");
  auto r = req();
  r.priority = 3;
  expect_invalid(r, "priority must be high (0), normal (1) or low (2), got 3");
  r.priority = -1;
  expect_invalid(r, "got -1");
  r = req();
  r.max_attempts = 0;
  expect_invalid(r, "max_attempts must be at least 1, got 0");
  r.max_attempts = -4;
  expect_invalid(r, "got -4");
  r.max_attempts = 1'000'000;
  expect_invalid(r, "max_attempts must be at most 1000");
  r = req();
  r.timeout_ms = 0;
  expect_invalid(r, "timeout must be positive, got 0 ms");
  r.timeout_ms = -10;
  expect_invalid(r, "timeout must be positive, got -10 ms");
  r = req();
  r.run_at = std::string{"tomorrow"};
  expect_invalid(r, "run_at 'tomorrow' is not an RFC 3339 time");
  r.run_at = std::string{"2026-13-01T00:00:00Z"};
  expect_invalid(r, "is not an RFC 3339 time");
  r.run_at = std::string{"2026-02-29T00:00:00Z"}; // not a leap year
  expect_invalid(r, "is not an RFC 3339 time");
  r.run_at = std::string{"2999-01-01T00:00:00Z"};
  expect_invalid(r, "run_at is too far in the future");
  r = req();
  r.run_at = std::string{"2026-12-01T10:00:00Z"};
  r.delay_ms = 5;
  expect_invalid(r, "give run_at or delay, not both");
  r = req();
  r.delay_ms = -1;
  expect_invalid(r, "delay must not be negative");
  r = req();
  r.input = "{\"a\": ";
  expect_invalid(r, "input is not valid JSON");
  r.input = "{} {}";
  expect_invalid(r, "input is not valid JSON");
  r.input = std::string(100, '[') + std::string(100, ']');
  expect_invalid(r, "input: nested deeper than 64", errc::too_deep);
  r = req();
  submit_limits small;
  small.max_input_bytes = 16;
  r.input = R"({"data": "0123456789abcdef"})";
  expect_invalid(r, "the limit is 16", errc::too_large, small);
  r = req();
  r.callback_url = "ftp://example.org/hook";
  expect_invalid(r, "callback_url is not a valid http(s) URL");
  for (auto bad :
       {"http://", "https://user:pw@example.com/", "https://example.com/a b",
        "https://exa_mple.com/", "https://example.com:0/",
        "https://example.com:99999/", "https://example.com/#frag",
        "https://[::1/", "https://127.1/", "https://example.com/%zz",
        "https://ex\xc3\xa4mple.com/", "http://-bad-.com/"}) {
    r.callback_url = bad;
    INFO(bad);
    expect_invalid(r, "callback_url is not a valid http(s) URL");
  }
  r.callback_url = std::string{"https://example.com/"} + std::string(3000, 'a');
  expect_invalid(r, "at most 2048 bytes");
  // Syntax only: private and loopback addresses are refused at delivery,
  // where the allow-list applies.
  for (auto good : {"https://example.com/hooks?x=1", "http://127.0.0.1:8080",
                    "HTTPS://Example.COM:8443/a/b%20c", "http://[::1]:9/x"}) {
    r.callback_url = good;
    INFO(good);
    auto handlers = registry();
    auto spec = prepare_spec(r, handlers, {}, now);
    REQUIRE(spec);
    CHECK(spec->callback_url == good);
  }
  r = req();
  r.idempotency_key = std::string(300, 'k');
  expect_invalid(r, "idempotency_key is longer than 256 bytes");
  r.idempotency_key = "a\nb";
  expect_invalid(r, "control character");
  r = req();
  r.resources = {{"gpu", 2}};
  expect_invalid(r, "exactly one slot");
  r = req();
  backoff_policy b;
  b.jitter = 2;
  r.backoff = b;
  expect_invalid(r, "jitter must be within [0, 1]");
}

TEST_CASE("the default input limit is 1 MiB", "[submit]") {
  auto handlers = registry();
  auto r = req();
  r.input = "\"" + std::string(1024 * 1024, 'x') + "\"";
  auto spec = prepare_spec(r, handlers, {}, now);
  REQUIRE_FALSE(spec);
  CHECK(is(spec.error(), errc::too_large));
  r.input = "\"" + std::string(1024 * 1024 - 2, 'x') + "\"";
  CHECK(prepare_spec(r, handlers, {}, now));
}

TEST_CASE("RFC 3339 times", "[submit]") {
  CHECK(parse_rfc3339_ms("1970-01-01T00:00:00Z") == int64_t{0});
  CHECK(parse_rfc3339_ms("2026-12-01T10:00:00Z") == int64_t{1796119200000});
  CHECK(parse_rfc3339_ms("2026-12-01T10:00:00.25Z") == int64_t{1796119200250});
  CHECK(parse_rfc3339_ms("2026-12-01T11:30:00+01:30")
        == int64_t{1796119200000});
  CHECK(parse_rfc3339_ms("2026-12-01T08:00:00-02:00")
        == int64_t{1796119200000});
  CHECK_FALSE(parse_rfc3339_ms("2026-12-01 10:00:00"));
  CHECK_FALSE(parse_rfc3339_ms("2026-12-01T10:00:00"));
  CHECK_FALSE(parse_rfc3339_ms("2026-12-01T25:00:00Z"));
  CHECK_FALSE(parse_rfc3339_ms("2026-12-01T10:00:00Zjunk"));
  CHECK_FALSE(parse_rfc3339_ms("2026-12-01T10:00:00.Z"));
  CHECK_FALSE(parse_rfc3339_ms(""));
}

TEST_CASE("a past run_at means now", "[submit]") {
  auto handlers = registry();
  auto r = req();
  r.run_at = std::string{"2020-01-01T00:00:00Z"};
  auto spec = prepare_spec(r, handlers, {}, now);
  REQUIRE(spec);
  CHECK(spec->run_at_ms == 0);
}

TEST_CASE("every text field must be valid UTF-8 without NUL", "[submit]") {
  auto handlers = registry();
  auto r = req();
  r.idempotency_key = "\xc0\xaf";
  expect_invalid(r, "idempotency_key: not valid UTF-8");
  r = req();
  r.tenant = std::string{"a\0b", 3};
  expect_invalid(r, "tenant: contains a NUL byte");
  r = req();
  r.rate_limit_key = "\xff";
  expect_invalid(r, "rate_limit_key: not valid UTF-8");
  r = req();
  r.breaker_key = "\xe2\x82";
  expect_invalid(r, "breaker_key: not valid UTF-8");
  // Well-formed keys pass here; the queue refuses a key its coordinator
  // does not declare (runtime/flow_control.hpp).
  r = req();
  r.rate_limit_key = "mail-provider";
  r.breaker_key = "downstream";
  auto keyed = prepare_spec(r, handlers, {}, now);
  REQUIRE(keyed);
  CHECK(keyed->rate_limit_key == "mail-provider");
  CHECK(keyed->breaker_key == "downstream");
  CHECK(keyed->concurrency_key.empty());
  CHECK(keyed->concurrency_limit == 0);
  // Several rate limits: the first is rate_limit_key, the rest follow.
  r = req();
  r.rate_limit_keys = {"provider", "tenant-share"};
  auto several = prepare_spec(r, handlers, {}, now);
  REQUIRE(several);
  CHECK(several->rate_limit_key == "provider");
  CHECK(several->extra_rate_limit_keys
        == std::vector<std::string>{"tenant-share"});
  CHECK(rate_limit_keys_of(*several)
        == std::vector<std::string>{"provider", "tenant-share"});
  r.rate_limit_keys = {"a\xff"};
  expect_invalid(r, "rate_limit_keys: not valid UTF-8");
  // A job's own concurrency key: its limit defaults to 1, is checked, and
  // needs the key.
  r = req();
  r.concurrency_key = "user:42";
  auto own = prepare_spec(r, handlers, {}, now);
  REQUIRE(own);
  CHECK(own->concurrency_key == "user:42");
  CHECK(own->concurrency_limit == 1);
  r.concurrency_limit = int64_t{7};
  own = prepare_spec(r, handlers, {}, now);
  REQUIRE(own);
  CHECK(own->concurrency_limit == 7);
  r.concurrency_limit = int64_t{0};
  expect_invalid(r, "concurrency_limit must be within [1, 1000000], got 0");
  r.concurrency_limit = int64_t{4294967297};
  expect_invalid(r, "concurrency_limit must be within [1, 1000000]");
  r.concurrency_key.clear();
  r.concurrency_limit = int64_t{2};
  expect_invalid(r, "concurrency_limit needs a concurrency_key");
  r = req();
  r.concurrency_key = "u\x01";
  expect_invalid(r, "concurrency_key: contains a control character");
  r.concurrency_key = "\xff";
  expect_invalid(r, "concurrency_key: not valid UTF-8");
  r = req();
  r.callback_url = "https://example.com/\xc3";
  expect_invalid(r, "callback_url: not valid UTF-8");
  r = req();
  r.run_at = std::string{"2026-12-01T10:00:00Z\0", 21};
  expect_invalid(r, "run_at: contains a NUL byte");
  r = req("noop\xc0");
  expect_invalid(r, "type: not valid UTF-8");
  r = req();
  r.input = "{\"name\": \"\xc0\xaf\"}";
  expect_invalid(r, "input.name: not valid UTF-8");
  r.input = R"({"a": 1, "a": 2})";
  expect_invalid(r, "input.a: appears twice");
  r.input = R"(["\ud800"])";
  expect_invalid(r, "input[0]: an unpaired UTF-16 surrogate");
}

TEST_CASE("inputs are stored canonically, so key order does not matter",
          "[submit]") {
  auto handlers = registry();
  auto a = req();
  a.input = R"({"b": [1, {"y": 2, "x": 1}], "a": "\u00e9"})";
  auto b = req();
  b.input = R"({"a":"\u00E9","b":[1,{"x":1,"y":2}]})";
  auto x = prepare_spec(a, handlers, {}, now);
  auto y = prepare_spec(b, handlers, {}, now);
  REQUIRE(x);
  REQUIRE(y);
  CHECK(x->input == "{\"a\":\"\xc3\xa9\",\"b\":[1,{\"x\":1,\"y\":2}]}");
  CHECK(*x == *y);
  b.input = R"({"a": "\u00e9", "b": [{"x": 1, "y": 2}, 1]})";
  auto z = prepare_spec(b, handlers, {}, now);
  REQUIRE(z);
  CHECK_FALSE(*x == *z); // array order is part of the value
}

TEST_CASE("a job type's own input check runs at submit", "[submit]") {
  handler_registry handlers;
  handler_options opts;
  std::string seen;
  opts.validate_input = [&seen](const std::string& input) -> std::string {
    seen = input;
    return input.find("\"bad\"") != std::string::npos ? "bad is not allowed"
                                                      : "";
  };
  REQUIRE_FALSE(handlers.register_handler(
      "checked", [](task_context&) { return task_outcome::success(); }, opts));
  auto r = req("checked");
  r.input = R"({ "ok" : true })";
  REQUIRE(prepare_spec(r, handlers, {}, now));
  CHECK(seen == R"({"ok":true})"); // the canonical text
  r.input = R"(["bad"])";
  auto spec = prepare_spec(r, handlers, {}, now);
  REQUIRE_FALSE(spec);
  CHECK(is(spec.error(), errc::invalid_request));
  CHECK(describe(spec.error()).find("input: bad is not allowed")
        != std::string::npos);
}

TEST_CASE("the built-in types check their input at submit", "[submit]") {
  handler_registry handlers;
  REQUIRE_FALSE(register_builtin_handlers(handlers));
  auto refused = [&handlers](const std::string& type, const std::string& input,
                             const std::string& fragment) {
    auto r = req(type);
    r.input = input;
    auto spec = prepare_spec(r, handlers, {}, now);
    INFO(type << " " << input);
    REQUIRE_FALSE(spec);
    CHECK(is(spec.error(), errc::invalid_request));
    INFO(describe(spec.error()));
    CHECK(describe(spec.error()).find(fragment) != std::string::npos);
  };
  refused("exec", "{}", "'argv' is required");
  refused("exec", R"({"argv": []})", "argv must not be empty");
  refused("exec", R"({"argv": ["echo", 1]})", "argv[1]");
  refused("exec", R"({"argv": ["echo"], "shell": true})", "shell");
  refused("sleep", R"({"ms": "abc"})", "ms");
  refused("sleep", R"({"ms": -1})", "ms");
  refused("sleep", "", "input must be a JSON object");
  auto ok = req("sleep");
  ok.input = R"({"ms": 10, "steps": 2})";
  CHECK(prepare_spec(ok, handlers, {}, now));
}

TEST_CASE("a resource class no worker has is refused", "[submit]") {
  auto handlers = registry();
  submit_limits limits;
  limits.resource_classes = {"cpu"};
  CHECK(prepare_spec(req("noop"), handlers, limits, now));
  // transcode's default class is gpu.
  expect_invalid(req("transcode"),
                 "no worker has slots of resource class "
                 "'gpu' (this cluster has: cpu)",
                 errc::invalid_request, limits);
  auto r = req("noop");
  r.resources.push_back({"tpu", 1});
  expect_invalid(r, "resource class 'tpu'", errc::invalid_request, limits);
  limits.resource_classes.insert("gpu");
  CHECK(prepare_spec(req("transcode"), handlers, limits, now));
}

TEST_CASE("a job names its slot class first, then amounts of pools",
          "[submit][resources]") {
  auto handlers = registry();
  auto r = req("noop");
  r.resources = {{"gpu.a100", 1}, {"scratch_gb", 100}, {"memory_gb", 16}};
  auto spec = prepare_spec(r, handlers, {}, now);
  REQUIRE(spec);
  CHECK(resource_class_of(*spec) == "gpu.a100");
  // The pools sorted: the same job asked in another order is the same.
  REQUIRE(spec->resources.size() == 3);
  CHECK(spec->resources[1].name == "memory_gb");
  CHECK(spec->resources[2].name == "scratch_gb");
  r.resources = {{"gpu", 1}, {"memory_gb", 16}, {"memory_gb", 2}};
  expect_invalid(r, "'memory_gb' is named twice");
  r.resources = {{"gpu", 1}, {"gpu", 2}};
  expect_invalid(r, "'gpu' is named twice");
  r.resources = {{"gpu", 1}, {"memory_gb", 0}};
  expect_invalid(r, "'memory_gb' must be an amount within [1, 1000000]");
  r.resources = {{"gpu", 1}, {"memory gb", 1}};
  expect_invalid(r, "resource names are 1 to 64 letters");
  r.resources = {{"gpu", 1}};
  for (int i = 0; i < 16; ++i)
    r.resources.push_back({"p" + std::to_string(i), 1});
  expect_invalid(r, "at most 16 resources");
  // Without worker nodes, a pool this node lacks (or has too little of)
  // could never be given: refused, naming what it has.
  submit_limits limits;
  limits.resource_classes = {"cpu", "gpu"};
  limits.resource_pools = {{"memory_gb", 8}};
  r.resources = {{"gpu", 1}, {"memory_gb", 8}};
  CHECK(prepare_spec(r, handlers, limits, now));
  r.resources = {{"gpu", 1}, {"memory_gb", 9}};
  expect_invalid(r,
                 "no worker has memory_gb=9 (this node's workers have 8; "
                 "see --resources)",
                 errc::invalid_request, limits);
  r.resources = {{"cpu", 1}, {"licenses", 1}};
  expect_invalid(r, "no worker has licenses=1 (this node's workers have 0",
                 errc::invalid_request, limits);
}

TEST_CASE("a declared remote type is accepted with default options but not "
          "run here",
          "[submit]") {
  auto handlers = registry();
  REQUIRE_FALSE(handlers.declare_remote("thumbnail"));
  CHECK(handlers.declare_remote("noop")); // taken: it has a handler
  CHECK(handlers.declare_remote(""));
  CHECK(handlers.declare_remote(std::string(129, 'x')));
  CHECK(handlers.types() == std::vector<std::string>{"noop", "transcode"});
  CHECK(handlers.remote_types() == std::vector<std::string>{"thumbnail"});
  auto spec = prepare_spec(req("thumbnail"), handlers, {}, now);
  REQUIRE(spec);
  CHECK(spec->max_attempts == retry_policy{}.max_attempts);
  CHECK(resource_class_of(*spec) == "cpu");
  REQUIRE(handlers.find("thumbnail") != nullptr);
  CHECK_FALSE(handlers.find("thumbnail")->fn);
}
