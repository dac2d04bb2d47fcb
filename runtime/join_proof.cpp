#include "runtime/join_proof.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

namespace drover {

std::string make_join_challenge() {
  std::string out(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()),
                 static_cast<int>(out.size()))
      != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

std::string join_proof(const std::string& secret, const std::string& role,
                       const std::string& node_id,
                       const std::string& challenge) {
  std::string text = "drover-join/1\n" + role + '\n' + node_id + '\n';
  text += challenge;
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(text.data()), text.size(), mac,
       &len);
  return std::string(reinterpret_cast<const char*>(mac), len);
}

bool check_join_proof(const std::string& secret, const std::string& role,
                      const std::string& node_id, const std::string& challenge,
                      const std::string& proof) {
  auto expected = join_proof(secret, role, node_id, challenge);
  return proof.size() == expected.size()
         && CRYPTO_memcmp(proof.data(), expected.data(), proof.size()) == 0;
}

} // namespace drover
