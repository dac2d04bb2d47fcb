// drover_bench_sse: N concurrent server-sent-event subscribers to one job's
// stream on a running gateway; measures how many progress events arrive per
// second in total and each event's delivery latency (arrival time minus the
// time the handler reported it, the `at` of the progress report; same
// machine, same clock; millisecond resolution).
//
//   drover_bench_sse --port 8080 --subscribers 1000 --job-ms 5000 --steps 100
//
// It submits one `sleep` job (scheduled --start-delay-ms ahead, so every
// subscriber is connected before the first report), opens the subscribers
// (one thread, epoll, non-blocking sockets), and reads until every stream
// has ended or the deadline passes. Prints one JSON line. Not a test: it
// measures. Exit 4 if a subscriber missed the completion.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

int64_t now_ms_precise_us() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000 + ts.tv_nsec / 1000;
}

int connect_to(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

bool send_all(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    auto n = write(fd, data.data() + off, data.size() - off);
    if (n <= 0)
      return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

/// One blocking request; returns the whole response (Connection: close).
std::string request(uint16_t port, const std::string& method,
                    const std::string& path, const std::string& body) {
  int fd = connect_to(port);
  if (fd < 0)
    return {};
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: localhost\r\n"
                    + "Connection: close\r\nContent-Type: application/json\r\n"
                    + "Content-Length: " + std::to_string(body.size())
                    + "\r\n\r\n" + body;
  send_all(fd, req);
  std::string out;
  char buf[4096];
  for (;;) {
    auto n = read(fd, buf, sizeof(buf));
    if (n <= 0)
      break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

/// "2026-11-29T23:40:49.208Z" -> Unix ms; -1 if malformed.
int64_t parse_at(const std::string& s) {
  struct tm tm {};
  int ms = 0;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms)
      != 7)
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return int64_t{timegm(&tm)} * 1000 + ms;
}

struct sub {
  int fd = -1;
  std::string buf;
  bool done = false;
  size_t events = 0;
  std::string event; // current event name
};

double percentile(std::vector<double>& xs, double p) {
  if (xs.empty())
    return -1;
  std::sort(xs.begin(), xs.end());
  auto i = static_cast<size_t>(p * static_cast<double>(xs.size() - 1) + 0.5);
  return xs[std::min(i, xs.size() - 1)];
}

} // namespace

int main(int argc, char** argv) {
  uint16_t port = 8080;
  size_t subscribers = 100;
  int64_t job_ms = 5000;
  int64_t steps = 100;
  int64_t start_delay_ms = 0; // 0 = computed from the subscriber count
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    auto v = std::strtoll(argv[i + 1], nullptr, 10);
    if (k == "--port")
      port = static_cast<uint16_t>(v);
    else if (k == "--subscribers")
      subscribers = static_cast<size_t>(v);
    else if (k == "--job-ms")
      job_ms = v;
    else if (k == "--steps")
      steps = v;
    else if (k == "--start-delay-ms")
      start_delay_ms = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (start_delay_ms == 0)
    start_delay_ms = 2000 + static_cast<int64_t>(subscribers) / 2;
  auto delay_s = std::to_string(start_delay_ms / 1000.0);
  auto resp = request(port, "POST", "/api/jobs",
                      "{\"type\":\"sleep\",\"input\":{\"ms\":"
                          + std::to_string(job_ms)
                          + ",\"steps\":" + std::to_string(steps)
                          + "},\"delay_seconds\":" + delay_s + "}");
  auto p = resp.find("\"job_id\":\"");
  if (p == std::string::npos) {
    std::fprintf(stderr, "submit failed: %s\n", resp.c_str());
    return 3;
  }
  auto id = resp.substr(p + 10, resp.find('"', p + 10) - (p + 10));
  int ep = epoll_create1(0);
  std::vector<sub> subs(subscribers);
  std::string get = "GET /api/jobs/" + id
                    + "/stream HTTP/1.1\r\nHost: localhost\r\n"
                      "Accept: text/event-stream\r\n\r\n";
  auto t_connect = std::chrono::steady_clock::now();
  for (size_t i = 0; i < subscribers; ++i) {
    subs[i].fd = connect_to(port);
    if (subs[i].fd < 0 || !send_all(subs[i].fd, get)) {
      std::fprintf(stderr, "subscriber %zu could not connect\n", i);
      return 3;
    }
    fcntl(subs[i].fd, F_SETFL, O_NONBLOCK);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev);
  }
  double connect_s = std::chrono::duration<double>(
                         std::chrono::steady_clock::now() - t_connect)
                         .count();
  std::vector<double> latencies;
  latencies.reserve(subscribers * static_cast<size_t>(steps));
  size_t done = 0;
  int64_t first_us = -1, last_us = -1;
  auto deadline = std::chrono::steady_clock::now()
                  + std::chrono::milliseconds{start_delay_ms + job_ms + 30000};
  std::vector<epoll_event> events(1024);
  char buf[65536];
  while (done < subscribers && std::chrono::steady_clock::now() < deadline) {
    int n
        = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 1000);
    for (int e = 0; e < n; ++e) {
      auto& s = subs[events[e].data.u64];
      for (;;) {
        auto r = read(s.fd, buf, sizeof(buf));
        if (r <= 0) {
          if (r == 0 && !s.done) {
            s.done = true; // closed without completing: counted below
            ++done;
            epoll_ctl(ep, EPOLL_CTL_DEL, s.fd, nullptr);
          }
          break;
        }
        auto arrival = now_ms_precise_us();
        s.buf.append(buf, static_cast<size_t>(r));
        size_t pos;
        while ((pos = s.buf.find('\n')) != std::string::npos) {
          auto line = s.buf.substr(0, pos);
          s.buf.erase(0, pos + 1);
          if (line.rfind("event: ", 0) == 0) {
            s.event = line.substr(7);
            if (s.event == "completed" && !s.done) {
              s.done = true;
              ++done;
            }
          } else if (line.rfind("data: ", 0) == 0
                     && (s.event == "progress" || s.event == "stage")
                     && line.find("\"sequence\"") == std::string::npos) {
            // A live progress report (log events carry a sequence).
            auto a = line.find("\"at\":\"");
            if (a != std::string::npos) {
              auto at = parse_at(line.substr(a + 6, 24));
              if (at > 0) {
                latencies.push_back((arrival - at * 1000) / 1000.0);
                ++s.events;
                if (first_us < 0)
                  first_us = arrival;
                last_us = arrival;
              }
            }
          }
        }
      }
    }
  }
  size_t completed = 0;
  size_t delivered = latencies.size();
  for (auto& s : subs) {
    if (s.done && s.event == "completed")
      ++completed;
    close(s.fd);
  }
  double span_s = last_us > first_us ? (last_us - first_us) / 1e6 : 0;
  auto p50 = percentile(latencies, 0.50);
  auto p99 = percentile(latencies, 0.99);
  auto max = latencies.empty() ? -1 : latencies.back();
  std::printf("{\"bench\":\"sse\",\"durability\":\"n/a (progress is not "
              "committed before delivery)\",\"subscribers\":%zu,"
              "\"connect_seconds\":%.3f,\"job_ms\":%lld,\"steps\":%lld,"
              "\"completed_streams\":%zu,\"progress_events_delivered\":%zu,"
              "\"delivered_per_second\":%.0f,\"latency_ms_p50\":%.2f,"
              "\"latency_ms_p99\":%.2f,\"latency_ms_max\":%.2f}\n",
              subscribers, connect_s, static_cast<long long>(job_ms),
              static_cast<long long>(steps), completed, delivered,
              span_s > 0 ? static_cast<double>(delivered) / span_s : 0.0, p50,
              p99, max);
  return completed == subscribers ? 0 : 4;
}
