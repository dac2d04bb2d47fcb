#include "runtime/tls.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/openssl/manager.hpp>

#include <openssl/ssl.h>

#include <memory>

namespace drover {

caf::error check_tls(const tls_files& files, const std::string& prefix) {
  auto bad = [](const std::string& what) {
    return make_error(errc::bad_config, what);
  };
  int given
      = !files.certificate.empty() + !files.key.empty() + !files.ca.empty();
  if (given == 0)
    return caf::none;
  if (given != 3)
    return bad("TLS needs all three of " + prefix + "certificate, " + prefix
               + "key and " + prefix + "ca");
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{
      SSL_CTX_new(TLS_method()), SSL_CTX_free};
  if (!ctx)
    return bad("TLS: cannot create an OpenSSL context");
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), files.certificate.c_str())
      != 1)
    return bad(prefix + "certificate: cannot load '" + files.certificate
               + "' (PEM certificate chain)");
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), files.key.c_str(),
                                  SSL_FILETYPE_PEM)
      != 1)
    return bad(prefix + "key: cannot load '" + files.key
               + "' (unencrypted PEM private key)");
  if (SSL_CTX_check_private_key(ctx.get()) != 1)
    return bad(prefix + "key does not belong to " + prefix + "certificate");
  if (SSL_CTX_load_verify_locations(ctx.get(), files.ca.c_str(), nullptr) != 1)
    return bad(prefix + "ca: cannot load '" + files.ca
               + "' (PEM certificates)");
  return caf::none;
}

void use_tls(const tls_files& files, caf::actor_system_config& cfg) {
  if (!files.enabled())
    return;
  cfg.openssl_certificate = files.certificate;
  cfg.openssl_key = files.key;
  cfg.openssl_cafile = files.ca;
  cfg.load<caf::openssl::manager>();
  tls_errors_linked();
}

} // namespace drover
