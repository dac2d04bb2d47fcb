// drover_bench_latency: B2 and B3 of issue 6, on one node's job system in
// this process with the PostgreSQL store (D2: a submit is acknowledged
// after its COMMIT; fsync and synchronous_commit on) or the memory store
// (D0). Workers run no-op jobs throughout.
//
//   drover_bench_latency --workload B3 --pg-url URL [--slots 32]
//        [--probes 200] [--gap-ms 10] [--bg-rate R] [--warmup-s 2]
//     Submit -> handler start, one probe job at a time, --gap-ms apart
//     (like the peers' B3), first on an idle system, then on a half-loaded
//     one: an open-loop generator submits background no-op jobs at
//     --bg-rate per second (half the measured drain rate; 0 = idle phase
//     only). The probe's clock starts just before its submit is sent and
//     stops when its handler starts (steady clock, same process). The
//     submit -> ack time of the probes is reported too.
//
//   drover_bench_latency --workload B2 --pg-url URL [--slots 32]
//        [--rates 500,1000,2000,...] [--seconds 5] [--warmup-s 1]
//        [--p99-bound-ms 100]
//     Open-loop submission at each fixed rate (fresh database and job
//     system per rate): a timer thread releases submit i at its intended
//     time t0 + i / rate whether or not earlier ones were answered, and its
//     ack latency is measured from that intended time (so a stalled system
//     is charged for the wait: no coordinated omission). Acks of the first
//     --warmup-s are left out. Reported per rate: ack p50/p99/p99.9/max,
//     achieved ack rate, jobs completed meanwhile and the backlog left. The
//     sweep stops after the first saturated rate (acks below 90 % of the
//     offered rate, or ack p99 above 1 s, or 200,000 submits outstanding).
//
// One JSON line per phase or rate, then a summary line. Exit 4 if a job
// failed or was lost (for postgres: counts verified in the audit log).

#include "benchmarks/latency_bench.hpp"

#include "benchmarks/issue6_support.hpp"

using namespace drover;
using namespace drover::bench;
using namespace drover::bench::latency;
using namespace std::chrono_literals;

namespace {

void usage() {
  std::cerr << "usage: drover_bench_latency --workload B2|B3 [--store "
               "postgres|memory]\n"
               "         [--pg-url URL] [--slots N] [--threads N]\n"
               "         [--scheduler stealing|sharing]\n"
               "  B3: [--probes N] [--gap-ms N] [--bg-rate R] [--warmup-s S]\n"
               "  B2: [--rates R1,R2,...] [--seconds S] [--warmup-s S]\n"
               "      [--p99-bound-ms MS] [--max-outstanding N]\n";
}

} // namespace

int main(int argc, char** argv) {
  options opt;
  option_reader args{argc, argv};
  while (args.next()) {
    if (args.key() == "--workload")
      opt.workload = args.value();
    else if (args.key() == "--store")
      opt.store = args.value();
    else if (args.key() == "--pg-url")
      opt.pg_url = args.value();
    else if (args.key() == "--slots")
      opt.slots = static_cast<uint32_t>(std::stoul(args.value()));
    else if (args.key() == "--scheduler")
      opt.scheduler = args.value();
    else if (args.key() == "--threads")
      opt.threads = std::stoul(args.value());
    else if (args.key() == "--probes")
      opt.probes = std::stoull(args.value());
    else if (args.key() == "--gap-ms")
      opt.gap_ms = std::stoll(args.value());
    else if (args.key() == "--bg-rate")
      opt.bg_rate = std::stod(args.value());
    else if (args.key() == "--warmup-s")
      opt.warmup_s = std::stod(args.value());
    else if (args.key() == "--rates")
      opt.rates = parse_list<double>(args.value());
    else if (args.key() == "--seconds")
      opt.seconds = std::stod(args.value());
    else if (args.key() == "--p99-bound-ms")
      opt.p99_bound_ms = std::stod(args.value());
    else if (args.key() == "--max-outstanding")
      opt.max_outstanding = std::stoull(args.value());
    else {
      usage();
      return 2;
    }
  }
  if ((opt.store != "postgres" && opt.store != "memory")
      || (opt.store == "postgres" && opt.pg_url.empty())
      || (opt.scheduler != "stealing" && opt.scheduler != "sharing")) {
    usage();
    return 2;
  }
  if (opt.workload == "B3")
    return run_b3(opt);
  if (opt.workload == "B2")
    return run_b2(opt);
  usage();
  return 2;
}
