// The gateway server's WebSocket connections (gateway/server.hpp): what an
// HTTP connection (gateway/server.cpp) becomes after the upgrade handshake —
// the handshake itself, reading messages, a bounded queue of messages to
// send, and closing.

#include "gateway/detail/server_connection.hpp"

#include <boost/asio/post.hpp>

#include <utility>

namespace drover::http::server_detail {

ws_connection::ws_connection(tcp::socket&& socket,
                             std::shared_ptr<shared_state> st)
    : ws_(std::move(socket)), st_(std::move(st)) {
  // nop
}

ws_connection::~ws_connection() {
  hooks_.fire();
  st_->connections--;
}

void ws_connection::start(
    request req, std::function<void(std::shared_ptr<ws_channel>)> on_open) {
  ws_.set_option(
      websocket::stream_base::timeout::suggested(beast::role_type::server));
  ws_.read_message_max(st_->limits.max_ws_message_bytes);
  ws_.set_option(
      websocket::stream_base::decorator([](websocket::response_type& res) {
        res.set(bhttp::field::server, "drover");
      }));
  auto self = shared_from_this();
  ws_.async_accept(req, [self, on_open = std::move(on_open)](error_code ec) {
    if (ec) {
      self->finish();
      return;
    }
    on_open(self);
    self->read();
  });
}

bool ws_connection::send(std::string text) {
  if (hooks_.closed())
    return false;
  auto self = shared_from_this();
  net::post(ws_.get_executor(), [self, text = std::move(text)]() mutable {
    self->enqueue(std::move(text));
  });
  return true;
}

void ws_connection::close() {
  auto self = shared_from_this();
  net::post(ws_.get_executor(), [self] { self->shutdown(); });
}

void ws_connection::on_message(std::function<void(std::string)> fn) {
  std::lock_guard<std::mutex> guard{mx_};
  if (hooks_.closed())
    return; // finish() has run: storing it would form the cycle again
  on_message_ = std::move(fn);
}

void ws_connection::on_close(std::function<void()> fn) {
  hooks_.add(std::move(fn));
}

void ws_connection::finish() {
  hooks_.fire();
  std::function<void(std::string)> fn;
  {
    std::lock_guard<std::mutex> guard{mx_};
    fn.swap(on_message_);
  }
}

void ws_connection::read() {
  auto self = shared_from_this();
  ws_.async_read(in_, [self](error_code ec, size_t) {
    if (ec) {
      self->finish();
      return;
    }
    auto text = beast::buffers_to_string(self->in_.data());
    self->in_.consume(self->in_.size());
    std::function<void(std::string)> fn;
    {
      std::lock_guard<std::mutex> guard{self->mx_};
      fn = self->on_message_;
    }
    if (fn)
      fn(std::move(text));
    self->read();
  });
}

void ws_connection::enqueue(std::string text) {
  if (hooks_.closed())
    return;
  backlog_ += text.size();
  if (backlog_ > st_->limits.max_stream_backlog_bytes) {
    shutdown(); // too slow: drop it rather than buffer without bound
    return;
  }
  out_.push_back(std::move(text));
  if (out_.size() == 1)
    write();
}

void ws_connection::write() {
  auto self = shared_from_this();
  ws_.text(true);
  ws_.async_write(net::buffer(out_.front()), [self](error_code ec, size_t) {
    if (ec) {
      self->finish();
      return;
    }
    self->backlog_ -= self->out_.front().size();
    self->out_.pop_front();
    if (!self->out_.empty())
      self->write();
  });
}

void ws_connection::shutdown() {
  if (hooks_.closed())
    return;
  finish();
  auto self = shared_from_this();
  ws_.async_close(websocket::close_code::normal, [self](error_code) {});
}

} // namespace drover::http::server_detail
