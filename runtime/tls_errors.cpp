// OpenSSL's per-thread error queue, kept empty for CAF's TLS sessions.
//
// OpenSSL requires the calling thread's error queue to be empty before
// SSL_read, SSL_write, SSL_accept or SSL_connect, or SSL_get_error() cannot
// tell a mere "wants more data" from a failure (it reports SSL_ERROR_SSL
// whenever the queue holds anything). CAF 0.17's OpenSSL module never
// clears it, and empties it only inside log statements that Debian's build
// compiles out. All cluster connections run on CAF's one multiplexer
// thread, so a stranger's failed handshake on the cluster port (a worker
// without a certificate from the cluster's CA, a port scanner) left its
// error there, and the next non-blocking read of a healthy connection that
// merely wanted more data was taken for a failure: CAF dropped a joined
// worker (tests/nodes/cluster_join_test.cpp, mutual TLS; found under
// ThreadSanitizer, where the reconnects showed in the logs).
//
// These definitions live in the program (drover-node, droverctl, a worker
// program linking Drover::worker, a client program linking Drover::client):
// use_tls() (runtime/tls.hpp) and node_main call tls_errors_linked(), so
// the linker takes this file out of the static library into the program
// even though nothing calls SSL_read here by name. The dynamic linker
// resolves libcaf_openssl's references to these functions to the
// executable's definitions first; each clears the queue and calls
// libssl's. Clearing before each call is what OpenSSL's documentation asks
// of every caller, so the node's own OpenSSL users lose nothing.

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <dlfcn.h>

#include "runtime/tls.hpp"

namespace {

template <class F>
F next_symbol(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

using io_fn = int (*)(SSL*, void*, int);
using write_fn = int (*)(SSL*, const void*, int);
using handshake_fn = int (*)(SSL*);

} // namespace

extern "C" {

int SSL_read(SSL* ssl, void* buf, int num) {
  static const auto real = next_symbol<io_fn>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_write(SSL* ssl, const void* buf, int num) {
  static const auto real = next_symbol<write_fn>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

int SSL_accept(SSL* ssl) {
  static const auto real = next_symbol<handshake_fn>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

int SSL_connect(SSL* ssl) {
  static const auto real = next_symbol<handshake_fn>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

} // extern "C"

void drover::tls_errors_linked() {
  // nop: see the file comment
}
