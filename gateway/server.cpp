// The gateway's HTTP/1.1 server (gateway/server.hpp): the listener and the
// HTTP connections with their exchanges (one response or an event stream);
// a connection upgraded to a WebSocket is handed to
// gateway/server_websocket.cpp.

#include "gateway/server.hpp"

#include "gateway/detail/server_connection.hpp"

#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

namespace drover::http {

namespace {

// From gateway/detail/server_connection.hpp: the Beast and Asio aliases,
// shared_state, close_hooks and ws_connection.
using namespace server_detail;

// -- HTTP ---------------------------------------------------------------------

class connection : public std::enable_shared_from_this<connection> {
public:
  connection(tcp::socket&& socket, std::shared_ptr<shared_state> st)
      : stream_(std::move(socket)), st_(std::move(st)) {
    error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec)
      remote_ = ep.address().to_string();
  }

  ~connection();

  void start() {
    auto self = shared_from_this();
    net::dispatch(stream_.get_executor(), [self] { self->read(); });
  }

  // Called on the strand by the exchange.
  void send_response(std::shared_ptr<bhttp::response<bhttp::string_body>> res);
  void send_stream_head(header_list headers);
  void send_chunk(std::string data);
  void send_last_chunk();
  void upgrade(std::function<void(std::shared_ptr<ws_channel>)> on_open);

  net::any_io_executor executor() {
    return stream_.get_executor();
  }

  const std::string& remote() const {
    return remote_;
  }

  size_t max_backlog() const {
    return st_->limits.max_stream_backlog_bytes;
  }

private:
  class exchange_impl;

  void read();
  void on_read(error_code ec);
  void fail_request(unsigned status, const char* code, const char* message);
  void watch_for_close();
  void close();

  beast::tcp_stream stream_;
  std::shared_ptr<shared_state> st_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::string remote_;
  std::shared_ptr<exchange_impl> current_;
  bool upgraded_ = false;
  bool closed_ = false;
  // Streaming.
  std::shared_ptr<bhttp::response<bhttp::empty_body>> stream_head_;
  std::shared_ptr<bhttp::response_serializer<bhttp::empty_body>> stream_sr_;
  std::deque<std::string> out_;
  bool head_written_ = false;
  bool writing_ = false;
  bool last_chunk_ = false;
  size_t backlog_ = 0;
  char probe_[64];

public:
  std::shared_ptr<exchange_impl>& current() {
    return current_;
  }
};

class connection::exchange_impl
    : public exchange,
      public std::enable_shared_from_this<connection::exchange_impl> {
public:
  exchange_impl(std::shared_ptr<connection> conn, request req)
      : conn_(conn),
        exec_(conn->executor()),
        req_(std::move(req)),
        remote_(conn->remote()) {
    // nop
  }

  const request& req() const override {
    return req_;
  }

  const std::string& remote() const override {
    return remote_;
  }

  void respond(unsigned status, std::string body, header_list headers,
               std::string content_type) override {
    auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
        static_cast<bhttp::status>(status), req_.version());
    res->set(bhttp::field::server, "drover");
    if (!content_type.empty())
      res->set(bhttp::field::content_type, content_type);
    res->set(bhttp::field::cache_control, "no-store");
    for (auto& kv : headers)
      res->set(kv.first, kv.second);
    res->keep_alive(req_.keep_alive());
    res->body() = std::move(body);
    if (status == 204)
      res->erase(bhttp::field::content_length); // none: it has no body
    else
      res->prepare_payload();
    // HEAD: the length GET would have, and no body.
    if (req_.method() == bhttp::verb::head)
      res->body().clear();
    with_conn([res](connection& c) { c.send_response(res); });
  }

  void start_stream(header_list headers) override {
    with_conn([headers = std::move(headers)](connection& c) mutable {
      c.send_stream_head(std::move(headers));
    });
  }

  bool send(std::string data) override {
    if (hooks_.closed())
      return false;
    with_conn([data = std::move(data)](connection& c) mutable {
      c.send_chunk(std::move(data));
    });
    return true;
  }

  void end_stream() override {
    with_conn([](connection& c) { c.send_last_chunk(); });
  }

  void on_close(std::function<void()> fn) override {
    hooks_.add(std::move(fn));
  }

  bool wants_websocket() const override {
    return websocket::is_upgrade(req_);
  }

  void accept_websocket(
      std::function<void(std::shared_ptr<ws_channel>)> on_open) override {
    with_conn([on_open = std::move(on_open)](connection& c) mutable {
      c.upgrade(std::move(on_open));
    });
  }

  void fire_close() {
    hooks_.fire();
  }

  bool closed() const {
    return hooks_.closed();
  }

private:
  template <class F>
  void with_conn(F fn) {
    auto c = conn_;
    net::post(exec_, [c, fn = std::move(fn)]() mutable { fn(*c); });
  }

  // Strong: a connection waiting for its answer has no pending I/O that
  // would keep it alive. The cycle (connection::current_) is broken when
  // the response is written or the connection closes.
  std::shared_ptr<connection> conn_;
  net::any_io_executor exec_;
  request req_;
  std::string remote_;
  close_hooks hooks_;
};

connection::~connection() {
  if (!upgraded_)
    st_->connections--;
}

void connection::read() {
  if (closed_)
    return;
  parser_.emplace();
  parser_->header_limit(static_cast<uint32_t>(st_->limits.max_header_bytes));
  parser_->body_limit(st_->limits.max_body_bytes);
  stream_.expires_after(st_->limits.idle_timeout);
  auto self = shared_from_this();
  bhttp::async_read(stream_, buffer_, *parser_,
                    [self](error_code ec, size_t) { self->on_read(ec); });
}

void connection::on_read(error_code ec) {
  if (ec == bhttp::error::body_limit) {
    fail_request(413, "too_large", "the request body exceeds the limit");
    return;
  }
  if (ec == bhttp::error::header_limit) {
    fail_request(431, "headers_too_large",
                 "the request headers exceed the limit");
    return;
  }
  if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout
      || ec == net::error::eof || ec == net::error::connection_reset
      || ec == net::error::operation_aborted) {
    close();
    return;
  }
  if (ec) {
    fail_request(400, "bad_request", "malformed HTTP request");
    return;
  }
  stream_.expires_never();
  auto self = shared_from_this();
  current_ = std::make_shared<exchange_impl>(self, parser_->release());
  st_->on_request(current_);
}

void connection::fail_request(unsigned status, const char* code,
                              const char* message) {
  auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(status), 11);
  res->set(bhttp::field::server, "drover");
  res->set(bhttp::field::content_type, "application/json");
  res->keep_alive(false);
  res->body() = std::string{"{\"error\":{\"code\":\""} + code
                + "\",\"message\":\"" + message + "\"}}";
  res->prepare_payload();
  send_response(res);
}

void connection::send_response(
    std::shared_ptr<bhttp::response<bhttp::string_body>> res) {
  if (closed_ || stream_head_)
    return;
  auto self = shared_from_this();
  stream_.expires_after(st_->limits.write_timeout);
  bhttp::async_write(stream_, *res, [self, res](error_code ec, size_t) {
    if (ec || !res->keep_alive()) {
      self->close();
      return;
    }
    if (self->current_) {
      auto done = std::move(self->current_);
      done->fire_close(); // the exchange is over; streams are not kept
    }
    self->read();
  });
}

void connection::send_stream_head(header_list headers) {
  if (closed_ || stream_head_)
    return;
  stream_head_ = std::make_shared<bhttp::response<bhttp::empty_body>>(
      bhttp::status::ok, 11);
  auto& res = *stream_head_;
  res.set(bhttp::field::server, "drover");
  res.set(bhttp::field::content_type, "text/event-stream");
  res.set(bhttp::field::cache_control, "no-store");
  res.set("X-Accel-Buffering", "no");
  for (auto& kv : headers)
    res.set(kv.first, kv.second);
  res.keep_alive(false);
  res.chunked(true);
  stream_sr_
      = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(res);
  writing_ = true;
  stream_.expires_after(st_->limits.write_timeout);
  auto self = shared_from_this();
  bhttp::async_write_header(stream_, *stream_sr_,
                            [self](error_code ec, size_t) {
                              self->writing_ = false;
                              if (ec) {
                                self->close();
                                return;
                              }
                              self->head_written_ = true;
                              self->watch_for_close();
                              self->send_chunk({});
                            });
}

void connection::watch_for_close() {
  // The client sends nothing on an event stream; any read completion
  // (EOF, reset, or unexpected bytes) ends it.
  auto self = shared_from_this();
  stream_.socket().async_read_some(
      net::buffer(probe_), [self](error_code, size_t) { self->close(); });
}

void connection::send_chunk(std::string data) {
  if (closed_)
    return;
  if (!data.empty()) {
    backlog_ += data.size();
    if (backlog_ > st_->limits.max_stream_backlog_bytes) {
      close(); // a slow client is dropped, not buffered without bound
      return;
    }
    out_.push_back(std::move(data));
  }
  if (writing_ || !head_written_)
    return;
  if (out_.empty()) {
    if (last_chunk_) {
      writing_ = true;
      auto self = shared_from_this();
      stream_.expires_after(st_->limits.write_timeout);
      net::async_write(stream_, bhttp::make_chunk_last(),
                       [self](error_code, size_t) { self->close(); });
    }
    return;
  }
  writing_ = true;
  auto self = shared_from_this();
  stream_.expires_after(st_->limits.write_timeout);
  net::async_write(stream_, bhttp::make_chunk(net::buffer(out_.front())),
                   [self](error_code ec, size_t) {
                     self->writing_ = false;
                     if (ec) {
                       self->close();
                       return;
                     }
                     self->backlog_ -= self->out_.front().size();
                     self->out_.pop_front();
                     self->stream_.expires_never();
                     self->send_chunk({});
                   });
}

void connection::send_last_chunk() {
  if (closed_ || !stream_head_)
    return;
  last_chunk_ = true;
  send_chunk({});
}

void connection::upgrade(
    std::function<void(std::shared_ptr<ws_channel>)> on_open) {
  if (closed_ || !current_)
    return;
  upgraded_ = true;
  closed_ = true;
  auto req = current_->req();
  auto old = std::move(current_);
  stream_.expires_never();
  auto ws = std::make_shared<ws_connection>(stream_.release_socket(), st_);
  // The exchange's close hooks follow the WebSocket's.
  ws->on_close([old] { old->fire_close(); });
  ws->start(std::move(req), std::move(on_open));
}

void connection::close() {
  if (closed_)
    return;
  closed_ = true;
  error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
  if (auto cur = std::move(current_))
    cur->fire_close();
}

// -- listener -----------------------------------------------------------------

class server_impl : public server,
                    public std::enable_shared_from_this<server_impl> {
public:
  server_impl(std::shared_ptr<shared_state> st) : st_(std::move(st)) {
    // nop
  }

  bool listen(const std::string& host, uint16_t port, std::string& error) {
    error_code ec;
    auto address = net::ip::make_address(host, ec);
    if (ec) {
      // A name: resolve it (e.g. "localhost").
      tcp::resolver resolver{ioc_};
      auto results = resolver.resolve(host, std::to_string(port), ec);
      if (ec || results.empty()) {
        error = "cannot resolve '" + host + "'";
        return false;
      }
      address = results.begin()->endpoint().address();
    }
    tcp::endpoint ep{address, port};
    acceptor_.open(ep.protocol(), ec);
    if (!ec)
      acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec)
      acceptor_.bind(ep, ec);
    if (!ec)
      acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      error = "cannot listen on " + host + ":" + std::to_string(port) + ": "
              + ec.message();
      return false;
    }
    port_ = acceptor_.local_endpoint().port();
    return true;
  }

  uint16_t port() const override {
    return port_;
  }

  void run(size_t threads) override {
    accept();
    for (size_t i = 0; i < std::max<size_t>(1, threads); ++i)
      threads_.emplace_back([this] { ioc_.run(); });
  }

  void stop() override {
    if (stopped_.exchange(true))
      return;
    net::post(ioc_, [this] {
      error_code ec;
      acceptor_.close(ec);
    });
    ioc_.stop();
    for (auto& t : threads_)
      t.join();
    threads_.clear();
  }

  ~server_impl() override {
    stop();
  }

private:
  void accept() {
    acceptor_.async_accept(
        net::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
          if (ec) {
            if (ec == net::error::operation_aborted)
              return;
          } else if (st_->connections.load() >= st_->limits.max_connections) {
            error_code ignored;
            socket.close(ignored);
          } else {
            st_->connections++;
            std::make_shared<connection>(std::move(socket), st_)->start();
          }
          accept();
        });
  }

  std::shared_ptr<shared_state> st_;
  net::io_context ioc_;
  tcp::acceptor acceptor_{ioc_};
  uint16_t port_ = 0;
  std::vector<std::thread> threads_;
  std::atomic<bool> stopped_{false};
};

} // namespace

std::unique_ptr<server> server::create(const std::string& host, uint16_t port,
                                       server_limits limits, handler h,
                                       std::string& error) {
  auto st = std::make_shared<shared_state>();
  st->limits = limits;
  st->on_request = std::move(h);
  auto srv = std::make_unique<server_impl>(std::move(st));
  if (!srv->listen(host, port, error))
    return nullptr;
  return srv;
}

} // namespace drover::http
