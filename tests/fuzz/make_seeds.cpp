// Writes the generated part of the codec targets' seed corpora: one sample
// of every message kind (tests/runtime/model_samples.hpp: every field set),
// as bytes for codec_bytes_fuzz and as JSON for codec_json_fuzz, each
// prefixed with its kind byte (fuzz_check.hpp). Run it again after a
// schema change and commit what changed:
//
//   build-fuzz/tests/fuzz/make_seeds tests/fuzz/corpus

#include "fuzz_check.hpp"

#include "runtime/codec.hpp"
#include "tests/runtime/model_samples.hpp"

#include <fstream>
#include <iostream>
#include <string>

namespace {

using namespace drover;

submit_request sample_submit_request() {
  submit_request x;
  x.type = "exec";
  x.input = R"({"argv":["echo","h\u00e9llo"]})";
  x.idempotency_key = "order-4711";
  x.callback_url = "https://example.com/hook";
  x.resources = {samples::resource("gpu", 1)};
  x.priority = 0;
  x.run_at = std::string{"2026-12-01T10:00:00.5+01:00"};
  x.max_attempts = 5;
  x.timeout_ms = 60000;
  x.backoff = samples::backoff();
  return x;
}

job_query sample_job_query() {
  job_query x;
  x.status = 2;
  x.dead_lettered = true;
  x.tenant = "acme";
  x.type = "sleep";
  x.after = "job-1";
  x.limit = 50;
  return x;
}

queue_stats sample_queue_stats() {
  queue_stats x;
  x.depth = {1, 2, 3};
  x.oldest_age_ms = {10, 20, 30};
  x.dispatched = {4, 5, 6};
  x.delayed = 7;
  x.running = 8;
  x.idle_workers = 9;
  x.completed = 10;
  x.failed = 11;
  x.cancelled = 12;
  x.retried = 13;
  return x;
}

backoff_policy sample_backoff_policy() {
  return samples::backoff();
}
resource_request sample_resource_request() {
  return samples::resource("cpu", 2);
}
job_spec sample_job_spec() {
  return samples::spec();
}
stage sample_stage() {
  return samples::stages()[1];
}
progress_update sample_progress_update() {
  return samples::progress();
}
error_info sample_error_info() {
  return samples::error();
}
job_record sample_job_record() {
  return samples::record();
}
webhook_attempt sample_webhook_attempt() {
  return samples::webhook(samples::all_webhook_outcomes[0]);
}
job_event sample_job_event() {
  return samples::event(event_kind::progressed);
}
resource_capacity sample_resource_capacity() {
  return samples::capacity("gpu", 2);
}
register_worker sample_register_worker() {
  return samples::registration();
}
lease sample_lease() {
  return samples::make_lease("job-1", 2);
}
lease_batch sample_lease_batch() {
  return samples::leases();
}
running_attempt sample_running_attempt() {
  return samples::running("job-1", 2);
}
heartbeat sample_heartbeat() {
  return samples::beat();
}
progress_batch sample_progress_batch() {
  return samples::progress_updates();
}
completion sample_completion() {
  return samples::done(completion_outcome::succeeded);
}
completion_batch sample_completion_batch() {
  return samples::completions();
}
tree_node sample_tree_node() {
  return samples::tree();
}
tree_snapshot sample_tree_snapshot() {
  return samples::snapshot();
}

bool write(const std::string& path, char kind, const std::string& body) {
  std::ofstream out{path, std::ios::binary};
  out.put(kind);
  out.write(body.data(), static_cast<std::streamsize>(body.size()));
  return static_cast<bool>(out);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: make_seeds <corpus folder>\n";
    return 2;
  }
  std::string dir = argv[1];
  bool ok = true;
  char kind = 0;
#define DROVER_FUZZ_SEED(type)                                                 \
  {                                                                            \
    auto x = sample_##type();                                                  \
    auto bytes = to_bytes(x);                                                  \
    ok &= write(dir + "/codec_bytes_fuzz/" #type, kind,                        \
                std::string{bytes.begin(), bytes.end()});                      \
    ok &= write(dir + "/codec_json_fuzz/" #type, kind, to_json(x));            \
    ++kind;                                                                    \
  }
  DROVER_FUZZ_CODEC_KINDS(DROVER_FUZZ_SEED)
#undef DROVER_FUZZ_SEED
  if (!ok) {
    std::cerr << "make_seeds: cannot write under " << dir
              << " (do codec_bytes_fuzz/ and codec_json_fuzz/ exist?)\n";
    return 1;
  }
  return 0;
}
