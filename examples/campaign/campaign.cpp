// campaign: sends an e-mail campaign through a Drover cluster and shows
// its live progress, as the seed guide's campaign dashboard does.
//
//   campaign --node HOST:PORT --smtp HOST:PORT [--recipients N]
//            [--batch B] [--bounce-every K] [--timeout-s S]
//
// It splits N recipients into batches of B, submits one `campaign.send`
// job per batch (campaign_worker.cpp) naming the rate limiter `mail` and
// the circuit breaker `smtp` (declared on the coordinator, see run.sh), and
// then prints once a second:
//   {"status": "sending", "recipients_total": N, "sent": S, "bounced": X,
//    "pending": P, "failed": F, "progress": 55, "send_rate_per_minute": R,
//    "eta_seconds": E, "batches": {"done": D, "running": U, "waiting": W}}
// counting from each batch's checkpoint ("next,sent,bounced") while it
// runs and from its result once it completed. It ends with a line
// "sent S of N (X bounced, F failed)" and exit status 0 when every batch
// completed, 1 otherwise, 2 on bad arguments, 3 when the cluster is
// unreachable. The API key comes from $DROVER_API_KEY.

#include <drover/client.hpp>

#include "runtime/errors.hpp" // drover::describe

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

/// A number after `"key":` in a flat JSON result (-1 if absent).
long field(const std::string& json, const std::string& key) {
  auto at = json.find("\"" + key + "\":");
  return at == std::string::npos
             ? -1
             : std::strtol(json.c_str() + at + key.size() + 3, nullptr, 10);
}

} // namespace

int main(int argc, char** argv) {
  drover::client_options opts;
  std::string smtp;
  long recipients = 10000, batch = 100, bounce_every = 0, timeout_s = 600;
  for (int i = 1; i < argc; i += 2) {
    std::string arg = argv[i];
    if (i + 1 >= argc) {
      std::cerr << "campaign: " << arg << " needs a value\n";
      return 2;
    }
    std::string value = argv[i + 1];
    if (arg == "--node")
      opts.nodes.push_back(value);
    else if (arg == "--smtp")
      smtp = value;
    else if (arg == "--recipients")
      recipients = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--batch")
      batch = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--bounce-every")
      bounce_every = std::strtol(value.c_str(), nullptr, 10);
    else if (arg == "--timeout-s")
      timeout_s = std::strtol(value.c_str(), nullptr, 10);
    else {
      std::cerr << "campaign: unknown option " << arg << '\n';
      return 2;
    }
  }
  if (smtp.empty() || recipients < 1 || recipients > 1000000 || batch < 1
      || batch > 1000 || bounce_every < 0 || timeout_s < 1) {
    std::cerr << "campaign: --smtp HOST:PORT, --recipients 1 to 1000000, "
                 "--batch 1 to 1000, --bounce-every >= 0\n";
    return 2;
  }
  if (const char* key = std::getenv("DROVER_API_KEY"))
    opts.api_key = key;
  auto client = drover::client::make(opts);
  if (!client) {
    std::cerr << "campaign: " << drover::describe(client.error()) << '\n';
    return 2;
  }
  // The batches, submitted up to 1,000 at a time.
  std::vector<std::string> jobs;
  std::vector<long> sizes;
  std::vector<drover::submit_request> chunk;
  // 0, or the exit status: 1 a batch was refused, 3 unreachable.
  auto flush = [&]() -> int {
    if (chunk.empty())
      return 0;
    auto made = (*client)->submit(chunk);
    if (!made) {
      std::cerr << "campaign: " << drover::describe(made.error()) << '\n';
      return 3;
    }
    for (auto& s : *made) {
      if (s.job.job_id.empty()) {
        std::cerr << "campaign: a batch was refused: " << s.job.error.message
                  << '\n';
        return 1;
      }
      jobs.push_back(s.job.job_id);
    }
    chunk.clear();
    return 0;
  };
  for (long first = 0; first < recipients; first += batch) {
    long count = std::min(batch, recipients - first);
    drover::submit_request req;
    req.type = "campaign.send";
    req.input = "{\"smtp\":\"" + smtp
                + "\",\"domain\":\"example.com\",\"first\":"
                + std::to_string(first) + ",\"count\":" + std::to_string(count)
                + ",\"bounce_every\":" + std::to_string(bounce_every) + "}";
    req.rate_limit_key = "mail";
    req.breaker_key = "smtp";
    req.max_attempts = 20;
    drover::backoff_policy b;
    b.initial_delay_ms = 500;
    b.max_delay_ms = 5000;
    req.backoff = b;
    chunk.push_back(std::move(req));
    sizes.push_back(count);
    if (chunk.size() == 1000)
      if (int status = flush())
        return status;
  }
  if (int status = flush())
    return status;
  std::cout << "submitted " << jobs.size() << " batches of up to " << batch
            << " for " << recipients << " recipients" << std::endl;
  // The batches are read a page of up to 1,000 at a time (job ids sort by
  // submission time: from just before the first batch to the last one),
  // not one request per batch.
  std::map<std::string, size_t> batch_of;
  for (size_t i = 0; i < jobs.size(); ++i)
    batch_of.emplace(jobs[i], i);
  const std::string first = batch_of.begin()->first;
  const std::string last = batch_of.rbegin()->first;
  std::vector<drover::job_record> records(jobs.size());
  auto read_batches = [&]() -> caf::error {
    drover::job_query q;
    q.type = "campaign.send";
    q.limit = 1000;
    q.after = first.substr(0, first.size() - 1); // just before the first
    for (;;) {
      auto page = (*client)->list(q);
      if (!page)
        return std::move(page.error());
      for (auto& j : page->jobs)
        if (auto b = batch_of.find(j.job_id); b != batch_of.end())
          records[b->second] = std::move(j);
      if (page->next_cursor.empty() || page->next_cursor >= last)
        return {};
      q.after = page->next_cursor;
    }
  };
  auto start = clock_type::now();
  auto deadline = start + std::chrono::seconds{timeout_s};
  long sent = 0, bounced = 0, failed = 0;
  size_t done = 0;
  for (;;) {
    sent = bounced = failed = 0;
    done = 0;
    size_t running = 0, waiting = 0;
    if (auto err = read_batches()) {
      std::cerr << "campaign: " << drover::describe(err) << '\n';
      return 3;
    }
    for (size_t i = 0; i < jobs.size(); ++i) {
      const auto* j = &records[i];
      long s = 0, x = 0, next = 0;
      if (j->status == drover::job_status::completed) {
        s = field(j->result, "sent");
        x = field(j->result, "bounced");
        ++done;
      } else {
        if (!j->checkpoint.empty())
          std::sscanf(j->checkpoint.c_str(), "%ld,%ld,%ld", &next, &s, &x);
        if (drover::is_terminal(j->status)) {
          ++done;
          failed += sizes[i] - s - x;
        } else if (j->status == drover::job_status::processing) {
          ++running;
        } else {
          ++waiting;
        }
      }
      sent += s;
      bounced += x;
    }
    double elapsed
        = std::chrono::duration<double>(clock_type::now() - start).count();
    double per_minute = elapsed > 0 ? 60.0 * sent / elapsed : 0;
    long pending = recipients - sent - bounced - failed;
    long eta
        = per_minute > 0 ? static_cast<long>(60.0 * pending / per_minute) : -1;
    bool finished = done == jobs.size();
    std::cout << "{\"status\":\"" << (finished ? "finished" : "sending")
              << "\",\"recipients_total\":" << recipients
              << ",\"sent\":" << sent << ",\"bounced\":" << bounced
              << ",\"pending\":" << pending << ",\"failed\":" << failed
              << ",\"progress\":"
              << (100 * (sent + bounced + failed)) / recipients
              << ",\"send_rate_per_minute\":" << static_cast<long>(per_minute)
              << ",\"eta_seconds\":" << eta << ",\"batches\":{\"done\":" << done
              << ",\"running\":" << running << ",\"waiting\":" << waiting
              << "}}" << std::endl;
    if (finished)
      break;
    if (clock_type::now() > deadline) {
      std::cout << "campaign: not finished after " << timeout_s
                << " s (it goes on)" << std::endl;
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::seconds{1});
  }
  std::cout << "sent " << sent << " of " << recipients << " (" << bounced
            << " bounced, " << failed << " failed)" << std::endl;
  return failed == 0 ? 0 : 1;
}
