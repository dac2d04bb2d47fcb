#pragma once

// Stream tokens: how a browser's EventSource or WebSocket, which cannot send
// an `Authorization` header, authenticates to a job's event stream.
//
// A token is minted by an authenticated request (POST
// /api/jobs/{id}/stream-token, or POST /api/stream-token for a WebSocket
// that may subscribe to any of the tenant's jobs) and presented as
// `?token=` on GET /api/jobs/{id}/stream and GET /api/ws only. It is
// stateless: any gateway configured with the same key verifies it, and
// nothing is stored.
//
//   token   = base64url(payload) "." base64url(HMAC-SHA256(key, context +
//   payload)) payload = "1" LF expires_at LF scope LF job LF key_name LF tenant
//
// `expires_at` is Unix seconds, at most max_stream_token_ttl after minting;
// `scope` is "read" (the only scope a token can carry); `job` is a job id or
// "*" (any job of the tenant, WebSocket only); `key_name` names the API key
// that minted it ("" in development mode), so that removing a key revokes
// its tokens and streams opened with a token count against that key's
// limits. The MAC is compared in constant time (CRYPTO_memcmp) and checked
// before any field is looked at.
//
// A token is a bearer credential for up to ten minutes: it is never logged
// (redact_token_in_target) and never echoed in an error message.

#include <caf/expected.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace drover::http {

/// Longest lifetime of a stream token.
constexpr std::chrono::seconds max_stream_token_ttl{600};

/// Fewest key bytes accepted.
constexpr size_t min_stream_token_key_bytes = 32;

/// What a valid token grants.
struct stream_grant {
  std::string key_name;
  std::string tenant;
  /// A job id, or "*" for any job of the tenant.
  std::string job;
  /// Unix seconds.
  int64_t expires_at = 0;
};

/// Decodes `--stream-token-key`: "hex:<hex digits>" or "base64:<base64>",
/// at least 32 bytes. errc::bad_config naming the problem otherwise (never
/// the key itself).
caf::expected<std::string> decode_stream_token_key(std::string_view spec);

/// 32 random bytes from OpenSSL's generator (a key for one process).
std::string random_stream_token_key();

/// Mints a token for `grant` with `key`. errc::invalid_request if a field
/// holds a line feed or the job is empty (the API never produces those).
caf::expected<std::string> mint_stream_token(const std::string& key,
                                             const stream_grant& grant);

/// Verifies `token` with `key` at `now` (Unix seconds): the grant, or
/// errc::invalid_request saying why ("malformed", "does not verify",
/// "expired"; the gateway answers 401 with it). No message contains the
/// token. A grant whose expiry lies more than max_stream_token_ttl ahead
/// (a key shared with a gateway whose clock runs fast) is refused too.
caf::expected<stream_grant> verify_stream_token(const std::string& key,
                                                std::string_view token,
                                                int64_t now);

/// Unix seconds now (the clock tokens are minted and verified with).
int64_t unix_seconds_now();

/// A request target with the value of every `token` query parameter
/// replaced by "REDACTED": use it wherever a target is logged or shown.
std::string redact_token_in_target(std::string_view target);

} // namespace drover::http
