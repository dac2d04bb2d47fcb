#pragma once

// Submits no-op jobs to a gateway node's HTTP API over keep-alive HTTP/1.1
// connections (Boost.Beast, blocking), for the benchmarks that drive a
// cluster through its front door (drover_bench_share). Each connection is
// one thread that posts its next request once the previous one has been
// answered: `connections` requests are outstanding at any time.

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <sys/socket.h>
#include <sys/time.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace drover::bench {

/// One keep-alive connection to 127.0.0.1:port. Used from one thread.
class http_connection {
public:
  explicit http_connection(int port) : port_(port) {
    // nop
  }

  /// POSTs `body` (JSON) to `target`, or GETs it if `body` is empty; the
  /// status, 0 on an I/O error (its text in `error`). A failure closes the
  /// connection; the next call opens a new one. Nothing is sent twice: a
  /// request whose answer was lost is not repeated (its outcome is
  /// unknown).
  unsigned request(const std::string& target, const std::string& body,
                   std::string& answer, std::string& error) {
    namespace beast = boost::beast;
    namespace bhttp = boost::beast::http;
    beast::error_code ec;
    if (!stream_ && !open(ec)) {
      error = "connect: " + ec.message();
      return 0;
    }
    bhttp::request<bhttp::string_body> req{
        body.empty() ? bhttp::verb::get : bhttp::verb::post, target, 11};
    req.set(bhttp::field::host, "127.0.0.1:" + std::to_string(port_));
    if (!body.empty())
      req.set(bhttp::field::content_type, "application/json");
    req.keep_alive(true);
    req.body() = body;
    req.prepare_payload();
    bhttp::write(*stream_, req, ec);
    bhttp::response<bhttp::string_body> res;
    if (!ec)
      bhttp::read(*stream_, buffer_, res, ec);
    if (ec) {
      error = "http: " + ec.message();
      stream_.reset();
      return 0;
    }
    if (!res.keep_alive())
      stream_.reset();
    answer = std::move(res.body());
    return res.result_int();
  }

private:
  bool open(boost::beast::error_code& ec) {
    using tcp = boost::asio::ip::tcp;
    auto s = std::make_unique<boost::beast::tcp_stream>(io_);
    s->socket().connect(
        tcp::endpoint{boost::asio::ip::make_address("127.0.0.1"),
                      static_cast<unsigned short>(port_)},
        ec);
    if (ec)
      return false;
    // Blocking calls have no expiry of their own: a stuck gateway must not
    // hang the benchmark for ever.
    timeval tv{60, 0};
    auto fd = s->socket().native_handle();
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    s->socket().set_option(tcp::no_delay{true}, ec);
    stream_ = std::move(s);
    buffer_.clear();
    return true;
  }

  int port_;
  boost::asio::io_context io_;
  std::unique_ptr<boost::beast::tcp_stream> stream_;
  boost::beast::flat_buffer buffer_;
};

struct http_submit_result {
  double seconds = 0;   // first request sent -> last answer in
  uint64_t acked = 0;   // jobs the gateway acknowledged (durable)
  uint64_t refused = 0; // items or requests answered with an error
  uint64_t unknown = 0; // items of requests whose answer never came
  /// Requests by HTTP status (0: no answer).
  std::map<unsigned, uint64_t> statuses;
  std::string first_error;
};

/// Submits `jobs` copies of `job_json` (one job's JSON object) to the
/// gateway on `port`: `batch` per request (1: POST /api/jobs, expecting
/// 202; more: POST /api/jobs/batch, counting its "accepted"), on
/// `connections` connections at once.
inline http_submit_result submit_over_http(int port, uint64_t jobs,
                                           uint32_t batch, uint32_t connections,
                                           const std::string& job_json) {
  batch = std::max<uint32_t>(1, batch);
  auto requests = (jobs + batch - 1) / batch;
  std::atomic<uint64_t> next{0};
  std::mutex mx; // guards `out` below
  http_submit_result out;
  auto items_of
      = [&](uint64_t r) { return std::min<uint64_t>(batch, jobs - r * batch); };
  auto body_of = [&](uint64_t items) {
    if (batch == 1)
      return job_json;
    std::string b = "{\"jobs\":[";
    for (uint64_t k = 0; k < items; ++k)
      b += (k == 0 ? "" : ",") + job_json;
    return b + "]}";
  };
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (uint32_t c = 0; c < connections; ++c)
    threads.emplace_back([&] {
      http_connection conn{port};
      std::string answer, error;
      for (auto r = next++; r < requests; r = next++) {
        auto items = items_of(r);
        auto status = conn.request(batch == 1 ? "/api/jobs" : "/api/jobs/batch",
                                   body_of(items), answer, error);
        uint64_t acked = 0;
        if (batch == 1 && status == 202)
          acked = 1;
        if (batch > 1 && status == 200) {
          auto p = answer.find("\"accepted\":");
          if (p != std::string::npos)
            acked = std::strtoull(answer.c_str() + p + 11, nullptr, 10);
        }
        std::lock_guard<std::mutex> guard{mx};
        ++out.statuses[status];
        out.acked += acked;
        if (status == 0)
          out.unknown += items;
        else
          out.refused += items - acked;
        if (acked < items && out.first_error.empty())
          out.first_error
              = status == 0 ? error : std::to_string(status) + " " + answer;
      }
    });
  for (auto& t : threads)
    t.join();
  out.seconds
      = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
            .count();
  return out;
}

} // namespace drover::bench
