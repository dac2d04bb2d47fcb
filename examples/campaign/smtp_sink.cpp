// smtp_sink: a local SMTP server that accepts mail and throws it away,
// counting it: the downstream of the campaign example. Recipients whose
// address starts with "bounce" are refused (550: a hard bounce). With
// --outage-after N --outage-ms T it plays a failing provider: once N
// messages are accepted it answers 421 (service not available) to every
// command for T ms, then recovers.
//
//   smtp_sink --port 2525 [--count-file F] [--outage-after N --outage-ms T]
//
// It prints "listening on PORT" when ready and writes the number of
// messages accepted to the count file after each one.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

namespace {

using clock_type = std::chrono::steady_clock;

struct sink {
  std::string count_file;
  long outage_after = -1;
  long outage_ms = 0;
  std::atomic<long> accepted{0};
  std::mutex mx;
  clock_type::time_point outage_until{};

  /// Whether the provider is "down" now.
  bool failing() {
    std::lock_guard<std::mutex> guard{mx};
    return clock_type::now() < outage_until;
  }

  void accepted_one() {
    std::lock_guard<std::mutex> guard{mx}; // the file gets the last count
    auto n = ++accepted;
    if (n == outage_after)
      outage_until = clock_type::now() + std::chrono::milliseconds{outage_ms};
    if (!count_file.empty()) {
      std::ofstream out{count_file + ".tmp", std::ios::trunc};
      out << n << '\n';
      out.close();
      std::rename((count_file + ".tmp").c_str(), count_file.c_str());
    }
  }
};

/// One line (without CRLF) from `fd`; false at the end of the stream or a
/// line over 4 KiB.
bool read_line(int fd, std::string& buffer, std::string& line) {
  for (;;) {
    auto end = buffer.find("\r\n");
    if (end != std::string::npos) {
      line = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      return true;
    }
    if (buffer.size() > 4096)
      return false;
    char chunk[2048];
    auto n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0)
      return false;
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

void say(int fd, const std::string& text) {
  auto line = text + "\r\n";
  (void)::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
}

bool starts_with_ci(const std::string& s, const char* prefix) {
  for (size_t i = 0; prefix[i] != 0; ++i)
    if (i >= s.size()
        || std::toupper(static_cast<unsigned char>(s[i])) != prefix[i])
      return false;
  return true;
}

void converse(sink& s, int fd) {
  std::string buffer;
  std::string line;
  say(fd, s.failing() ? "421 sink: service not available" : "220 sink ESMTP");
  bool in_data = false;
  bool bounced = false;
  while (read_line(fd, buffer, line)) {
    if (in_data) {
      if (line == ".") {
        in_data = false;
        if (s.failing()) {
          say(fd, "421 sink: service not available");
          break;
        }
        s.accepted_one();
        say(fd, "250 accepted");
      }
      continue;
    }
    if (s.failing()) {
      say(fd, "421 sink: service not available");
      break;
    }
    if (starts_with_ci(line, "HELO") || starts_with_ci(line, "EHLO")) {
      say(fd, "250 sink");
    } else if (starts_with_ci(line, "MAIL FROM:")) {
      bounced = false;
      say(fd, "250 ok");
    } else if (starts_with_ci(line, "RCPT TO:")) {
      bounced = line.find("<bounce") != std::string::npos;
      say(fd, bounced ? "550 no such mailbox" : "250 ok");
    } else if (starts_with_ci(line, "DATA")) {
      if (bounced) {
        say(fd, "554 no valid recipients");
      } else {
        say(fd, "354 end with <CRLF>.<CRLF>");
        in_data = true;
      }
    } else if (starts_with_ci(line, "RSET") || starts_with_ci(line, "NOOP")) {
      say(fd, "250 ok");
    } else if (starts_with_ci(line, "QUIT")) {
      say(fd, "221 bye");
      break;
    } else {
      say(fd, "502 not implemented");
    }
  }
  ::close(fd);
}

} // namespace

int main(int argc, char** argv) {
  sink s;
  long port = 2525;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string arg = argv[i];
    std::string value = argv[i + 1];
    if (arg == "--port")
      port = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--count-file")
      s.count_file = value;
    else if (arg == "--outage-after")
      s.outage_after = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--outage-ms")
      s.outage_ms = std::strtol(value.c_str(), nullptr, 10);
    else {
      std::cerr << "smtp_sink: unknown option " << arg << '\n';
      return 2;
    }
  }
  if (argc % 2 == 0 || port < 0 || port > 65535) {
    std::cerr << "usage: smtp_sink --port P [--count-file F] "
                 "[--outage-after N --outage-ms T]\n";
    return 2;
  }
  int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::listen(listener, 64) != 0) {
    std::perror("smtp_sink: bind");
    return 1;
  }
  socklen_t len = sizeof addr;
  ::getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len);
  std::cout << "listening on " << ntohs(addr.sin_port) << std::endl;
  for (;;) {
    int fd = ::accept(listener, nullptr, nullptr);
    if (fd < 0)
      continue;
    std::thread{[&s, fd] { converse(s, fd); }}.detach();
  }
}
