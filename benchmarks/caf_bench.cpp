// drover_bench_caf: CAF's raw message rates on this machine, the limits
// that Drover's actor pipeline is compared with (issue 6). Each figure gets
// a fresh actor_system with scheduler.max-threads = --threads (2, as the
// other benchmarks), so nothing carries over between them.
//
//   drover_bench_caf [--msgs 1000000] [--window 1000] [--threads 2]
//                    [--rounds 2000]
//
//   local_send                one actor sends --msgs messages to another,
//                             1,000 per turn of its mailbox
//   request_response          --window requests outstanding, no timeout
//   request_response_timeout  the same with a 30 s timeout on each request
//                             (what Drover's store requests carry)
//   spawn_request_quit        spawn an actor, one request/response, quit
//   loopback_request_response two actor systems in this process, connected
//                             through CAF's middleman over TCP on 127.0.0.1,
//                             --window requests outstanding
//   loopback_round_trip       one request at a time over the same link from
//                             a blocking actor: p50/p99 (--rounds)
//
// One JSON line per figure.

#include "benchmarks/issue6_support.hpp"

#include <caf/io/middleman.hpp>

using namespace drover;
using namespace drover::bench;
using namespace std::chrono_literals;

namespace {

using chunk_atom = caf::atom_constant<caf::atom("b_chunk")>;

struct options {
  uint64_t msgs = 1000000;
  uint64_t window = 1000;
  size_t threads = 2;
  uint64_t rounds = 2000;
};

void emit(const std::string& figure, double rate, const std::string& unit,
          const options& opt, double seconds) {
  json_line j;
  j.str("system", "caf")
      .str("limit", figure)
      .str("version", "0.17.6")
      .str("durability", "none")
      .integer("threads", static_cast<int64_t>(opt.threads))
      .num(unit, rate)
      .num("seconds", seconds, 3)
      .load();
  j.print();
}

std::unique_ptr<caf::actor_system_config> make_cfg(const options& opt,
                                                   bool io = false) {
  auto cfg = std::make_unique<caf::actor_system_config>();
  cfg->set("scheduler.max-threads", opt.threads);
  if (io)
    cfg->load<caf::io::middleman>();
  return cfg;
}

caf::behavior echo() {
  return {[](uint64_t x) { return x; }};
}

void local_send(const options& opt) {
  auto cfg = make_cfg(opt);
  caf::actor_system sys{*cfg};
  std::promise<void> done;
  auto fut = done.get_future();
  auto n = opt.msgs;
  auto sink = sys.spawn([n, &done](caf::event_based_actor*) -> caf::behavior {
    auto count = std::make_shared<uint64_t>(0);
    return {[n, count, &done](uint64_t) {
      if (++*count == n)
        done.set_value();
    }};
  });
  auto t0 = steady::now();
  auto source
      = sys.spawn([n, sink](caf::event_based_actor* self) -> caf::behavior {
          auto sent = std::make_shared<uint64_t>(0);
          self->send(self, chunk_atom::value);
          return {[self, n, sink, sent](chunk_atom) {
            for (int i = 0; i < 1000 && *sent < n; ++i)
              self->send(sink, (*sent)++);
            if (*sent < n)
              self->send(self, chunk_atom::value);
          }};
        });
  fut.wait();
  auto s = seconds_since(t0);
  emit("local_send", n / s, "msgs_per_s", opt, s);
  caf::anon_send_exit(sink, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(source, caf::exit_reason::user_shutdown);
}

void request_response(const options& opt, bool timeout) {
  auto cfg = make_cfg(opt);
  caf::actor_system sys{*cfg};
  auto e = sys.spawn(echo);
  auto r = run_windowed(sys, opt.msgs, opt.window,
                        [e, timeout](caf::event_based_actor* a, uint64_t i,
                                     std::function<void(bool)> done) {
                          auto on_ok = [done](uint64_t) { done(true); };
                          auto on_err = [done](caf::error&) { done(false); };
                          if (timeout)
                            a->request(e, 30s, i).then(on_ok, on_err);
                          else
                            a->request(e, caf::infinite, i).then(on_ok, on_err);
                        });
  emit(timeout ? "request_response_timeout_30s" : "request_response",
       r.ok / r.seconds, "requests_per_s", opt, r.seconds);
  caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
}

void spawn_request_quit(const options& opt) {
  auto cfg = make_cfg(opt);
  caf::actor_system sys{*cfg};
  auto n = opt.msgs / 4;
  auto r = run_windowed(
      sys, n, opt.window,
      [](caf::event_based_actor* a, uint64_t i,
         std::function<void(bool)> done) {
        auto once = a->spawn([](caf::event_based_actor* self) -> caf::behavior {
          return {[self](uint64_t x) {
            self->quit();
            return x;
          }};
        });
        a->request(once, caf::infinite, i)
            .then([done](uint64_t) { done(true); },
                  [done](caf::error&) { done(false); });
      });
  emit("spawn_request_quit", r.ok / r.seconds, "per_s", opt, r.seconds);
}

void loopback(const options& opt) {
  auto cfg_b = make_cfg(opt, true);
  caf::actor_system server{*cfg_b};
  auto e = server.spawn(echo);
  auto port = server.middleman().publish(e, 0, "127.0.0.1", true);
  if (!port) {
    std::cerr << "publish: " << server.render(port.error()) << std::endl;
    return;
  }
  auto cfg_a = make_cfg(opt, true);
  caf::actor_system client{*cfg_a};
  auto remote = client.middleman().remote_actor("127.0.0.1", *port);
  if (!remote) {
    std::cerr << "remote_actor: " << client.render(remote.error()) << std::endl;
    return;
  }
  auto target = *remote;
  auto n = opt.msgs / 10;
  auto r = run_windowed(client, n, opt.window,
                        [target](caf::event_based_actor* a, uint64_t i,
                                 std::function<void(bool)> done) {
                          a->request(target, 30s, i)
                              .then([done](uint64_t) { done(true); },
                                    [done](caf::error&) { done(false); });
                        });
  emit("loopback_request_response", r.ok / r.seconds, "requests_per_s", opt,
       r.seconds);
  std::vector<double> lat;
  {
    caf::scoped_actor self{client};
    for (uint64_t i = 0; i < opt.rounds; ++i) {
      auto t0 = steady::now();
      self->request(target, 30s, i)
          .receive(
              [&](uint64_t) {
                lat.push_back(std::chrono::duration<double, std::micro>(
                                  steady::now() - t0)
                                  .count());
              },
              [](caf::error&) {});
    }
  }
  json_line j;
  j.str("system", "caf")
      .str("limit", "loopback_round_trip")
      .str("version", "0.17.6")
      .str("durability", "none")
      .integer("threads", static_cast<int64_t>(opt.threads))
      .integer("rounds", static_cast<int64_t>(lat.size()));
  add_latency(j, "round_trip", lat);
  j.load().print();
  caf::anon_send_exit(e, caf::exit_reason::user_shutdown);
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--msgs")
      opt.msgs = std::stoull(args.value());
    else if (args.key() == "--window")
      opt.window = std::stoull(args.value());
    else if (args.key() == "--threads")
      opt.threads = std::stoul(args.value());
    else if (args.key() == "--rounds")
      opt.rounds = std::stoull(args.value());
    else {
      std::cerr << "usage: drover_bench_caf [--msgs N] [--window N] "
                   "[--threads N] [--rounds N]\n";
      return 2;
    }
  }
  local_send(opt);
  request_response(opt, false);
  request_response(opt, true);
  spawn_request_quit(opt);
  loopback(opt);
  return 0;
}
