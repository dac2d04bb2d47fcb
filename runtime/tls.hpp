#pragma once

// Mutual TLS through CAF's OpenSSL module, for nodes (the cluster and admin
// ports) and for clients of the admin port (the client API, droverctl): one
// home for the three PEM files, their checks and how an actor system takes
// them.
//
// CAF's OpenSSL module holds one context per actor system: with a CA file,
// both ends of every TLS connection present a certificate and check the
// other's against that CA. A client of a TLS admin port therefore needs a
// certificate the cluster's CA signed, as kubectl does with a cluster's CA.

#include <caf/error.hpp>
#include <caf/fwd.hpp>

#include <string>

namespace drover {

struct tls_files {
  /// This process's certificate chain (PEM).
  std::string certificate;
  /// Its unencrypted private key (PEM).
  std::string key;
  /// The CA whose certificates peers must present (PEM).
  std::string ca;

  bool enabled() const {
    return !certificate.empty() || !key.empty() || !ca.empty();
  }
};

/// All three or none; each file loads and the key belongs to the
/// certificate. errc::bad_config naming the setting (`prefix` + "certificate",
/// "key", "ca": "--tls-" for command lines, "tls." for client options).
caf::error check_tls(const tls_files& files, const std::string& prefix);

/// Has `cfg` load CAF's OpenSSL module with `files` (enabled ones only;
/// check_tls first), with the OpenSSL error-queue fix linked in.
void use_tls(const tls_files& files, caf::actor_system_config& cfg);

/// Does nothing; calling it links runtime/tls_errors.cpp (the OpenSSL error
/// queue fix for CAF's TLS) into the program from the static library.
void tls_errors_linked();

} // namespace drover
