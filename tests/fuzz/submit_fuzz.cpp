// libFuzzer target: a submission's way from HTTP body to the job spec that
// is stored — the gateway's body parsers (gateway/http_api.hpp:
// parse_submit, parse_batch, parse_reason) and submit validation
// (runtime/submit.hpp: prepare_spec with the built-in job types).
//
// Input: a request body, as a client sends it.
// Properties, beyond "no crash, no sanitizer report, no exception":
// - prepare_spec is deterministic (same request, same spec);
// - every accepted spec survives the store's encoding: it encodes to bytes
//   that decode to an equal spec;
// - every string of an accepted spec is valid UTF-8 without NUL (issue 11:
//   PostgreSQL refuses anything else, and a refused row must never reach
//   the store's group commit).

#include "fuzz_check.hpp"

#include "gateway/http_api.hpp"
#include "runtime/codec.hpp"
#include "runtime/json_text.hpp"
#include "runtime/submit.hpp"
#include "runtime/task.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

/// A fixed submission time, so runs are reproducible.
constexpr int64_t now_ms = 1764633600000; // 2025-12-02T00:00:00Z

const drover::handler_registry& handlers() {
  static const drover::handler_registry registry = [] {
    drover::handler_registry r;
    if (auto err = drover::register_builtin_handlers(r)) {
      std::fprintf(stderr, "fuzz: cannot register the built-in handlers\n");
      std::abort();
    }
    return r;
  }();
  return registry;
}

bool store_safe(std::string_view s) {
  if (s.find('\0') != std::string_view::npos)
    return false;
  while (!s.empty()) {
    auto n = drover::utf8_sequence_length(s);
    if (n == 0)
      return false;
    s.remove_prefix(n);
  }
  return true;
}

void check_spec(const drover::submit_request& req) {
  drover::submit_limits limits;
  auto spec = drover::prepare_spec(req, handlers(), limits, now_ms);
  auto again = drover::prepare_spec(req, handlers(), limits, now_ms);
  FUZZ_CHECK(static_cast<bool>(spec) == static_cast<bool>(again),
             "prepare_spec must be deterministic");
  if (!spec)
    return;
  FUZZ_CHECK(*spec == *again, "prepare_spec must be deterministic");
  auto bytes = drover::to_bytes(*spec);
  auto decoded = drover::from_bytes<drover::job_spec>(bytes);
  FUZZ_CHECK(decoded, "an accepted spec must decode from its own bytes");
  FUZZ_CHECK(*decoded == *spec, "an accepted spec must survive the codec");
  for (auto* field :
       {&spec->type, &spec->input, &spec->tenant, &spec->idempotency_key,
        &spec->callback_url, &spec->rate_limit_key, &spec->breaker_key})
    FUZZ_CHECK(store_safe(*field),
               "an accepted spec's strings must be UTF-8 without NUL");
  for (auto& r : spec->resources)
    FUZZ_CHECK(store_safe(r.name),
               "an accepted spec's strings must be UTF-8 without NUL");
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};
  drover::decode_limits limits;
  limits.max_bytes = size_t{8} << 20; // the gateway's max_body_bytes
  if (auto req = drover::http::parse_submit(body, limits))
    check_spec(*req);
  if (auto items = drover::http::parse_batch(body, limits, 100)) {
    for (auto& item : *items)
      if (!item.error)
        check_spec(item.request);
  }
  if (auto reason = drover::http::parse_reason(body, limits))
    FUZZ_CHECK(store_safe(*reason),
               "an accepted reason must be UTF-8 without NUL");
  return 0;
}
