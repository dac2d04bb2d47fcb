#pragma once

// A small blocking HTTP/1.1, server-sent-events and WebSocket client for the
// gateway's process tests, on Boost.Beast (header-only).
//
// Every operation has a deadline. Each call starts the asynchronous Beast
// operation on the client's own io_context with the stream's expiry set
// (beast::tcp_stream closes the socket when it passes, and the operation
// completes with beast::error::timeout), then runs the io_context until the
// operation has completed. Nothing here sleeps; a call returns as soon as
// its answer (or its deadline) is there. One object is used from one
// thread.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace drover::testing {

namespace http_detail {
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
} // namespace http_detail

using header_fields = std::vector<std::pair<std::string, std::string>>;

/// A complete response.
struct http_response {
  unsigned status = 0;
  std::string body;
  /// Header fields with lowercase names, in order.
  header_fields headers;

  /// The first value of header `name` (any case); "" if absent.
  std::string header(std::string_view name) const {
    std::string lower;
    for (char c : name)
      lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    for (auto& kv : headers)
      if (kv.first == lower)
        return kv.second;
    return {};
  }
};

/// One server-sent event, or one comment line block (`: keep-alive`).
struct sse_event {
  /// The `id:` field; "" when the event has none.
  std::string id;
  /// The `event:` field ("message" if absent); "" for a comment.
  std::string event;
  /// The `data:` lines joined with '\n'.
  std::string data;
  /// The text after ':' of a comment block; "" for an event.
  std::string comment;

  bool is_comment() const {
    return event.empty();
  }
};

namespace http_detail {

/// Runs one asynchronous operation to completion on `ioc` with `stream`'s
/// expiry at `timeout`; returns its error (beast::error::timeout when the
/// deadline passed, in which case the socket is closed).
template <class Start>
beast::error_code
run_with_deadline(net::io_context& ioc, beast::tcp_stream& stream,
                  std::chrono::milliseconds timeout, Start&& start) {
  beast::error_code result = net::error::would_block;
  bool done = false;
  stream.expires_after(timeout);
  start([&](beast::error_code ec, std::size_t = 0) {
    result = ec;
    done = true;
  });
  ioc.restart();
  while (!done && ioc.run_one() > 0) {
  }
  // Completion handlers of cancelled timers may still be queued.
  ioc.restart();
  ioc.poll();
  if (stream.socket().is_open())
    stream.expires_never();
  return done ? result : beast::error_code{net::error::timed_out};
}

/// Connects `stream` to 127.0.0.1:`port` within `timeout`.
inline beast::error_code connect_local(net::io_context& ioc,
                                       beast::tcp_stream& stream, uint16_t port,
                                       std::chrono::milliseconds timeout) {
  tcp::endpoint ep{net::ip::make_address("127.0.0.1"), port};
  return run_with_deadline(ioc, stream, timeout, [&](auto handler) {
    stream.async_connect(
        ep, [handler](beast::error_code ec) mutable { handler(ec); });
  });
}

inline header_fields fields_of(const bhttp::fields& fs) {
  header_fields out;
  for (auto& f : fs) {
    std::string name{f.name_string().data(), f.name_string().size()};
    for (auto& c : name)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.emplace_back(std::move(name),
                     std::string{f.value().data(), f.value().size()});
  }
  return out;
}

inline bhttp::request<bhttp::string_body>
make_request(bhttp::verb method, const std::string& target,
             const std::string& body, const header_fields& headers) {
  bhttp::request<bhttp::string_body> req{method, target, 11};
  req.set(bhttp::field::host, "127.0.0.1");
  req.set(bhttp::field::user_agent, "drover-gateway-test");
  bool has_type = false;
  for (auto& kv : headers) {
    req.set(kv.first, kv.second);
    if (beast::iequals(kv.first, "content-type"))
      has_type = true;
  }
  if (!body.empty() && !has_type)
    req.set(bhttp::field::content_type, "application/json");
  req.body() = body;
  if (!body.empty() || method == bhttp::verb::post
      || method == bhttp::verb::put)
    req.prepare_payload();
  return req;
}

} // namespace http_detail

/// One TCP connection to the gateway; requests on it reuse it (keep-alive).
class http_connection {
public:
  /// Connects to 127.0.0.1:`port`; `connected()` tells whether it worked.
  explicit http_connection(uint16_t port, std::chrono::milliseconds timeout
                                          = std::chrono::seconds{10})
      : stream_(ioc_) {
    using namespace http_detail;
    auto ec = connect_local(ioc_, stream_, port, timeout);
    connected_ = !ec;
  }

  bool connected() const {
    return connected_;
  }

  /// Sends a request and reads its response; nullopt on a network error or
  /// a missed deadline (`last_error()` says which). A write that fails
  /// because the server already answered and closed (413, 431) still reads
  /// the answer it sent.
  std::optional<http_response>
  request(http_detail::bhttp::verb method, const std::string& target,
          const std::string& body = {}, const header_fields& headers = {},
          std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    using namespace http_detail;
    auto req = make_request(method, target, body, headers);
    return exchange(req, timeout);
  }

  /// As request(), for a request built by the caller (odd headers).
  std::optional<http_response>
  exchange(http_detail::bhttp::request<http_detail::bhttp::string_body>& req,
           std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    using namespace http_detail;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    last_error_ = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
      bhttp::async_write(stream_, req, handler);
    });
    if (last_error_ == beast::error::timeout
        || last_error_ == net::error::timed_out)
      return std::nullopt;
    return read_response(left(deadline));
  }

  /// Writes raw bytes (a partial or hand-made request); false on error.
  bool write_raw(std::string_view bytes,
                 std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    using namespace http_detail;
    last_error_ = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
      net::async_write(stream_, net::buffer(bytes.data(), bytes.size()),
                       handler);
    });
    return !last_error_;
  }

  /// Reads one response (after write_raw); nullopt on error or deadline.
  std::optional<http_response> read_response(std::chrono::milliseconds timeout
                                             = std::chrono::seconds{10}) {
    using namespace http_detail;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::uint64_t{1} << 30);
    last_error_ = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
      bhttp::async_read(stream_, buffer_, parser, handler);
    });
    if (last_error_)
      return std::nullopt;
    auto res = parser.release();
    http_response out;
    out.status = res.result_int();
    out.body = std::move(res.body());
    out.headers = fields_of(res.base());
    return out;
  }

  /// Waits for the server to close the connection; true if it did within
  /// `timeout` (bytes it sent on the way are appended to `received`).
  bool wait_closed(std::chrono::milliseconds timeout,
                   std::string* received = nullptr) {
    using namespace http_detail;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    if (buffer_.size() > 0 && received != nullptr)
      *received += beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    for (;;) {
      char chunk[4096];
      size_t n = 0;
      auto ec
          = run_with_deadline(ioc_, stream_, left(deadline), [&](auto handler) {
              stream_.async_read_some(
                  net::buffer(chunk),
                  [&n, handler](beast::error_code ec, size_t got) mutable {
                    n = got;
                    handler(ec, got);
                  });
            });
      if (received != nullptr)
        received->append(chunk, n);
      if (ec == beast::error::timeout || ec == net::error::timed_out)
        return false;
      if (ec)
        return true; // EOF or reset: closed by the server
    }
  }

  const boost::system::error_code& last_error() const {
    return last_error_;
  }

private:
  static std::chrono::milliseconds
  left(std::chrono::steady_clock::time_point deadline) {
    auto d = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    return std::max(d, std::chrono::milliseconds{1});
  }

  http_detail::net::io_context ioc_;
  http_detail::beast::tcp_stream stream_;
  http_detail::beast::flat_buffer buffer_;
  bool connected_ = false;
  boost::system::error_code last_error_;
};

/// A client that opens a fresh connection per call, with a bearer key.
class http_client {
public:
  explicit http_client(uint16_t port, std::string key = {})
      : port_(port), key_(std::move(key)) {
    // nop
  }

  uint16_t port() const {
    return port_;
  }

  /// A copy of this client presenting another key ("" = none).
  http_client with_key(std::string key) const {
    return http_client{port_, std::move(key)};
  }

  /// The response; a failed connection or missed deadline fails the test.
  http_response call(http_detail::bhttp::verb method, const std::string& target,
                     const std::string& body = {}, header_fields headers = {},
                     std::chrono::milliseconds timeout
                     = std::chrono::seconds{10}) const {
    if (!key_.empty())
      headers.emplace_back("Authorization", "Bearer " + key_);
    http_connection conn{port_, timeout};
    if (!conn.connected())
      FAIL("cannot connect to 127.0.0.1:" << port_);
    auto res = conn.request(method, target, body, headers, timeout);
    if (!res)
      FAIL(method << ' ' << target << ": no response ("
                  << conn.last_error().message() << ")");
    return std::move(*res);
  }

  http_response get(const std::string& target,
                    header_fields headers = {}) const {
    return call(http_detail::bhttp::verb::get, target, {}, std::move(headers));
  }

  http_response post(const std::string& target, const std::string& body,
                     header_fields headers = {}) const {
    return call(http_detail::bhttp::verb::post, target, body,
                std::move(headers));
  }

private:
  uint16_t port_;
  std::string key_;
};

/// A server-sent-events subscription: the GET is sent and the response
/// head read by the constructor; events are read one at a time.
class sse_stream {
public:
  sse_stream(uint16_t port, const std::string& target,
             header_fields headers = {},
             std::chrono::milliseconds timeout = std::chrono::seconds{10})
      : stream_(ioc_) {
    using namespace http_detail;
    auto ec = connect_local(ioc_, stream_, port, timeout);
    if (ec)
      FAIL("cannot connect to 127.0.0.1:" << port << ": " << ec.message());
    headers.emplace_back("Accept", "text/event-stream");
    auto req = make_request(bhttp::verb::get, target, {}, headers);
    ec = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
      bhttp::async_write(stream_, req, handler);
    });
    if (ec)
      FAIL("GET " << target << ": " << ec.message());
    parser_.body_limit(std::uint64_t{1} << 30);
    // Chunk data goes to text_ instead of the parser's body.
    on_chunk_ = [this](std::uint64_t, boost::string_view data,
                       beast::error_code&) -> std::size_t {
      text_.append(data.data(), data.size());
      return data.size();
    };
    parser_.on_chunk_body(on_chunk_);
    ec = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
      bhttp::async_read_header(stream_, buffer_, parser_, handler);
    });
    if (ec)
      FAIL("GET " << target << ": no response head (" << ec.message() << ")");
    auto& head = parser_.get();
    head_.status = head.result_int();
    head_.headers = fields_of(head.base());
    if (head_.status != 200 || !parser_.chunked()) {
      // An error answer: read its body whole.
      ec = run_with_deadline(ioc_, stream_, timeout, [&](auto handler) {
        bhttp::async_read(stream_, buffer_, parser_, handler);
      });
      if (ec)
        FAIL("GET " << target << ": no body (" << ec.message() << ")");
      head_.body = parser_.get().body();
      ended_ = true;
    }
  }

  sse_stream(const sse_stream&) = delete;
  sse_stream& operator=(const sse_stream&) = delete;

  /// The status, the headers and (for a non-stream answer) the body.
  const http_response& head() const {
    return head_;
  }

  /// The next event or comment; nullopt once the stream has ended
  /// (`ended()`) or when `timeout` passes (`timed_out()`; the connection is
  /// closed then).
  std::optional<sse_event> next(std::chrono::milliseconds timeout
                                = std::chrono::seconds{10}) {
    using namespace http_detail;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto ev = take_event())
        return ev;
      if (ended_ || timed_out_)
        return std::nullopt;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        stream_.socket().close();
        return std::nullopt;
      }
      auto ec = run_with_deadline(ioc_, stream_, left, [&](auto handler) {
        bhttp::async_read_some(stream_, buffer_, parser_, handler);
      });
      if (ec == beast::error::timeout || ec == net::error::timed_out) {
        timed_out_ = true;
      } else if (ec || parser_.is_done()) {
        // The last chunk, or the server closed the connection.
        ended_ = true;
        complete_ = !ec && parser_.is_done();
      }
    }
  }

  /// True once the stream ended (the server finished it or closed).
  bool ended() const {
    return ended_;
  }

  /// True if the server ended the response properly (the last chunk).
  bool complete() const {
    return complete_;
  }

  bool timed_out() const {
    return timed_out_;
  }

  /// Closes the connection from the client's side.
  void close() {
    boost::system::error_code ec;
    stream_.socket().shutdown(http_detail::tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  /// The `retry:` value the server sent (ms), or -1.
  long retry_ms() const {
    return retry_ms_;
  }

private:
  /// Cuts the first complete event block off text_.
  std::optional<sse_event> take_event() {
    for (;;) {
      auto end = text_.find("\n\n");
      if (end == std::string::npos)
        return std::nullopt;
      auto block = text_.substr(0, end);
      text_.erase(0, end + 2);
      sse_event ev;
      bool any_field = false;
      bool data_seen = false;
      size_t pos = 0;
      while (pos <= block.size()) {
        auto nl = block.find('\n', pos);
        auto line = block.substr(
            pos, nl == std::string::npos ? std::string::npos : nl - pos);
        pos = nl == std::string::npos ? block.size() + 1 : nl + 1;
        if (line.empty())
          continue;
        if (line[0] == ':') {
          ev.comment += line.substr(1);
          continue;
        }
        auto colon = line.find(':');
        auto name = line.substr(0, colon);
        std::string value = colon == std::string::npos ? std::string{}
                                                       : line.substr(colon + 1);
        if (!value.empty() && value[0] == ' ')
          value.erase(0, 1);
        if (name == "id") {
          ev.id = value;
          any_field = true;
        } else if (name == "event") {
          ev.event = value;
          any_field = true;
        } else if (name == "data") {
          if (data_seen)
            ev.data += '\n';
          ev.data += value;
          data_seen = true;
          any_field = true;
        } else if (name == "retry") {
          retry_ms_ = std::stol(value);
        }
      }
      if (any_field) {
        if (ev.event.empty())
          ev.event = "message";
        ev.comment.clear();
        return ev;
      }
      if (!ev.comment.empty())
        return ev;
      // A block with only `retry:`: not an event.
    }
  }

  http_detail::net::io_context ioc_;
  http_detail::beast::tcp_stream stream_;
  http_detail::beast::flat_buffer buffer_;
  http_detail::bhttp::response_parser<http_detail::bhttp::string_body> parser_;
  std::function<std::size_t(std::uint64_t, boost::string_view,
                            http_detail::beast::error_code&)>
      on_chunk_;
  http_response head_;
  std::string text_;
  bool ended_ = false;
  bool complete_ = false;
  bool timed_out_ = false;
  long retry_ms_ = -1;
};

/// A WebSocket client (text messages).
class ws_client {
public:
  /// Connects and upgrades `target`; `ok()` is false (and `status()` the
  /// HTTP status of the refusal) if the server said no.
  ws_client(uint16_t port, const std::string& target,
            header_fields headers = {},
            std::chrono::milliseconds timeout = std::chrono::seconds{10})
      : ws_(ioc_) {
    using namespace http_detail;
    auto& lowest = beast::get_lowest_layer(ws_);
    auto ec = connect_local(ioc_, lowest, port, timeout);
    if (ec)
      FAIL("cannot connect to 127.0.0.1:" << port << ": " << ec.message());
    ws_.set_option(boost::beast::websocket::stream_base::decorator(
        [headers](boost::beast::websocket::request_type& req) {
          for (auto& kv : headers)
            req.set(kv.first, kv.second);
        }));
    boost::beast::websocket::response_type res;
    ec = run_with_deadline(ioc_, lowest, timeout, [&](auto handler) {
      ws_.async_handshake(res, "127.0.0.1:" + std::to_string(port), target,
                          handler);
    });
    status_ = res.result_int();
    ok_ = !ec;
  }

  bool ok() const {
    return ok_;
  }

  unsigned status() const {
    return status_;
  }

  /// Sends a text message; false on error or deadline.
  bool send(const std::string& text,
            std::chrono::milliseconds timeout = std::chrono::seconds{10}) {
    using namespace http_detail;
    auto& lowest = beast::get_lowest_layer(ws_);
    ws_.text(true);
    auto ec = run_with_deadline(ioc_, lowest, timeout, [&](auto handler) {
      ws_.async_write(net::buffer(text), handler);
    });
    return !ec;
  }

  /// The next text message; nullopt on close, error or deadline.
  std::optional<std::string> receive(std::chrono::milliseconds timeout
                                     = std::chrono::seconds{10}) {
    using namespace http_detail;
    auto& lowest = beast::get_lowest_layer(ws_);
    beast::flat_buffer buf;
    auto ec = run_with_deadline(ioc_, lowest, timeout, [&](auto handler) {
      ws_.async_read(buf, handler);
    });
    if (ec)
      return std::nullopt;
    return beast::buffers_to_string(buf.data());
  }

private:
  http_detail::net::io_context ioc_;
  boost::beast::websocket::stream<http_detail::beast::tcp_stream> ws_;
  unsigned status_ = 0;
  bool ok_ = false;
};

} // namespace drover::testing
