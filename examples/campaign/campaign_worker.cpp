// campaign_worker: a Drover worker node with the job type `campaign.send`,
// which sends one batch of a mail campaign through SMTP (one connection
// per batch, one message per recipient).
//
// Input: {"smtp": "127.0.0.1:2525", "domain": "example.com",
//         "first": 0, "count": 100, "bounce_every": 0}
// Recipients are user<i>@<domain> for i in [first, first + count); with
// bounce_every = k, every k-th is bounce<i>@<domain>, which the sink
// refuses (a hard bounce: counted, never retried).
//
// Each message takes one token of the job's rate limit first
// (task_context::take_tokens): the provider's limit holds across every
// worker, per message.
//
// It reports progress and checkpoints "next,sent,bounced" every 10
// messages: an attempt after a failure resumes where the last one left
// off (a message sent after the last checkpoint may go twice: mail is
// at-least-once). A provider that is down (no connection, or a 4xx answer)
// is the retryable error `smtp_unavailable`, which the campaign's circuit
// breaker counts. Result: {"sent": S, "bounced": B}.
//
// It takes every option of drover-node, e.g.
//   campaign_worker --roles worker --coordinator 127.0.0.1:7000 --slots cpu=4

#include <drover/worker.hpp>

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

namespace {

struct batch {
  std::string host;
  uint16_t port = 0;
  std::string domain;
  int64_t first = 0;
  int64_t count = 0;
  int64_t bounce_every = 0;
};

/// Reads the input; "" or why it is refused.
std::string parse_batch(const std::string& input, batch& b) {
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<capnp::JsonValue>();
  try {
    capnp::JsonCodec codec;
    codec.decodeRaw(kj::StringPtr{input.c_str()}, root);
  } catch (const kj::Exception&) {
    return "input is not JSON";
  }
  if (!root.isObject())
    return "input must be an object";
  std::map<std::string, capnp::JsonValue::Reader> m;
  for (auto f : root.getObject()) {
    std::string name = f.getName().cStr();
    if (name != "smtp" && name != "domain" && name != "first" && name != "count"
        && name != "bounce_every")
      return "unknown member '" + name + "'";
    m.emplace(name, f.getValue());
  }
  auto text = [&](const char* key, std::string& out) -> std::string {
    auto i = m.find(key);
    if (i == m.end() || !i->second.isString())
      return std::string{"'"} + key + "' must be a string";
    out = i->second.getString().cStr();
    return {};
  };
  auto number = [&](const char* key, int64_t lo, int64_t hi, int64_t& out,
                    bool required) -> std::string {
    auto i = m.find(key);
    if (i == m.end())
      return required ? std::string{"'"} + key + "' is required" : "";
    if (!i->second.isNumber() || i->second.getNumber() < lo
        || i->second.getNumber() > hi
        || i->second.getNumber() != static_cast<int64_t>(i->second.getNumber()))
      return std::string{"'"} + key + "' must be an integer from "
             + std::to_string(lo) + " to " + std::to_string(hi);
    out = static_cast<int64_t>(i->second.getNumber());
    return {};
  };
  std::string smtp;
  for (auto err : {text("smtp", smtp), text("domain", b.domain),
                   number("first", 0, 100000000, b.first, true),
                   number("count", 1, 1000, b.count, true),
                   number("bounce_every", 0, 1000000, b.bounce_every, false)})
    if (!err.empty())
      return err;
  auto colon = smtp.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return "'smtp' must be host:port";
  b.host = smtp.substr(0, colon);
  auto port = std::strtol(smtp.c_str() + colon + 1, nullptr, 10);
  if (port < 1 || port > 65535)
    return "'smtp' must be host:port";
  b.port = static_cast<uint16_t>(port);
  in_addr probe{};
  if (inet_pton(AF_INET, b.host.c_str(), &probe) != 1)
    return "'smtp' host must be an IPv4 address";
  if (b.domain.empty() || b.domain.size() > 200
      || b.domain.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789.-")
             != std::string::npos)
    return "'domain' must be a lower-case domain name";
  return {};
}

/// An SMTP conversation over one connection.
class smtp_connection {
public:
  ~smtp_connection() {
    if (fd_ >= 0)
      ::close(fd_);
  }

  /// Connects and greets; the reply code (0 = no connection).
  int open(const batch& b) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(b.port);
    inet_pton(AF_INET, b.host.c_str(), &addr.sin_addr);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      return 0;
    auto greeting = reply();
    return greeting == 220 ? command("EHLO campaign-worker") : greeting;
  }

  /// Sends `line`; the reply code (0 = the connection broke).
  int command(const std::string& line) {
    auto text = line + "\r\n";
    if (::send(fd_, text.data(), text.size(), MSG_NOSIGNAL)
        != static_cast<ssize_t>(text.size()))
      return 0;
    return reply();
  }

private:
  int reply() {
    for (;;) {
      auto end = buffer_.find("\r\n");
      if (end != std::string::npos) {
        auto line = buffer_.substr(0, end);
        buffer_.erase(0, end + 2);
        if (line.size() < 3)
          return 0;
        if (line.size() > 3 && line[3] == '-')
          continue; // a multi-line reply goes on
        return std::atoi(line.substr(0, 3).c_str());
      }
      char chunk[1024];
      auto n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n <= 0 || buffer_.size() > 8192)
        return 0;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }

  int fd_ = -1;
  std::string buffer_;
};

drover::task_outcome send_batch(drover::task_context& ctx) {
  batch b;
  if (auto why = parse_batch(ctx.input(), b); !why.empty())
    return drover::task_outcome::permanent("invalid_input", why);
  // Where the last attempt left off: "next,sent,bounced".
  int64_t next = b.first, sent = 0, bounced = 0;
  if (!ctx.last_checkpoint().empty()
      && (std::sscanf(ctx.last_checkpoint().c_str(),
                      "%" SCNd64 ",%" SCNd64 ",%" SCNd64, &next, &sent,
                      &bounced)
              != 3
          || next < b.first || next > b.first + b.count || sent < 0
          || bounced < 0 || sent + bounced > next - b.first)) {
    next = b.first; // not ours: start the batch over
    sent = bounced = 0;
  }
  auto save = [&] {
    ctx.checkpoint(std::to_string(next) + "," + std::to_string(sent) + ","
                   + std::to_string(bounced));
    ctx.progress(100.0 * static_cast<double>(next - b.first)
                 / static_cast<double>(b.count));
  };
  auto unavailable = [&](int code, const std::string& what) {
    save();
    return drover::task_outcome::retryable(
        "smtp_unavailable", what + " (SMTP " + std::to_string(code) + ")");
  };
  smtp_connection smtp;
  if (int code = smtp.open(b); code != 250)
    return unavailable(code, "the provider did not take the connection");
  const int64_t end = b.first + b.count;
  while (next < end) {
    if (ctx.cancelled())
      return drover::task_outcome::cancelled();
    // One token of the job's rate limit (`mail`, the provider's limit
    // across every worker) per message.
    if (ctx.take_tokens(1, std::chrono::seconds{30})) {
      if (ctx.cancelled())
        return drover::task_outcome::cancelled();
      save();
      return drover::task_outcome::retryable(
          "rate_limit_unavailable",
          "no token of the provider's rate limit within 30 s");
    }
    bool bounce = b.bounce_every > 0 && (next + 1) % b.bounce_every == 0;
    auto to = std::string{bounce ? "bounce" : "user"} + std::to_string(next)
              + "@" + b.domain;
    int code = smtp.command("MAIL FROM:<news@" + b.domain + ">");
    if (code >= 500) { // the provider refuses the sender: no recipient helps
      save();
      return drover::task_outcome::permanent(
          "sender_refused", "the provider refused the sender (SMTP "
                                + std::to_string(code) + ")");
    }
    if (code == 250)
      code = smtp.command("RCPT TO:<" + to + ">");
    if (code >= 500) { // a hard bounce: this recipient, never again
      ++bounced;
      smtp.command("RSET");
    } else {
      if (code == 250)
        code = smtp.command("DATA");
      if (code == 354)
        code = smtp.command("Subject: Our news\r\nTo: <" + to
                            + ">\r\n\r\nHello!\r\n.");
      if (code != 250)
        return unavailable(code, "the provider stopped taking mail");
      ++sent;
    }
    ++next;
    if ((next - b.first) % 10 == 0)
      save();
  }
  smtp.command("QUIT");
  save();
  return drover::task_outcome::success("{\"sent\":" + std::to_string(sent)
                                       + ",\"bounced\":"
                                       + std::to_string(bounced) + "}");
}

} // namespace

int main(int argc, char** argv) {
  drover::node_program program;
  program.name = "campaign_worker";
  program.register_handlers = [](drover::handler_registry& handlers) {
    drover::handler_options options;
    options.validate_input = [](const std::string& input) {
      batch b;
      return parse_batch(input, b);
    };
    return handlers.register_handler("campaign.send", send_batch, options);
  };
  return drover::node_main(argc, argv, program);
}
