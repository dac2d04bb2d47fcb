#include "gateway/webhook.hpp"

#include "gateway/http_api.hpp"
#include "runtime/backoff.hpp"
#include "runtime/codec.hpp"
#include "runtime/config.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/url.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <exception>

namespace drover {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using boost::system::error_code;
using tcp = asio::ip::tcp;

namespace {

std::string base64(const unsigned char* data, size_t size) {
  std::string out(4 * ((size + 2) / 3), '\0');
  // EVP_EncodeBlock writes the text plus a NUL; std::string has room for it.
  auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data,
                           static_cast<int>(size));
  out.resize(static_cast<size_t>(std::max(n, 0)));
  return out;
}

/// At most `n` bytes of an answer's body, as printable UTF-8 on one line,
/// for the audit log.
std::string snippet(std::string_view body, size_t n = 200) {
  auto text = valid_utf8(body.substr(0, n));
  for (auto& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      c = ' ';
  if (body.size() > n)
    text += "...";
  return text;
}

std::string ms_text(std::chrono::milliseconds x) {
  return std::to_string(x.count()) + " ms";
}

/// The message of a Drover error (its context), for the audit log.
std::string message_of(const caf::error& err) {
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    return ctx.get_as<std::string>(0);
  return describe(err);
}

} // namespace

// -- signing and payload ------------------------------------------------------

std::string webhook_signature(std::string_view key, std::string_view id,
                              int64_t timestamp_s, std::string_view body) {
  std::string signed_content;
  auto ts = std::to_string(timestamp_s);
  signed_content.reserve(id.size() + ts.size() + body.size() + 2);
  signed_content.append(id).append(".").append(ts).append(".").append(body);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_size = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(signed_content.data()),
       signed_content.size(), mac, &mac_size);
  return "v1," + base64(mac, mac_size);
}

std::string webhook_id(const std::string& job_id, uint64_t terminal_sequence) {
  return job_id + "." + std::to_string(terminal_sequence);
}

std::string webhook_body(const job_record& rec) {
  // The job resource of the HTTP API, with the result inlined: a receiver
  // should not need a second request (and an API key) to learn it.
  auto job = http::job_json(rec);
  std::string result = "null";
  if (rec.status == job_status::completed && !rec.result.empty()) {
    // Handlers return JSON text; anything else goes out as a string.
    auto not_json = validate_json(rec.result);
    result = not_json ? json_quote(rec.result) : rec.result;
  }
  std::string data;
  if (!job.empty() && job.back() == '}') {
    job.pop_back();
    data = job + ",\"result\":" + result + "}";
  } else {
    data = "{\"job\":" + job + ",\"result\":" + result + "}";
  }
  return "{\"type\":" + json_quote(std::string{"job."} + to_string(rec.status))
         + ",\"timestamp\":" + json_quote(http::rfc3339(rec.completed_at_ms))
         + ",\"data\":" + data + "}";
}

// -- address policy -----------------------------------------------------------

address_policy::address_policy(std::vector<ip_network> allow)
    : allow_(std::move(allow)) {
  // Nothing else to set up.
}

caf::error address_policy::check(const ip_address& x) const {
  auto why = special_purpose(x);
  if (why == nullptr)
    return caf::none;
  for (const auto& net : allow_)
    if (net.contains(x))
      return caf::none;
  return make_error(errc::invalid_request,
                    x.to_string() + " (" + why
                        + "): webhooks may not reach it unless --webhook-allow "
                          "lists it");
}

// -- options ------------------------------------------------------------------

caf::expected<webhook_options> webhook_options_from(const node_config& cfg) {
  webhook_options opts;
  if (!cfg.webhook_secret.empty()) {
    auto key = decode_webhook_secret(cfg.webhook_secret);
    if (!key)
      return std::move(key.error());
    opts.key = std::move(*key);
  }
  for (const auto& text : cfg.webhook_allow) {
    auto net = parse_ip_network(text);
    if (!net)
      return make_error(errc::bad_config,
                        "webhook-allow: " + describe(net.error()));
    opts.allow.push_back(*net);
  }
  opts.retry_period = cfg.webhook_retry_period;
  opts.initial_backoff = cfg.webhook_initial_backoff;
  opts.max_backoff = cfg.webhook_max_backoff;
  opts.timeout = cfg.webhook_timeout;
  opts.max_response_bytes = cfg.webhook_max_response_bytes;
  return opts;
}

std::chrono::milliseconds webhook_backoff(const webhook_options& opts,
                                          uint32_t failed_attempts,
                                          double uniform01) {
  // The project's one backoff formula (runtime/backoff.hpp) with equal
  // jitter and at least 1 ms.
  backoff_schedule schedule;
  schedule.max = std::max(opts.max_backoff, std::chrono::milliseconds{1});
  schedule.initial = std::clamp(opts.initial_backoff,
                                std::chrono::milliseconds{1}, schedule.max);
  schedule.multiplier = 2.0;
  schedule.jitter = 0.5;
  schedule.floor = std::chrono::milliseconds{1};
  // `uniform01` counts from the bottom of the window here, from the top in
  // backoff_schedule.
  auto u = 1.0 - std::clamp(uniform01, 0.0, 1.0);
  return schedule.delay(std::max<uint32_t>(failed_attempts, 1) - 1, u);
}

// -- one attempt --------------------------------------------------------------

struct webhook_client::impl {
  asio::ssl::context tls{asio::ssl::context::tls_client};
  /// Why https can't be used (the TLS context failed to set up); empty =
  /// fine.
  std::string tls_error;
};

webhook_client::webhook_client(webhook_options opts)
    : opts_(std::move(opts)),
      policy_(opts_.allow),
      impl_(std::make_unique<impl>()) {
  error_code ec;
  auto& tls = impl_->tls;
  tls.set_options(
      asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2
          | asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1
          | asio::ssl::context::no_tlsv1_1,
      ec);
  if (!ec)
    tls.set_default_verify_paths(ec);
  if (!ec && !opts_.extra_ca_file.empty())
    tls.load_verify_file(opts_.extra_ca_file, ec);
  if (!ec)
    tls.set_verify_mode(asio::ssl::verify_peer, ec);
  if (ec)
    impl_->tls_error = "TLS setup failed: " + ec.message();
}

webhook_client::~webhook_client() = default;

namespace {

using clock_type = std::chrono::steady_clock;

/// Runs one asynchronous operation to completion on `ioc` (the stream's
/// expiry bounds it) and returns its error.
template <class Start>
error_code run_op(asio::io_context& ioc, Start start) {
  error_code result = asio::error::would_block;
  start([&result](error_code ec, auto&&...) { result = ec; });
  ioc.restart();
  ioc.run();
  return result;
}

/// What the exchange ended with, before classification.
struct exchange_result {
  error_code ec;
  /// Which step failed: "connecting", "TLS handshake", "sending",
  /// "waiting for the response".
  const char* step = "";
  bool header_done = false;
  unsigned status = 0;
  std::string location;
  std::string body;
};

template <class Stream>
void write_and_read(asio::io_context& ioc, Stream& stream,
                    bhttp::request<bhttp::string_body>& req, size_t max_body,
                    exchange_result& out) {
  out.step = "sending";
  out.ec = run_op(ioc, [&](auto handler) {
    bhttp::async_write(stream, req, std::move(handler));
  });
  if (out.ec)
    return;
  out.step = "waiting for the response";
  bhttp::response_parser<bhttp::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(max_body);
  beast::flat_buffer buffer;
  // The header first, then the body: Boost 1.74's parser loses the
  // body_limit error of a Content-Length over the limit when body bytes
  // arrive in the same read as the header and it parses on (eagerly); a
  // header-only read stops right there and reports it.
  out.ec = run_op(ioc, [&](auto handler) {
    bhttp::async_read_header(stream, buffer, parser, std::move(handler));
  });
  if (!out.ec && !parser.is_done())
    out.ec = run_op(ioc, [&](auto handler) {
      bhttp::async_read(stream, buffer, parser, std::move(handler));
    });
  out.header_done = parser.is_header_done();
  if (out.header_done) {
    const auto& res = parser.get();
    out.status = res.result_int();
    if (auto i = res.find(bhttp::field::location); i != res.end())
      out.location = std::string{i->value()};
    if (!out.ec)
      out.body = res.body();
  }
}

webhook_response classify(const exchange_result& x,
                          const webhook_options& opts) {
  webhook_response out;
  if (x.header_done && x.status >= 100 && x.status <= 599)
    out.status_code = static_cast<uint16_t>(x.status);
  if (x.ec) {
    if (x.ec == beast::error::timeout)
      out.error
          = "no answer within " + ms_text(opts.timeout) + " (" + x.step + ")";
    else if (x.ec == bhttp::error::body_limit)
      out.error = "response body over "
                  + std::to_string(opts.max_response_bytes) + " bytes";
    else if (x.ec == bhttp::error::header_limit)
      out.error = "response header over 16384 bytes";
    else if (x.ec == bhttp::error::end_of_stream && !x.header_done)
      out.error = std::string{x.step}
                  + ": connection closed without an "
                    "answer";
    else
      out.error = std::string{x.step} + ": " + x.ec.message();
    return out;
  }
  if (x.status >= 200 && x.status <= 299)
    return out;
  if (x.status == 410)
    out.error = "410 Gone: the endpoint asks not to be called again";
  else if (x.status >= 300 && x.status <= 399)
    out.error = "redirect (" + std::to_string(x.status)
                + ") not followed; location: " + snippet(x.location);
  else
    out.error = "HTTP " + std::to_string(x.status)
                + (x.body.empty() ? "" : ": " + snippet(x.body));
  return out;
}

webhook_response refused(std::string why) {
  webhook_response out;
  out.error = std::move(why);
  out.refused = true;
  return out;
}

webhook_response failed(std::string why) {
  webhook_response out;
  out.error = std::move(why);
  return out;
}

} // namespace

webhook_response webhook_client::post(const webhook_request& req) const {
  try {
    auto deadline = clock_type::now() + opts_.timeout;
    auto url = parse_http_url(req.url);
    if (!url)
      return refused("callback URL refused: " + message_of(url.error()));
    if (url->https && !impl_->tls_error.empty())
      return failed(impl_->tls_error);
    asio::io_context ioc;
    // Resolve (or take the literal), then check every address: one
    // forbidden address refuses the URL, whatever the others are.
    std::vector<tcp::endpoint> endpoints;
    if (url->host_kind == url_host_kind::name) {
      tcp::resolver resolver{ioc};
      error_code ec;
      auto results = resolver.resolve(url->host, std::to_string(url->port), ec);
      if (ec)
        return failed("resolving " + url->host + ": " + ec.message());
      for (const auto& entry : results)
        endpoints.push_back(entry.endpoint());
      if (endpoints.empty())
        return failed("resolving " + url->host + ": no addresses");
    } else {
      error_code ec;
      auto addr = asio::ip::make_address(url->host, ec);
      if (ec)
        return refused("callback URL refused: bad address " + url->host);
      endpoints.emplace_back(addr, url->port);
    }
    for (const auto& ep : endpoints) {
      ip_address addr;
      if (ep.address().is_v4()) {
        addr = ip_address::from_v4(ep.address().to_v4().to_uint());
      } else {
        addr.v4 = false;
        auto bytes = ep.address().to_v6().to_bytes();
        std::copy(bytes.begin(), bytes.end(), addr.bytes.begin());
      }
      if (auto err = policy_.check(addr))
        return refused("callback URL refused: "
                       + (url->host_kind == url_host_kind::name
                              ? url->host + " -> "
                              : std::string{})
                       + message_of(err));
    }
    if (clock_type::now() >= deadline)
      return failed("no answer within " + ms_text(opts_.timeout)
                    + " (resolving " + url->host + ")");
    bhttp::request<bhttp::string_body> request{bhttp::verb::post, url->target,
                                               11};
    request.set(bhttp::field::host, url->host_header());
    request.set(bhttp::field::user_agent, "drover-webhook/0.1");
    request.set(bhttp::field::content_type, "application/json");
    request.set(bhttp::field::connection, "close");
    auto timestamp_s = req.at_ms / 1000;
    request.set("webhook-id", req.webhook_id);
    request.set("webhook-timestamp", std::to_string(timestamp_s));
    if (!opts_.key.empty())
      request.set(
          "webhook-signature",
          webhook_signature(opts_.key, req.webhook_id, timestamp_s, req.body));
    request.body() = req.body;
    request.prepare_payload();
    exchange_result x;
    x.step = "connecting";
    if (!url->https) {
      beast::tcp_stream stream{ioc};
      stream.expires_at(deadline);
      x.ec = run_op(ioc, [&](auto handler) {
        stream.async_connect(endpoints, std::move(handler));
      });
      if (!x.ec)
        write_and_read(ioc, stream, request, opts_.max_response_bytes, x);
      error_code ignored;
      stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      return classify(x, opts_);
    }
    beast::ssl_stream<beast::tcp_stream> stream{ioc, impl_->tls};
    auto* ssl = stream.native_handle();
    if (url->host_kind == url_host_kind::name) {
      // SNI, and the name the certificate must carry.
      if (SSL_set_tlsext_host_name(ssl, url->host.c_str()) != 1
          || SSL_set1_host(ssl, url->host.c_str()) != 1)
        return failed("TLS setup failed for host " + url->host);
    } else if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
                                             url->host.c_str())
               != 1) {
      return failed("TLS setup failed for address " + url->host);
    }
    beast::get_lowest_layer(stream).expires_at(deadline);
    x.ec = run_op(ioc, [&](auto handler) {
      beast::get_lowest_layer(stream).async_connect(endpoints,
                                                    std::move(handler));
    });
    if (!x.ec) {
      x.step = "TLS handshake";
      x.ec = run_op(ioc, [&](auto handler) {
        stream.async_handshake(asio::ssl::stream_base::client,
                               std::move(handler));
      });
      if (x.ec && SSL_get_verify_result(ssl) != X509_V_OK)
        return failed(
            std::string{"TLS handshake: certificate not trusted: "}
            + X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
    }
    if (!x.ec)
      write_and_read(ioc, stream, request, opts_.max_response_bytes, x);
    // No TLS close_notify: the answer is in (or the attempt failed), and a
    // peer that doesn't answer the shutdown would hold us until the
    // deadline.
    error_code ignored;
    beast::get_lowest_layer(stream).socket().close(ignored);
    return classify(x, opts_);
  } catch (const std::exception& e) {
    return failed(std::string{"webhook client: "} + e.what());
  }
}

} // namespace drover
