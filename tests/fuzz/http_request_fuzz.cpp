// libFuzzer target: the gateway's HTTP request path in memory, no sockets.
//
// What runs is the real gateway (gateway/gateway*.cpp: authentication, rate
// limits, routing, body parsing, error rendering, WebSocket commands) in
// front of a stub node API actor. Only the socket layer (gateway/server.cpp)
// is replaced: this file defines `server::create`, so that the gateway's
// request handler lands here instead of on a listening socket, and reads
// requests with Beast's parser configured as server.cpp configures it
// (header and body limits), over Beast's in-memory test stream.
//
// Input: bytes a client sends on one connection: one or more pipelined
// HTTP/1.1 requests. After a request that upgrades to a WebSocket, the rest
// of the input is that socket's messages, one per line.
//
// Properties, beyond "no crash, no sanitizer report, no exception":
// - every request is answered exactly once (a response, an event stream
//   or a WebSocket) within the deadline, never left hanging;
// - every JSON response body is one valid JSON value, whatever bytes the
//   request held (error messages quote request data).
//
// The stub API answers get_atom with a finished job of the asked id and
// events_atom with no events, everything else with errc::unavailable: the
// request path, not the node, is under test.

#include "fuzz_check.hpp"

#include "gateway/gateway.hpp"
#include "gateway/server.hpp"
#include "runtime/atoms.hpp"
#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"
#include "runtime/typed_forward.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/event_based_actor.hpp>
#include <caf/typed_event_based_actor.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;

namespace drover::http {

namespace {

/// The handler of the gateway being constructed (set by server::create).
handler* captured_handler = nullptr;

class memory_server : public server {
public:
  explicit memory_server(handler h) : h_(std::move(h)) {
    // nop
  }
  uint16_t port() const override {
    return 0;
  }
  void run(size_t) override {
    // nop: requests are handed in by LLVMFuzzerTestOneInput
  }
  void stop() override {
    // nop
  }
  handler& on_request() {
    return h_;
  }

private:
  handler h_;
};

} // namespace

// Replaces gateway/server.cpp's definition: tests/fuzz links the gateway's
// other sources without it.
std::unique_ptr<server> server::create(const std::string&, uint16_t,
                                       server_limits, handler h, std::string&) {
  auto srv = std::make_unique<memory_server>(std::move(h));
  captured_handler = &srv->on_request();
  return srv;
}

} // namespace drover::http

namespace {

using namespace drover;
using namespace drover::http;

constexpr auto answer_deadline = std::chrono::seconds{10};

/// One request and what the gateway did with it.
class memory_exchange : public exchange,
                        public std::enable_shared_from_this<memory_exchange> {
public:
  explicit memory_exchange(request req) : req_(std::move(req)) {
    // nop
  }

  ~memory_exchange() override {
    fire_close();
  }

  const request& req() const override {
    return req_;
  }

  const std::string& remote() const override {
    return remote_;
  }

  void respond(unsigned status, std::string body, header_list,
               std::string content_type) override {
    FUZZ_CHECK(status >= 100 && status <= 599, "an HTTP status is 3 digits");
    if (content_type == "application/json")
      FUZZ_CHECK(!validate_json(body), "a JSON response must be valid JSON");
    answer(status);
  }

  void start_stream(header_list) override {
    answer(200);
  }

  bool send(std::string) override {
    std::lock_guard<std::mutex> guard{mx_};
    return !closed_;
  }

  void end_stream() override {
    // nop
  }

  void on_close(std::function<void()> fn) override {
    std::unique_lock<std::mutex> guard{mx_};
    if (closed_) {
      guard.unlock();
      fn();
      return;
    }
    close_hooks_.push_back(std::move(fn));
  }

  bool wants_websocket() const override {
    return beast::websocket::is_upgrade(req_);
  }

  void accept_websocket(
      std::function<void(std::shared_ptr<ws_channel>)> on_open) override {
    {
      std::lock_guard<std::mutex> guard{mx_};
      on_open_ = std::move(on_open);
    }
    answer(101);
  }

  /// Waits for the one answer; the status (101 = WebSocket).
  unsigned wait_answer() {
    std::unique_lock<std::mutex> guard{mx_};
    auto answered
        = cv_.wait_for(guard, answer_deadline, [this] { return answers_ > 0; });
    FUZZ_CHECK(answered, "every request must be answered");
    return status_;
  }

  std::function<void(std::shared_ptr<ws_channel>)> take_on_open() {
    std::lock_guard<std::mutex> guard{mx_};
    return std::move(on_open_);
  }

  void fire_close() {
    std::vector<std::function<void()>> hooks;
    {
      std::lock_guard<std::mutex> guard{mx_};
      if (closed_)
        return;
      closed_ = true;
      hooks.swap(close_hooks_);
    }
    for (auto& fn : hooks)
      fn();
  }

private:
  void answer(unsigned status) {
    std::lock_guard<std::mutex> guard{mx_};
    FUZZ_CHECK(answers_ == 0, "a request must be answered only once");
    ++answers_;
    status_ = status;
    cv_.notify_all();
  }

  request req_;
  std::string remote_ = "127.0.0.1";
  std::mutex mx_;
  std::condition_variable cv_;
  unsigned answers_ = 0;
  unsigned status_ = 0;
  bool closed_ = false;
  std::vector<std::function<void()>> close_hooks_;
  std::function<void(std::shared_ptr<ws_channel>)> on_open_;
};

/// A WebSocket after the upgrade: the gateway's messages are checked and
/// dropped.
class memory_channel : public ws_channel {
public:
  bool send(std::string text) override {
    FUZZ_CHECK(!validate_json(text), "a WebSocket message must be valid JSON");
    std::lock_guard<std::mutex> guard{mx_};
    return !closed_;
  }
  void close() override {
    fire_close();
  }
  void on_message(std::function<void(std::string)> fn) override {
    std::lock_guard<std::mutex> guard{mx_};
    if (!closed_)
      on_message_ = std::move(fn);
  }
  void on_close(std::function<void()> fn) override {
    std::unique_lock<std::mutex> guard{mx_};
    if (closed_) {
      guard.unlock();
      fn();
      return;
    }
    close_hooks_.push_back(std::move(fn));
  }
  void deliver(std::string text) {
    std::function<void(std::string)> fn;
    {
      std::lock_guard<std::mutex> guard{mx_};
      fn = on_message_;
    }
    if (fn)
      fn(std::move(text));
  }
  /// As server.cpp's channel: runs the close hooks and releases the
  /// message handler (which holds this channel).
  void fire_close() {
    std::vector<std::function<void()>> hooks;
    std::function<void(std::string)> handler;
    {
      std::lock_guard<std::mutex> guard{mx_};
      if (closed_)
        return;
      closed_ = true;
      hooks.swap(close_hooks_);
      handler.swap(on_message_);
    }
    for (auto& fn : hooks)
      fn();
  }

private:
  std::mutex mx_;
  bool closed_ = false;
  std::function<void(std::string)> on_message_;
  std::vector<std::function<void()>> close_hooks_;
};

/// The node API behind the fuzzed gateway: a completed job for any id,
/// no events, unavailable for everything else.
api_actor::behavior_type stub_api(api_actor::pointer) {
  return behavior_of<api_actor>(forward_handlers<api_actor>([](
                                                                auto reply,
                                                                auto&... xs) -> typename decltype(reply)::
                                                                                 result {
                                                                                   using args_t = std::
                                                                                       tuple<std::decay_t<
                                                                                           decltype(xs)>...>;
                                                                                   if constexpr (
                                                                                       std::is_same_v<
                                                                                           args_t,
                                                                                           std::tuple<
                                                                                               get_atom,
                                                                                               std::
                                                                                                   string>>) {
                                                                                     job_record
                                                                                         job;
                                                                                     job.job_id = std::get<
                                                                                         1>(std::tie(
                                                                                         xs...));
                                                                                     job.spec
                                                                                         .type
                                                                                         = "sleep";
                                                                                     job.status
                                                                                         = job_status::
                                                                                             completed;
                                                                                     job.result
                                                                                         = "{\"ok\":true}";
                                                                                     job.sequence
                                                                                         = 3;
                                                                                     return job;
                                                                                   } else if constexpr (
                                                                                       std::is_same_v<
                                                                                           args_t,
                                                                                           std::tuple<
                                                                                               events_atom,
                                                                                               std::
                                                                                                   string>> || std::is_same_v<args_t, std::tuple<events_atom, std::string, uint64_t, uint32_t>>) {
                                                                                     return std::vector<
                                                                                         job_event>{};
                                                                                   } else {
                                                                                     return make_error(
                                                                                         errc::
                                                                                             unavailable,
                                                                                         "fuzz: no node behind the gateway");
                                                                                   }
                                                                                 }));
}

/// A gateway and its handler.
struct fuzz_gateway {
  std::unique_ptr<gateway> gw;
  handler* on_request = nullptr;
};

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  api_actor api;
  fuzz_gateway development;
  fuzz_gateway keyed;
  gateway_config gw_cfg;

  fixture() {
    register_types(cfg);
    cfg.set("scheduler.max-threads", size_t{2});
    sys = std::make_unique<caf::actor_system>(cfg);
    api = sys->spawn(stub_api);
    // Small limits, so fuzz inputs reach them.
    gw_cfg.port = 0;
    gw_cfg.limits.max_header_bytes = 2048;
    gw_cfg.limits.max_body_bytes = 8192;
    gw_cfg.max_batch = 16;
    gw_cfg.default_rate = 0; // no rate limit: inputs stay independent
    gw_cfg.request_timeout = std::chrono::seconds{2};
    development = start(gw_cfg);
    // Key "fuzz" (secret "fuzz-secret", all scopes) for tenant "acme".
    auto key = parse_api_key("fuzz:" + sha256_hex("fuzz-secret")
                             + ":acme:submit,read,admin");
    FUZZ_CHECK(key, "the fuzz key must parse");
    auto keyed_cfg = gw_cfg;
    keyed_cfg.keys.push_back(*key);
    keyed = start(keyed_cfg);
  }

  fuzz_gateway start(gateway_config c) {
    fuzz_gateway out;
    auto gw = gateway::start(*sys, api, std::move(c));
    FUZZ_CHECK(gw, "the gateway must start");
    out.gw = std::move(*gw);
    out.on_request = captured_handler;
    FUZZ_CHECK(out.on_request != nullptr, "the gateway must create a server");
    return out;
  }
};

fixture* the_fixture = nullptr;

void run_websocket(memory_exchange& ex, std::string_view rest) {
  auto on_open = ex.take_on_open();
  if (!on_open)
    return;
  auto ch = std::make_shared<memory_channel>();
  on_open(ch);
  ch->on_close([&ex] { ex.fire_close(); });
  size_t messages = 0;
  while (!rest.empty() && messages++ < 16) {
    auto nl = rest.find('\n');
    auto msg = rest.substr(0, nl);
    ch->deliver(std::string{msg});
    rest = nl == std::string_view::npos ? std::string_view{}
                                        : rest.substr(nl + 1);
  }
  ch->fire_close();
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  the_fixture = new fixture; // lives until the process exits
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  // First byte: which gateway (development mode or keyed) and how many
  // bytes the client's socket delivers per read.
  auto& fx = *the_fixture;
  auto& gw = (data[0] & 1) ? fx.keyed : fx.development;
  size_t read_size = 1 + (data[0] >> 1) * 8; // 1 .. 1017
  std::string_view input{reinterpret_cast<const char*>(data + 1), size - 1};
  boost::asio::io_context ioc;
  beast::test::stream client{ioc,
                             beast::string_view{input.data(), input.size()}};
  client.read_size(read_size);
  client.close_remote(); // reads past the input end see EOF, as on a socket
  beast::flat_buffer buffer;
  for (int requests = 0; requests < 8; ++requests) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.header_limit(
        static_cast<uint32_t>(fx.gw_cfg.limits.max_header_bytes));
    parser.body_limit(fx.gw_cfg.limits.max_body_bytes);
    beast::error_code ec;
    bhttp::read(client, buffer, parser, ec);
    if (ec)
      return 0; // server.cpp answers 400/413/431 itself or closes
    auto ex = std::make_shared<memory_exchange>(parser.release());
    auto keep_alive = ex->req().keep_alive();
    (*gw.on_request)(ex);
    auto status = ex->wait_answer();
    if (status == 101) {
      // The rest of the input (what Beast has buffered, then the socket) is
      // the WebSocket's.
      beast::error_code eof;
      boost::asio::read(client, buffer, eof);
      run_websocket(*ex, beast::buffers_to_string(buffer.data()));
      return 0;
    }
    ex->fire_close();
    if (!keep_alive)
      return 0;
  }
  return 0;
}
