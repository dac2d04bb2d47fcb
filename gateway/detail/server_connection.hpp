#pragma once

// What the gateway server's connections share (gateway/server.hpp): the
// limits and request handler, the close hooks, and the WebSocket connection
// that an HTTP connection (gateway/server.cpp) hands its socket to on an
// upgrade (defined in gateway/server_websocket.cpp). Internal to those.

#include "gateway/server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace drover::http::server_detail {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using error_code = beast::error_code;

struct shared_state {
  server_limits limits;
  handler on_request;
  std::atomic<size_t> connections{0};
};

/// Runs the close callbacks once; later registrations run at once.
class close_hooks {
public:
  void add(std::function<void()> fn) {
    std::unique_lock<std::mutex> guard{mx_};
    if (closed_) {
      guard.unlock();
      fn();
      return;
    }
    fns_.push_back(std::move(fn));
  }
  void fire() {
    std::vector<std::function<void()>> fns;
    {
      std::lock_guard<std::mutex> guard{mx_};
      if (closed_)
        return;
      closed_ = true;
      fns.swap(fns_);
    }
    for (auto& fn : fns)
      fn();
  }
  bool closed() const {
    std::lock_guard<std::mutex> guard{mx_};
    return closed_;
  }

private:
  mutable std::mutex mx_;
  bool closed_ = false;
  std::vector<std::function<void()>> fns_;
};

// -- WebSocket ----------------------------------------------------------------

/// Takes over the socket and its place in `connections` from an HTTP
/// connection on upgrade (connection::upgrade in gateway/server.cpp).
class ws_connection : public ws_channel,
                      public std::enable_shared_from_this<ws_connection> {
public:
  ws_connection(tcp::socket&& socket, std::shared_ptr<shared_state> st);
  ~ws_connection() override;

  void start(request req,
             std::function<void(std::shared_ptr<ws_channel>)> on_open);
  bool send(std::string text) override;
  void close() override;
  void on_message(std::function<void(std::string)> fn) override;
  void on_close(std::function<void()> fn) override;

private:
  /// The socket is done: runs the close hooks and drops the message
  /// handler. The handler usually holds this channel (the gateway's does),
  /// so keeping it would keep the connection alive forever — its memory,
  /// and its slot in `connections`, which would end up refusing everyone.
  /// Callers hold a reference to this object.
  void finish();
  void read();
  void enqueue(std::string text);
  void write();
  void shutdown();

  websocket::stream<beast::tcp_stream> ws_;
  std::shared_ptr<shared_state> st_;
  beast::flat_buffer in_;
  std::deque<std::string> out_;
  size_t backlog_ = 0;
  std::mutex mx_;
  std::function<void(std::string)> on_message_;
  close_hooks hooks_;
};

} // namespace drover::http::server_detail
