#pragma once

// A loopback TCP proxy a fault test puts between two nodes, to partition
// them without touching either process: `cut()` stops forwarding in both
// directions (what a dead route does to an established connection: bytes
// sit in the kernel's buffers, TCP keeps the connection up, nothing
// arrives), `heal()` lets the held bytes through, and `reset()` closes
// every connection (what a NAT or firewall timing the connection out does),
// after which the nodes must connect again. Forwarding writes block: a
// peer that stops reading stalls the proxy (fine for the few bytes of a
// test). New connections are accepted and held the same way while cut.
// Every descriptor is close-on-exec: a node the test starts later must not
// inherit a proxied connection, or closing (resetting) it here would not
// end it (the node's copy would keep it open, silently).

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <fcntl.h>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace drover::testing {

class tcp_proxy {
public:
  /// Listens on an ephemeral loopback port; forwards to 127.0.0.1:upstream.
  explicit tcp_proxy(uint16_t upstream) : upstream_(upstream) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr))
            == 0);
    REQUIRE(listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof(addr);
    REQUIRE(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len)
            == 0);
    port_ = ntohs(addr.sin_port);
    REQUIRE(pipe2(wake_, O_CLOEXEC) == 0);
    thread_ = std::thread{[this] { loop(); }};
  }

  ~tcp_proxy() {
    stop_ = true;
    poke();
    thread_.join();
    for (auto& p : pairs_) {
      close(p.a);
      close(p.b);
    }
    close(listen_fd_);
    close(wake_[0]);
    close(wake_[1]);
  }

  tcp_proxy(const tcp_proxy&) = delete;
  tcp_proxy& operator=(const tcp_proxy&) = delete;

  uint16_t port() const {
    return port_;
  }

  void cut() {
    cut_ = true;
    poke();
  }

  void heal() {
    cut_ = false;
    poke();
  }

  /// Closes every proxied connection (both ends); new ones are proxied.
  void reset() {
    reset_ = true;
    poke();
  }

  /// Connections accepted so far.
  int accepted() const {
    return accepted_.load();
  }

private:
  struct pair {
    int a; // the client's
    int b; // the upstream's
  };

  void poke() {
    char c = 0;
    [[maybe_unused]] auto n = write(wake_[1], &c, 1);
  }

  static int connect_upstream(uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
      return -1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      close(fd);
      return -1;
    }
    return fd;
  }

  /// Moves what `from` has to `to`; false when either side is done.
  static bool pump(int from, int to) {
    char buf[65536];
    auto n = read(from, buf, sizeof(buf));
    if (n <= 0)
      return n < 0 && (errno == EAGAIN || errno == EINTR);
    for (ssize_t off = 0; off < n;) {
      auto w = write(to, buf + off, static_cast<size_t>(n - off));
      if (w <= 0) {
        if (w < 0 && errno == EINTR)
          continue;
        return false;
      }
      off += w;
    }
    return true;
  }

  void loop() {
    while (!stop_) {
      if (reset_.exchange(false)) {
        // An abortive close: both peers get a reset (RST), not an orderly
        // end of stream.
        linger hard{1, 0};
        for (auto& p : pairs_)
          for (int fd : {p.a, p.b}) {
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
            close(fd);
          }
        pairs_.clear();
      }
      std::vector<pollfd> fds;
      fds.push_back({wake_[0], POLLIN, 0});
      fds.push_back({listen_fd_, POLLIN, 0});
      // While cut, the connections are not even watched: a peer's bytes
      // (or its close) wait in the kernel until the heal.
      bool forwarding = !cut_;
      if (forwarding)
        for (auto& p : pairs_) {
          fds.push_back({p.a, POLLIN, 0});
          fds.push_back({p.b, POLLIN, 0});
        }
      if (poll(fds.data(), fds.size(), 1000) < 0)
        continue;
      if (fds[0].revents & POLLIN) {
        char drain[64];
        [[maybe_unused]] auto n = read(wake_[0], drain, sizeof(drain));
      }
      if (fds[1].revents & POLLIN) {
        int a = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (a >= 0) {
          int b = connect_upstream(upstream_);
          if (b < 0) {
            close(a);
          } else {
            pairs_.push_back({a, b});
            ++accepted_;
          }
        }
      }
      if (!forwarding)
        continue;
      std::vector<pair> alive;
      for (size_t i = 0; i < pairs_.size(); ++i) {
        auto& p = pairs_[i];
        auto ra = fds[2 + 2 * i].revents;
        auto rb = fds[3 + 2 * i].revents;
        bool ok = true;
        if (ra & (POLLIN | POLLHUP | POLLERR))
          ok = pump(p.a, p.b);
        if (ok && (rb & (POLLIN | POLLHUP | POLLERR)))
          ok = pump(p.b, p.a);
        if (ok) {
          alive.push_back(p);
        } else {
          close(p.a);
          close(p.b);
        }
      }
      pairs_ = std::move(alive);
    }
  }

  uint16_t upstream_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::atomic<bool> cut_{false};
  std::atomic<bool> reset_{false};
  std::atomic<int> accepted_{0};
  std::vector<pair> pairs_; // the loop thread's alone
  std::thread thread_;
};

} // namespace drover::testing
