// drover_bench_client: what the admin port's door costs a client
// (docs/client.md), measured against a reference in the same run.
//
//   drover_bench_client [--node build/nodes/drover-node] [--calls 2000]
//                       [--batch 100] [--batches 20]
//
// Two drover-node children (all roles, memory store: durability D0, so the
// figures are the door's and the network's, not PostgreSQL's): one in
// development mode (no keys: the door admits every request without a
// check) and one with 8 API keys (every request is hashed with SHA-256,
// compared with every key in constant time, and takes a rate token). The
// same client program (Drover::client) then makes, against each:
//   get     --calls sequential gets of one job (two hops inside the node:
//           door -> node API -> store, and the tenant check)
//   submit  --batches sequential batch submissions of --batch no-op jobs
// and prints p50/p99 per call and the keyed/dev ratio. One JSON line per
// figure.

#include "benchmarks/node_child.hpp"
#include "drover/client.hpp"
#include "gateway/auth.hpp"
#include "runtime/errors.hpp"

#include <algorithm>
#include <csignal>
#include <cstring>
#include <iostream>
#include <sys/wait.h>

using namespace drover;
using namespace drover::bench;
using clock_type = std::chrono::steady_clock;

namespace {

struct stats {
  double p50_us = 0;
  double p99_us = 0;
};

stats summarize(std::vector<double> us) {
  std::sort(us.begin(), us.end());
  auto at = [&](double q) {
    return us[std::min(us.size() - 1, static_cast<size_t>(q * us.size()))];
  };
  return {at(0.5), at(0.99)};
}

struct run_result {
  stats get;
  stats submit;
};

run_result measure(const std::string& node_bin, bool keyed, int calls,
                   int batch, int batches) {
  std::vector<std::string> args{
      node_bin, "--node-id", "bench", "--admin-port",      "0", "--http-port",
      "0",      "--slots",   "cpu=4", "--http-rate-limit", "0"};
  std::string secret = "bench-key-7";
  if (keyed)
    for (int k = 0; k < 8; ++k)
      args.insert(
          args.end(),
          {"--api-key", "k" + std::to_string(k) + ":"
                            + http::sha256_hex("bench-key-" + std::to_string(k))
                            + ":acme:submit,read"});
  auto log
      = std::string{"/tmp/drover_bench_client_"} + (keyed ? "k" : "d") + ".log";
  auto node = spawn_node(args, log);
  auto ready = read_until(node, " node: ready ", log);
  auto port = port_field(ready, "admin");
  client_options o;
  o.nodes = {"127.0.0.1:" + std::to_string(port)};
  o.api_key = keyed ? secret : "";
  auto c = client::make(o);
  if (!c) {
    std::cerr << describe(c.error()) << '\n';
    std::exit(2);
  }
  submit_request req;
  req.type = "sleep";
  req.input = R"({"ms": 0})";
  auto first = (*c)->submit(req);
  if (!first) {
    std::cerr << describe(first.error()) << '\n';
    std::exit(2);
  }
  // One call's time in microseconds; a failed call ends the benchmark.
  auto timed = [](auto call) {
    auto t0 = clock_type::now();
    auto result = call();
    if (!result) {
      std::cerr << describe(result.error()) << '\n';
      std::exit(2);
    }
    return std::chrono::duration<double, std::micro>(clock_type::now() - t0)
        .count();
  };
  run_result r;
  std::vector<double> us;
  for (int i = 0; i < calls; ++i)
    us.push_back(timed([&] { return (*c)->get(first->job.job_id); }));
  r.get = summarize(us);
  us.clear();
  std::vector<submit_request> reqs(static_cast<size_t>(batch), req);
  for (int b = 0; b < batches; ++b)
    us.push_back(timed([&] { return (*c)->submit(reqs); }));
  r.submit = summarize(us);
  kill(node.pid, SIGTERM);
  int st = 0;
  waitpid(node.pid, &st, 0);
  return r;
}

void print(const char* what, const stats& dev, const stats& keyed) {
  std::cout << "{\"figure\":\"" << what << "\",\"durability\":\"D0 (memory)\""
            << ",\"dev_p50_us\":" << dev.p50_us
            << ",\"dev_p99_us\":" << dev.p99_us
            << ",\"keyed_p50_us\":" << keyed.p50_us
            << ",\"keyed_p99_us\":" << keyed.p99_us
            << ",\"keyed_over_dev_p50\":" << keyed.p50_us / dev.p50_us << "}"
            << std::endl;
}

} // namespace

int main(int argc, char** argv) {
  std::string node_bin = "build/nodes/drover-node";
  int calls = 2000, batch = 100, batches = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--node")
      node_bin = v;
    else if (k == "--calls")
      calls = std::stoi(v);
    else if (k == "--batch")
      batch = std::stoi(v);
    else if (k == "--batches")
      batches = std::stoi(v);
    else {
      std::cerr << "unknown option " << k << '\n';
      return 2;
    }
  }
  if (calls < 1 || batch < 1 || batch > 1000 || batches < 1) {
    std::cerr << "--calls, --batches >= 1; --batch 1 to 1000\n";
    return 2;
  }
  // Alternating order would be fairer on a noisy machine; the two runs
  // are back to back, dev first, then keyed, then dev again to see drift.
  auto dev = measure(node_bin, false, calls, batch, batches);
  auto keyed = measure(node_bin, true, calls, batch, batches);
  auto dev2 = measure(node_bin, false, calls, batch, batches);
  print("get", dev.get, keyed.get);
  print("get_dev_again", dev.get, dev2.get);
  print("submit_batch", dev.submit, keyed.submit);
  print("submit_batch_dev_again", dev.submit, dev2.submit);
  return 0;
}
