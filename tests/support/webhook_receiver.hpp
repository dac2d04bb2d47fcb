#pragma once

// A scripted HTTP(S) server on 127.0.0.1:<ephemeral port> for webhook tests:
// it records every request it reads and answers each with the next entry of
// its script (the last entry repeats). Connections are served one at a time
// on the receiver's own thread with blocking Asio calls; the test waits for
// requests with deadlines (wait_for), never with sleeps.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unistd.h>
#include <vector>

namespace drover::testing {

/// What the receiver does with one request.
struct reply {
  explicit reply(unsigned status = 200, std::string body = {},
                 std::vector<std::pair<std::string, std::string>> headers = {})
      : status(status), body(std::move(body)), headers(std::move(headers)) {
    // Nothing else.
  }

  /// Reads the request and never answers.
  static reply stalling() {
    reply r;
    r.stall = true;
    return r;
  }

  /// Answers 200 with a body of `n` bytes.
  static reply flooding(size_t n) {
    reply r;
    r.huge_body = n;
    return r;
  }

  /// Answers 200 with `n` bytes of chunked body (no Content-Length).
  static reply flooding_chunked(size_t n) {
    reply r = flooding(n);
    r.chunked = true;
    return r;
  }

  unsigned status = 200;
  std::string body;
  /// Extra header fields, e.g. {"location", "http://..."}.
  std::vector<std::pair<std::string, std::string>> headers;
  /// Read the request, then answer nothing until the receiver stops (or
  /// the client goes away).
  bool stall = false;
  /// Announce and stream this many body bytes (until the client stops
  /// reading); 0 = send `body`.
  size_t huge_body = 0;
  /// Send the huge body chunked instead of announcing its length.
  bool chunked = false;
};

/// One request as the receiver read it.
struct received_request {
  std::string method;
  std::string target;
  std::string body;
  std::string webhook_id;
  std::string webhook_timestamp;
  std::string webhook_signature;
  std::string content_type;
  std::string user_agent;
  std::string host;
  /// TLS only: the server name the client sent (SNI).
  std::string sni;
  std::chrono::steady_clock::time_point at;
};

/// A self-signed certificate for the name "localhost" only (no IP address),
/// written as PEM files (the key and the certificate, which is its own CA).
struct test_certificate {
  std::string cert_file;
  std::string key_file;

  test_certificate() {
    char cert_path[] = "/tmp/drover-webhook-cert-XXXXXX";
    char key_path[] = "/tmp/drover-webhook-key-XXXXXX";
    int cfd = mkstemp(cert_path);
    int kfd = mkstemp(key_path);
    close(cfd);
    close(kfd);
    cert_file = cert_path;
    key_file = key_path;
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 4711);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    auto* name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(
        name, "CN", MBSTRING_ASC,
        reinterpret_cast<const unsigned char*>("localhost"), -1, -1, 0);
    X509_set_issuer_name(x, name);
    add_ext(x, NID_subject_alt_name, "DNS:localhost");
    add_ext(x, NID_basic_constraints, "critical,CA:TRUE");
    X509_sign(x, key, EVP_sha256());
    FILE* f = std::fopen(cert_file.c_str(), "w");
    PEM_write_X509(f, x);
    std::fclose(f);
    f = std::fopen(key_file.c_str(), "w");
    PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
    std::fclose(f);
    X509_free(x);
    EVP_PKEY_free(key);
  }

  ~test_certificate() {
    std::remove(cert_file.c_str());
    std::remove(key_file.c_str());
  }

  test_certificate(const test_certificate&) = delete;
  test_certificate& operator=(const test_certificate&) = delete;

private:
  static void add_ext(X509* x, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
  }
};

class webhook_receiver {
public:
  /// Plain HTTP, or HTTPS with `cert` when given (it must outlive the
  /// receiver's constructor only).
  explicit webhook_receiver(std::vector<reply> script,
                            const test_certificate* cert = nullptr)
      : script_(std::move(script)), acceptor_(ioc_) {
    namespace asio = boost::asio;
    using tcp = asio::ip::tcp;
    if (cert != nullptr) {
      tls_ = std::make_unique<asio::ssl::context>(
          asio::ssl::context::tls_server);
      tls_->use_certificate_chain_file(cert->cert_file);
      tls_->use_private_key_file(cert->key_file, asio::ssl::context::pem);
    }
    tcp::endpoint ep{asio::ip::make_address("127.0.0.1"), 0};
    acceptor_.open(ep.protocol());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread{[this] { serve(); }};
  }

  ~webhook_receiver() {
    {
      std::lock_guard<std::mutex> guard{mx_};
      stopping_ = true;
    }
    cv_.notify_all();
    // Wake a blocking accept with a connection of our own.
    boost::system::error_code ec;
    boost::asio::io_context wake_ioc;
    boost::asio::ip::tcp::socket wake{wake_ioc};
    wake.connect({boost::asio::ip::make_address("127.0.0.1"), port_}, ec);
    thread_.join();
  }

  webhook_receiver(const webhook_receiver&) = delete;
  webhook_receiver& operator=(const webhook_receiver&) = delete;

  uint16_t port() const {
    return port_;
  }

  std::string url(const std::string& path = "/hook") const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }

  /// Waits until `n` requests arrived or `timeout` passed; returns a copy
  /// of what arrived.
  std::vector<received_request> wait_for(size_t n,
                                         std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> guard{mx_};
    cv_.wait_for(guard, timeout, [&] { return requests_.size() >= n; });
    return requests_;
  }

  std::vector<received_request> requests() {
    std::lock_guard<std::mutex> guard{mx_};
    return requests_;
  }

private:
  template <class Stream>
  void exchange(Stream& stream, const std::string& sni) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    boost::system::error_code ec;
    http::read(stream, buffer, req, ec);
    if (ec)
      return;
    reply r;
    {
      std::lock_guard<std::mutex> guard{mx_};
      received_request x;
      x.method = std::string{req.method_string()};
      x.target = std::string{req.target()};
      x.body = req.body();
      auto field = [&req](const char* name) {
        auto i = req.find(name);
        return i == req.end() ? std::string{} : std::string{i->value()};
      };
      x.webhook_id = field("webhook-id");
      x.webhook_timestamp = field("webhook-timestamp");
      x.webhook_signature = field("webhook-signature");
      x.content_type = field("content-type");
      x.user_agent = field("user-agent");
      x.host = field("host");
      x.sni = sni;
      x.at = std::chrono::steady_clock::now();
      r = script_.at(std::min(requests_.size(), script_.size() - 1));
      requests_.push_back(std::move(x));
    }
    cv_.notify_all();
    if (r.stall) {
      std::unique_lock<std::mutex> guard{mx_};
      cv_.wait(guard, [this] { return stopping_; });
      return;
    }
    if (r.huge_body > 0) {
      std::string head
          = "HTTP/1.1 " + std::to_string(r.status) + " OK\r\n"
            + (r.chunked ? "Transfer-Encoding: chunked"
                         : "Content-Length: " + std::to_string(r.huge_body))
            + "\r\n\r\n";
      boost::asio::write(stream, boost::asio::buffer(head), ec);
      std::string chunk(64 * 1024, 'x');
      if (r.chunked)
        chunk = "10000\r\n" + chunk + "\r\n"; // 0x10000 bytes each
      for (size_t sent = 0; !ec && sent < r.huge_body; sent += 64 * 1024)
        boost::asio::write(stream, boost::asio::buffer(chunk), ec);
      if (r.chunked && !ec)
        boost::asio::write(stream, boost::asio::buffer("0\r\n\r\n", 5), ec);
      return;
    }
    http::response<http::string_body> res{static_cast<http::status>(r.status),
                                          11};
    for (auto& [name, value] : r.headers)
      res.set(name, value);
    res.set(http::field::connection, "close");
    res.body() = r.body;
    res.prepare_payload();
    http::write(stream, res, ec);
  }

  void serve() {
    namespace asio = boost::asio;
    using tcp = asio::ip::tcp;
    while (true) {
      tcp::socket socket{ioc_};
      boost::system::error_code ec;
      acceptor_.accept(socket, ec);
      {
        std::lock_guard<std::mutex> guard{mx_};
        if (stopping_)
          return;
      }
      if (ec)
        continue;
      if (!tls_) {
        exchange(socket, {});
      } else {
        asio::ssl::stream<tcp::socket&> stream{socket, *tls_};
        stream.handshake(asio::ssl::stream_base::server, ec);
        if (ec)
          continue; // e.g. the client refused our certificate
        const char* sni = SSL_get_servername(stream.native_handle(),
                                             TLSEXT_NAMETYPE_host_name);
        exchange(stream, sni != nullptr ? sni : "");
      }
      socket.close(ec);
    }
  }

  std::vector<reply> script_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mx_;
  std::condition_variable cv_;
  std::vector<received_request> requests_;
  bool stopping_ = false;
};

} // namespace drover::testing
