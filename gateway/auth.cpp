#include "gateway/auth.hpp"

#include "runtime/errors.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace drover::http {

std::array<uint8_t, 32> sha256(std::string_view text) {
  std::array<uint8_t, 32> out{};
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(),
         out.data());
  return out;
}

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (;;) {
    auto pos = text.find(sep, start);
    parts.push_back(text.substr(start, pos == std::string_view::npos
                                           ? std::string_view::npos
                                           : pos - start));
    if (pos == std::string_view::npos)
      return parts;
    start = pos + 1;
  }
}

caf::error bad_key(std::string_view what) {
  return make_error(errc::bad_config, "api-key: " + std::string{what});
}

} // namespace

const char* scope_name(scope s) {
  switch (s) {
    case scope_submit:
      return "submit";
    case scope_read:
      return "read";
    case scope_admin:
      return "admin";
    case scope_exec:
      return "exec";
    default:
      return "unknown";
  }
}

std::string sha256_hex(std::string_view text) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (auto b : sha256(text)) {
    out += hex[b >> 4];
    out += hex[b & 0xF];
  }
  return out;
}

caf::expected<api_key> parse_api_key(std::string_view spec) {
  auto parts = split(spec, ':');
  if (parts.size() < 4 || parts.size() > 5)
    return bad_key("expected name:sha256hex:tenant:scopes[:rate]");
  api_key key;
  key.name = std::string{parts[0]};
  if (key.name.empty() || key.name.size() > 64)
    return bad_key("the name must have 1 to 64 characters");
  if (parts[1].size() != 64)
    return bad_key("key '" + key.name
                   + "': the hash must be 64 hex digits (SHA-256)");
  for (size_t i = 0; i < 32; ++i) {
    auto hi = hex_digit(parts[1][2 * i]);
    auto lo = hex_digit(parts[1][2 * i + 1]);
    if (hi < 0 || lo < 0)
      return bad_key("key '" + key.name + "': the hash must be hex digits");
    key.hash[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  key.tenant = std::string{parts[2]};
  if (key.tenant.empty())
    return bad_key("key '" + key.name + "': the tenant must not be empty");
  if (key.tenant.size() > 256)
    return bad_key("key '" + key.name + "': tenant longer than 256 bytes");
  for (auto s : split(parts[3], ',')) {
    if (s == "submit")
      key.scopes |= scope_submit;
    else if (s == "read")
      key.scopes |= scope_read;
    else if (s == "admin")
      key.scopes |= scope_admin;
    else if (s == "exec")
      key.scopes |= scope_exec;
    else
      return bad_key("key '" + key.name + "': unknown scope '" + std::string{s}
                     + "' (submit, read, admin, exec)");
  }
  if (parts.size() == 5) {
    std::string text{parts[4]};
    char* end = nullptr;
    key.rate = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(key.rate) || key.rate < 0
        || key.rate > 1e7)
      return bad_key("key '" + key.name
                     + "': rate must be requests per second in [0, 1e7]");
  }
  return key;
}

key_ring::key_ring(std::vector<api_key> keys) : keys_(std::move(keys)) {
  // nop
}

caf::expected<principal>
key_ring::authenticate(std::string_view authorization) const {
  if (keys_.empty()) {
    principal dev;
    dev.key_name = "development";
    dev.scopes = scope_all;
    return dev;
  }
  constexpr std::string_view bearer = "Bearer ";
  if (authorization.size() <= bearer.size()
      || !std::equal(bearer.begin(), bearer.end(), authorization.begin(),
                     [](char a, char b) {
                       return std::tolower(static_cast<unsigned char>(a))
                              == std::tolower(static_cast<unsigned char>(b));
                     }))
    return make_error(errc::invalid_request,
                      "missing API key: send 'Authorization: Bearer <key>'");
  auto presented = sha256(authorization.substr(bearer.size()));
  size_t found = keys_.size();
  for (size_t i = 0; i < keys_.size(); ++i) {
    // Every entry is compared, matched or not.
    bool same = CRYPTO_memcmp(presented.data(), keys_[i].hash.data(), 32) == 0;
    found = same ? i : found;
  }
  if (found == keys_.size())
    return make_error(errc::not_found, "unknown API key");
  principal p;
  p.key = found;
  p.key_name = keys_[found].name;
  p.tenant = keys_[found].tenant;
  p.scopes = keys_[found].scopes;
  return p;
}

rate_limiter::rate_limiter(size_t keys, double default_rate)
    : buckets_(keys), default_rate_(default_rate) {
  // nop
}

bool rate_limiter::take(size_t k, double rate,
                        std::chrono::steady_clock::time_point now,
                        double& retry_after_s) {
  if (k >= buckets_.size())
    return true; // development mode: no limit
  if (rate <= 0)
    rate = default_rate_;
  if (rate <= 0)
    return true;
  auto burst = std::max(1.0, rate);
  std::lock_guard<std::mutex> guard{mx_};
  auto& b = buckets_[k];
  if (b.tokens < 0) {
    b.tokens = burst;
  } else {
    std::chrono::duration<double> dt = now - b.last;
    b.tokens = std::min(burst, b.tokens + std::max(0.0, dt.count()) * rate);
  }
  b.last = now;
  if (b.tokens >= 1.0) {
    b.tokens -= 1.0;
    return true;
  }
  retry_after_s = (1.0 - b.tokens) / rate;
  return false;
}

stream_counter::stream_counter(size_t keys, size_t max_per_key)
    : open_(keys), max_(max_per_key) {
  // nop
}

bool stream_counter::acquire(size_t k) {
  std::lock_guard<std::mutex> guard{mx_};
  auto& n = k < open_.size() ? open_[k] : dev_open_;
  if (n >= max_)
    return false;
  ++n;
  return true;
}

void stream_counter::release(size_t k) {
  std::lock_guard<std::mutex> guard{mx_};
  auto& n = k < open_.size() ? open_[k] : dev_open_;
  if (n > 0)
    --n;
}

} // namespace drover::http
