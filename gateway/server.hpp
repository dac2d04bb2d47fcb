#pragma once

// The gateway's HTTP/1.1 and WebSocket server: Boost.Beast on Asio, on its
// own threads (never CAF's). It knows nothing about jobs: each request is
// handed to a handler as an `exchange`, which the handler answers (from any
// thread, e.g. a CAF actor's) with one response, an event stream, or a
// WebSocket.
//
// Limits (all configurable, see server_limits): request header and body
// size (431 / 413 before the body is read into memory), an idle timeout for
// reading each request and for a response write, a cap on the bytes queued
// for a slow streaming client (it is disconnected, not buffered without
// bound), WebSocket message size, and total connections.

#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace drover::http {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using header_list = std::vector<std::pair<std::string, std::string>>;

struct server_limits {
  size_t max_body_bytes = size_t{8} << 20;
  size_t max_header_bytes = 16 * 1024;
  /// Reading a request (headers and body) and idle keep-alive connections.
  std::chrono::milliseconds idle_timeout{30000};
  /// Writing one response or one stream chunk.
  std::chrono::milliseconds write_timeout{30000};
  /// Bytes queued for one streaming client before it is dropped.
  size_t max_stream_backlog_bytes = size_t{1} << 20;
  size_t max_ws_message_bytes = 64 * 1024;
  size_t max_connections = 10000;
};

/// A WebSocket after the handshake. Thread-safe.
class ws_channel {
public:
  virtual ~ws_channel() = default;
  /// Queues a text message; false once the socket is closed or the client
  /// is too slow (then it is closed).
  virtual bool send(std::string text) = 0;
  virtual void close() = 0;
  /// Set before the first message can arrive: inside the accept callback.
  /// Released when the socket closes, so `fn` may hold this channel.
  virtual void on_message(std::function<void(std::string)> fn) = 0;
  /// Runs once when the socket closes (at once if it already has).
  virtual void on_close(std::function<void()> fn) = 0;
};

/// One request and its answer. Thread-safe; exactly one of respond,
/// start_stream or accept_websocket should be called.
class exchange {
public:
  virtual ~exchange() = default;
  virtual const request& req() const = 0;
  /// The peer's address ("127.0.0.1").
  virtual const std::string& remote() const = 0;
  /// Answers; an empty `content_type` sends none (e.g. 204).
  virtual void respond(unsigned status, std::string body,
                       header_list headers = {},
                       std::string content_type = "application/json")
      = 0;
  /// Starts a `text/event-stream` response (chunked; no more requests on
  /// this connection).
  virtual void start_stream(header_list headers = {}) = 0;
  /// Queues stream data; false once the client is gone or too slow.
  virtual bool send(std::string data) = 0;
  virtual void end_stream() = 0;
  /// Runs once when the connection closes (at once if it already has).
  virtual void on_close(std::function<void()> fn) = 0;
  /// True if the request asks for a WebSocket upgrade.
  virtual bool wants_websocket() const = 0;
  /// Completes the upgrade; `on_open` gets the channel.
  virtual void
  accept_websocket(std::function<void(std::shared_ptr<ws_channel>)> on_open)
      = 0;
};

using handler = std::function<void(std::shared_ptr<exchange>)>;

class server {
public:
  /// Binds and listens (errors: errc::bad_config naming host and port);
  /// serving starts with run().
  static std::unique_ptr<server> create(const std::string& host, uint16_t port,
                                        server_limits limits, handler h,
                                        std::string& error);

  virtual ~server() = default;
  /// The bound port (useful with port 0).
  virtual uint16_t port() const = 0;
  /// Starts `threads` I/O threads.
  virtual void run(size_t threads) = 0;
  /// Stops accepting, closes connections, joins the threads.
  virtual void stop() = 0;
};

} // namespace drover::http
