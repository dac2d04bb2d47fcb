// batch_client: submits a batch of jobs through the client API and follows
// each until it ends, printing its progress, then its result or error.
//
//   batch_client --node HOST:PORT [--node ...] [--type T] [--input JSON]
//                [--count N] [--timeout-s S]
//
// The API key comes from $DROVER_API_KEY (none for a node in development
// mode). Exit status: 0 if every job completed, 1 if one did not, 2 on bad
// arguments, 3 if the cluster could not be reached.

#include <drover/client.hpp>

#include "runtime/errors.hpp" // drover::describe, drover::is

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  drover::client_options opts;
  std::string type = "sleep";
  std::string input = R"({"ms": 1000, "steps": 4})";
  long count = 3;
  long timeout_s = 120;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "batch_client: " << arg << " needs a value\n";
      return 2;
    }
    std::string value = argv[++i];
    if (arg == "--node")
      opts.nodes.push_back(value);
    else if (arg == "--type")
      type = value;
    else if (arg == "--input")
      input = value;
    else if (arg == "--count")
      count = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--timeout-s")
      timeout_s = std::strtol(value.c_str(), nullptr, 10);
    else {
      std::cerr << "batch_client: unknown option " << arg << '\n';
      return 2;
    }
  }
  if (count < 1 || count > 1000 || timeout_s < 1) {
    std::cerr << "batch_client: --count 1 to 1000, --timeout-s positive\n";
    return 2;
  }
  if (const char* key = std::getenv("DROVER_API_KEY"))
    opts.api_key = key;
  auto client = drover::client::make(opts);
  if (!client) {
    std::cerr << "batch_client: " << drover::describe(client.error()) << '\n';
    return 2;
  }
  std::vector<drover::submit_request> batch;
  for (long i = 0; i < count; ++i) {
    drover::submit_request req;
    req.type = type;
    req.input = input;
    batch.push_back(std::move(req));
  }
  auto jobs = (*client)->submit(batch);
  if (!jobs) {
    std::cerr << "batch_client: " << drover::describe(jobs.error()) << '\n';
    return drover::is(jobs.error(), drover::errc::unavailable) ? 3 : 1;
  }
  int status = 0;
  for (const auto& s : *jobs) {
    if (s.job.job_id.empty()) {
      std::cout << "refused: " << s.job.error.message << '\n';
      status = 1;
      continue;
    }
    std::cout << "submitted " << s.job.job_id << " (key " << s.idempotency_key
              << ")\n";
  }
  for (const auto& s : *jobs) {
    if (s.job.job_id.empty())
      continue;
    const auto& id = s.job.job_id;
    auto done = (*client)->wait(id, std::chrono::seconds{timeout_s},
                                [&id](const drover::progress_update& u) {
                                  std::cout
                                      << id << ": "
                                      << static_cast<int>(u.percent) << "%"
                                      << (u.stage.empty() ? "" : " " + u.stage)
                                      << '\n';
                                });
    if (!done) {
      std::cout << id << ": " << drover::describe(done.error()) << '\n';
      status = 1;
    } else if (done->status == drover::job_status::completed) {
      std::cout << id << ": completed " << done->result << '\n';
    } else {
      std::cout << id << ": " << drover::to_string(done->status) << " "
                << done->error.code << ": " << done->error.message << '\n';
      status = 1;
    }
  }
  return status;
}
