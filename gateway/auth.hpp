#pragma once

// API keys, tenants, scopes and per-key rate limits of the HTTP gateway.
//
// A key is configured as `name:sha256hex:tenant:scopes[:rate]`, e.g.
//   ci:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8:acme:submit,read:50
// where sha256hex is the SHA-256 of the secret key (`printf %s "$KEY" |
// sha256sum`): the node never stores or logs the key itself. Scopes are a
// comma list of submit, read, admin, exec. `exec` is the privilege of
// submitting jobs of type `exec` (programs on the workers): it is never
// implied by `submit`, and an exec job needs both. `rate` is requests per
// second (burst = one second's worth); 0 or absent = the gateway's default
// rate.
//
// A request presents `Authorization: Bearer <key>`. The presented key is
// hashed and compared with every configured hash in constant time (no early
// exit on a match, CRYPTO_memcmp per entry), so timing tells nothing about
// which keys exist. With no keys configured the gateway is in development
// mode: every request acts as tenant "" with all scopes (exec included),
// and the gateway refuses to listen anywhere but loopback.

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace drover::http {

enum scope : uint8_t {
  scope_submit = 1,
  scope_read = 2,
  scope_admin = 4,
  /// May submit `exec` jobs (with submit); see the file comment.
  scope_exec = 8,
  scope_all = 15,
};

/// The name of one scope ("submit", "read", "admin", "exec").
const char* scope_name(scope s);

struct api_key {
  std::string name;
  std::array<uint8_t, 32> hash{};
  std::string tenant;
  uint8_t scopes = 0;
  /// Requests per second; 0 = the gateway default.
  double rate = 0;
};

/// Parses one key spec (see above); errc::bad_config naming the problem.
caf::expected<api_key> parse_api_key(std::string_view spec);

/// SHA-256 of `text`.
std::array<uint8_t, 32> sha256(std::string_view text);

/// SHA-256 of `text` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view text);

/// Who a request acts as.
struct principal {
  /// Index into the key ring, or npos in development mode.
  size_t key = static_cast<size_t>(-1);
  std::string key_name;
  std::string tenant;
  uint8_t scopes = 0;
  bool has(scope s) const {
    return (scopes & s) != 0;
  }
};

class key_ring {
public:
  explicit key_ring(std::vector<api_key> keys);

  bool development_mode() const {
    return keys_.empty();
  }

  size_t size() const {
    return keys_.size();
  }

  const api_key& at(size_t i) const {
    return keys_[i];
  }

  /// The principal for an `Authorization` header value ("" = absent).
  /// Fails with errc::invalid_request (no or malformed header: 401) or
  /// errc::not_found (unknown key: 401).
  caf::expected<principal> authenticate(std::string_view authorization) const;

private:
  std::vector<api_key> keys_;
};

/// Token buckets per key: `rate` tokens per second, burst of max(1, rate).
/// Thread-safe.
class rate_limiter {
public:
  rate_limiter(size_t keys, double default_rate);

  /// Takes one token for key `k` with per-key `rate` (0 = default); if none
  /// is left, returns false and the seconds until one is.
  bool take(size_t k, double rate, std::chrono::steady_clock::time_point now,
            double& retry_after_s);

private:
  struct bucket {
    double tokens = -1; // -1 = not started (full)
    std::chrono::steady_clock::time_point last;
  };
  std::mutex mx_;
  std::vector<bucket> buckets_;
  double default_rate_;
};

/// Counts open streams (SSE, WebSocket) per key. Thread-safe.
class stream_counter {
public:
  stream_counter(size_t keys, size_t max_per_key);
  /// False if key `k` already has max_per_key streams open.
  bool acquire(size_t k);
  void release(size_t k);

private:
  std::mutex mx_;
  std::vector<size_t> open_;
  size_t dev_open_ = 0;
  size_t max_;
};

} // namespace drover::http
