#include "gateway/stream_token.hpp"

#include "runtime/errors.hpp"

#include <kj/encoding.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <array>
#include <cctype>
#include <stdexcept>
#include <vector>

namespace drover::http {

namespace {

/// Domain separation: a MAC made for something else with the same key is
/// never a valid token.
constexpr std::string_view mac_context = "drover stream token v1\n";

std::string hmac_sha256(const std::string& key, std::string_view payload) {
  std::string input{mac_context};
  input.append(payload.data(), payload.size());
  std::array<unsigned char, EVP_MAX_MD_SIZE> out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
           reinterpret_cast<const unsigned char*>(input.data()), input.size(),
           out.data(), &len)
      == nullptr)
    throw std::runtime_error("HMAC-SHA256 failed"); // OpenSSL broken: a bug
  return std::string(reinterpret_cast<const char*>(out.data()), len);
}

std::string base64url(std::string_view bytes) {
  auto text = kj::encodeBase64Url(kj::ArrayPtr<const kj::byte>{
      reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()});
  std::string out{text.cStr(), text.size()};
  while (!out.empty() && out.back() == '=')
    out.pop_back();
  return out;
}

/// Decodes unpadded base64url; false on any character outside it and on any
/// spelling but the one base64url() writes. The last character of a 32-byte
/// MAC carries two unused bits: without the check, four spellings of one
/// token verify (CI saw a "forged" token with a flipped last character pass).
bool from_base64url(std::string_view text, std::string& out) {
  std::string std_alphabet;
  std_alphabet.reserve(text.size() + 2);
  for (char c : text) {
    if (c == '-')
      std_alphabet += '+';
    else if (c == '_')
      std_alphabet += '/';
    else if (c == '+' || c == '/' || c == '=')
      return false; // one spelling per token
    else
      std_alphabet += c;
  }
  auto bytes = kj::decodeBase64(
      kj::ArrayPtr<const char>{std_alphabet.data(), std_alphabet.size()});
  if (bytes.hadErrors)
    return false;
  out.assign(reinterpret_cast<const char*>(bytes.begin()), bytes.size());
  return base64url(out) == text;
}

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> out;
  size_t pos = 0;
  for (;;) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) {
      out.push_back(text.substr(pos));
      return out;
    }
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
}

caf::error bad_token(const char* why) {
  return make_error(errc::invalid_request, std::string{"stream token: "} + why);
}

} // namespace

caf::expected<std::string> decode_stream_token_key(std::string_view spec) {
  auto bad = [](const std::string& why) {
    return make_error(errc::bad_config, "stream-token-key: " + why);
  };
  bool hex = spec.substr(0, 4) == "hex:";
  if (!hex && spec.substr(0, 7) != "base64:")
    return bad("expected hex:<hex digits> or base64:<base64>, e.g. "
               "base64:$(openssl rand -base64 32)");
  auto text = spec.substr(hex ? 4 : 7);
  kj::ArrayPtr<const char> chars{text.data(), text.size()};
  auto bytes = hex ? kj::decodeHex(chars) : kj::decodeBase64(chars);
  if (bytes.hadErrors)
    return bad(hex ? "the part after hex: is not an even number of hex digits"
                   : "the part after base64: is not valid base64");
  if (bytes.size() < min_stream_token_key_bytes)
    return bad("the key must have at least "
               + std::to_string(min_stream_token_key_bytes) + " bytes, not "
               + std::to_string(bytes.size()));
  return caf::expected<std::string>{
      std::string(reinterpret_cast<const char*>(bytes.begin()), bytes.size())};
}

std::string random_stream_token_key() {
  std::string key(min_stream_token_key_bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()),
                 static_cast<int>(key.size()))
      != 1)
    throw std::runtime_error("RAND_bytes failed"); // no entropy: a bug here
  return key;
}

caf::expected<std::string> mint_stream_token(const std::string& key,
                                             const stream_grant& grant) {
  for (auto* field : {&grant.key_name, &grant.tenant, &grant.job})
    if (field->find('\n') != std::string::npos)
      return make_error(errc::invalid_request,
                        "stream token: a field holds a line feed");
  if (grant.job.empty())
    return make_error(errc::invalid_request, "stream token: no job");
  auto payload = "1\n" + std::to_string(grant.expires_at) + "\nread\n"
                 + grant.job + '\n' + grant.key_name + '\n' + grant.tenant;
  return base64url(payload) + '.' + base64url(hmac_sha256(key, payload));
}

caf::expected<stream_grant> verify_stream_token(const std::string& key,
                                                std::string_view token,
                                                int64_t now) {
  // Bounds the work an unauthenticated client can cause.
  if (token.empty() || token.size() > 2048)
    return bad_token("malformed");
  auto dot = token.find('.');
  if (dot == std::string_view::npos)
    return bad_token("malformed");
  std::string payload;
  std::string mac;
  if (!from_base64url(token.substr(0, dot), payload)
      || !from_base64url(token.substr(dot + 1), mac))
    return bad_token("malformed");
  auto expected = hmac_sha256(key, payload);
  if (mac.size() != expected.size()
      || CRYPTO_memcmp(mac.data(), expected.data(), mac.size()) != 0)
    return bad_token("the signature does not verify (forged, or minted with "
                     "another key)");
  // Signed by us: the fields are as mint_stream_token wrote them.
  auto f = split_lines(payload);
  if (f.size() != 6 || f[0] != "1" || f[2] != "read" || f[3].empty())
    return bad_token("malformed");
  stream_grant g;
  try {
    size_t used = 0;
    g.expires_at = std::stoll(std::string{f[1]}, &used);
    if (used != f[1].size())
      return bad_token("malformed");
  } catch (const std::exception&) {
    return bad_token("malformed");
  }
  if (g.expires_at <= now)
    return bad_token("expired; mint a new one");
  if (g.expires_at - now > max_stream_token_ttl.count())
    return bad_token("expires too far ahead (clocks of the gateways differ?)");
  g.job = std::string{f[3]};
  g.key_name = std::string{f[4]};
  g.tenant = std::string{f[5]};
  return g;
}

int64_t unix_seconds_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string redact_token_in_target(std::string_view target) {
  auto q = target.find('?');
  if (q == std::string_view::npos)
    return std::string{target};
  std::string out{target.substr(0, q + 1)};
  auto query = target.substr(q + 1);
  size_t pos = 0;
  bool first = true;
  while (pos <= query.size()) {
    auto amp = query.find('&', pos);
    auto pair = query.substr(pos, amp == std::string_view::npos
                                      ? std::string_view::npos
                                      : amp - pos);
    if (!first)
      out += '&';
    first = false;
    auto eq = pair.find('=');
    // Any spelling the gateway would decode as "token" ("tok%65n").
    std::string name;
    auto raw = pair.substr(0, eq);
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size()
          && std::isxdigit(static_cast<unsigned char>(raw[i + 1]))
          && std::isxdigit(static_cast<unsigned char>(raw[i + 2]))) {
        name += static_cast<char>(
            std::stoi(std::string{raw.substr(i + 1, 2)}, nullptr, 16));
        i += 2;
      } else {
        name += raw[i];
      }
    }
    if (name == "token" || name == "access_token")
      out += std::string{raw} + "=REDACTED";
    else
      out.append(pair.data(), pair.size());
    if (amp == std::string_view::npos)
      break;
    pos = amp + 1;
  }
  return out;
}

} // namespace drover::http
