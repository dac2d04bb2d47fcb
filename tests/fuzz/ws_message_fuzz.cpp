// libFuzzer target: a WebSocket client's message on /api/ws as the gateway
// reads it (gateway/http_api.hpp: parse_ws_command), after Beast has
// unframed it. The whole socket path, upgrade included, is also driven by
// http_request_fuzz; this target reaches the parser directly, fast.
//
// Input: the text of one WebSocket message.
// Properties, beyond "no crash, no sanitizer report, no exception": an
// accepted command names a job id that is valid UTF-8 without NUL (it is
// echoed to the client and used as a store key).

#include "fuzz_check.hpp"

#include "gateway/http_api.hpp"
#include "runtime/json_text.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  drover::decode_limits limits;
  limits.max_bytes = 64 * 1024; // server_limits::max_ws_message_bytes
  auto cmd = drover::http::parse_ws_command(text, limits);
  if (!cmd)
    return 0;
  std::string_view id = cmd->job_id;
  FUZZ_CHECK(id.find('\0') == std::string_view::npos,
             "an accepted job id must not hold NUL");
  FUZZ_CHECK(drover::valid_utf8(id) == id,
             "an accepted job id must be valid UTF-8");
  return 0;
}
