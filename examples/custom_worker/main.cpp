// prime_worker: a Drover worker node with a job type of its own,
// `count_primes` (input: an integer N in [2, 1e9]; result:
// {"below": N, "primes": K}). It reports progress while it sieves and
// stops when the job is cancelled.
//
// It takes every option of drover-node. Against a coordinator started with
// `--cluster-port 7000 --remote-job-types count_primes`:
//
//   prime_worker --roles worker --coordinator 127.0.0.1:7000 --slots cpu=2

#include <drover/worker.hpp>

#include <cctype>
#include <cstdint>
#include <string>
#include <vector>

namespace {

/// N from the input, or "" and a reason.
std::string parse_limit(const std::string& input, int64_t& n) {
  if (input.empty() || input.size() > 10)
    return "an integer from 2 to 1000000000";
  for (char c : input)
    if (!std::isdigit(static_cast<unsigned char>(c)))
      return "an integer from 2 to 1000000000";
  n = std::stoll(input);
  if (n < 2 || n > 1000000000)
    return "an integer from 2 to 1000000000";
  return {};
}

drover::task_outcome count_primes(drover::task_context& ctx) {
  int64_t n = 0;
  if (auto why = parse_limit(ctx.input(), n); !why.empty())
    return drover::task_outcome::permanent("invalid_input", "input: " + why);
  ctx.declare_stages({"sieve"});
  std::vector<bool> composite(static_cast<size_t>(n), false);
  int64_t primes = 0;
  const int64_t step = n / 20 + 1;
  for (int64_t i = 2; i < n; ++i) {
    if (i % step == 0) {
      if (ctx.cancelled())
        return drover::task_outcome::cancelled();
      ctx.progress(100.0 * static_cast<double>(i) / static_cast<double>(n),
                   "sieve");
    }
    if (composite[static_cast<size_t>(i)])
      continue;
    ++primes;
    for (int64_t j = i * i; j < n; j += i)
      composite[static_cast<size_t>(j)] = true;
  }
  return drover::task_outcome::success("{\"below\":" + std::to_string(n)
                                       + ",\"primes\":" + std::to_string(primes)
                                       + "}");
}

} // namespace

int main(int argc, char** argv) {
  drover::node_program program;
  program.name = "prime_worker";
  program.register_handlers = [](drover::handler_registry& handlers) {
    drover::handler_options options;
    options.validate_input = [](const std::string& input) {
      int64_t n = 0;
      return parse_limit(input, n);
    };
    return handlers.register_handler("count_primes", count_primes, options);
  };
  return drover::node_main(argc, argv, program);
}
