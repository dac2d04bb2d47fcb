// Admission control and /metrics on a real node over HTTP
// (runtime/admission.hpp, docs/jobs.md "Admission control"): a tenant over its
// cap of waiting jobs gets 429 while others are served; the node's bound on
// queued work gives 503; a refused request creates nothing.

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/json_value.hpp"
#include "support/metrics_text.hpp"
#include "support/process.hpp"

#include "runtime/partition.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

using namespace drover::testing::gateway_api;
using drover::testing::gateway_node;
using drover::testing::http_client;
using drover::testing::http_response;
using drover::testing::json_value;
using drover::testing::parse_metrics;
using drover::testing::sleep_job;

namespace {

/// A job that waits an hour in the timer: it stays waiting.
std::string delayed_job() {
  return R"({"type": "sleep", "input": {"ms": 0}, "delay_seconds": 3600})";
}

/// The jobs `c`'s tenant can list (one page of up to 1,000).
size_t listed(const http_client& c) {
  auto res = c.get("/api/jobs?limit=1000");
  REQUIRE(res.status == 200);
  auto doc = body_of(res);
  CHECK_FALSE(doc["has_more"].boolean());
  return doc["data"].size();
}

json_value admission_view(const http_client& admin) {
  auto res = admin.get("/api/admin/queues");
  INFO(res.body);
  REQUIRE(res.status == 200);
  return body_of(res)["admission"];
}

} // namespace

TEST_CASE("admission: a tenant over its cap of waiting jobs gets 429 with "
          "Retry-After while another tenant is served",
          "[gateway][admission]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key b{"b-app", "tenant-b", "submit,read"};
  api_key ops{"ops", "ops", "read,admin"};
  auto options = key_options({&a, &b, &ops});
  options.insert(options.end(),
                 {"--admission-tenant-waiting", "3", "--slots", "cpu=1"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto cb = node.client(b.secret);

  // A running job does not wait: it does not count against the cap.
  auto running = submit(ca, sleep_job(30000, 300));
  await_started(node, a.secret, running);
  std::vector<std::string> waiting;
  for (int i = 0; i < 3; ++i)
    waiting.push_back(submit(ca, delayed_job()));

  auto refused = ca.post("/api/jobs", delayed_job());
  INFO(refused.body);
  REQUIRE(refused.status == 429);
  CHECK(error_code_of(refused) == "rate_limited");
  CHECK(body_of(refused)["error"]["message"].str().find("waiting jobs")
        != std::string::npos);
  CHECK(refused.header("Retry-After") == "1");
  CHECK(listed(ca) == 4); // nothing created

  // Another tenant is served.
  CHECK(!submit(cb, delayed_job()).empty());

  // A batch: the items over the cap are refused one by one, nothing else.
  auto batch = ca.post("/api/jobs/batch", "{\"jobs\": [" + delayed_job() + ", "
                                              + delayed_job() + "]}");
  INFO(batch.body);
  REQUIRE(batch.status == 200);
  auto bdoc = body_of(batch);
  CHECK(bdoc["accepted"].integer() == 0);
  CHECK(bdoc["rejected"].integer() == 2);
  CHECK(bdoc["results"][0]["error"]["code"].str() == "rate_limited");
  CHECK(bdoc["results"][1]["status"].integer() == 429);
  CHECK(listed(ca) == 4);

  // A job that leaves the queue (cancelled) makes room for one.
  REQUIRE(ca.post("/api/jobs/" + waiting[0] + "/cancel", "").status == 202);
  CHECK(!submit(ca, delayed_job()).empty());
  CHECK(ca.post("/api/jobs", delayed_job()).status == 429);

  auto view = admission_view(node.client(ops.secret));
  CHECK(view["refused_total"].integer() == 4);
  CHECK(view["in_flight"].integer() == 0);
  // 4 waiting jobs (3 of tenant-a, 1 of tenant-b) at 256 bytes each.
  CHECK(view["queued_memory_bytes"].integer() == 4 * 256);
  CHECK(ca.post("/api/jobs/" + running + "/cancel", "").status == 202);
}

TEST_CASE("admission: the counts return to zero once every job has ended, "
          "through timers, retries and cancellations",
          "[gateway][admission]") {
  api_key ops{"ops", "ops", "submit,read,admin,exec"};
  auto options = key_options({&ops});
  options.insert(options.end(), {"--exec-allow", "/bin/false"});
  gateway_node node{options};
  auto c = node.client(ops.secret);
  std::vector<std::string> ids;
  ids.push_back(submit(c, sleep_job(10, 1)));
  // Scheduled: the timer moves it to the ready queue in a second.
  ids.push_back(submit(
      c, R"({"type": "sleep", "input": {"ms": 0}, "delay_seconds": 1})"));
  // Fails, is retried once after 0.1 s, fails for good (dead-lettered).
  ids.push_back(submit(c, R"({"type": "exec", "input": {"argv": ["/bin/false"]},
             "max_attempts": 2,
             "backoff": {"initial_seconds": 0.1, "jitter": 0}})"));
  auto cancelled = submit(c, delayed_job());
  REQUIRE(c.post("/api/jobs/" + cancelled + "/cancel", "").status == 202);
  for (auto& id : ids)
    await_end(node, ops.secret, id);
  auto view = admission_view(c);
  CHECK(view["queued_memory_bytes"].integer() == 0);
  CHECK(view["in_flight"].integer() == 0);
  CHECK(view["refused_total"].integer() == 0);
}

TEST_CASE("admission: past the node's bound on queued work submits get 503 "
          "with Retry-After and a refused batch creates nothing",
          "[gateway][admission]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key ops{"ops", "ops", "read,admin"};
  auto options = key_options({&a, &ops});
  // 1 MiB: 4,096 waiting jobs at 256 bytes, fewer with submissions in
  // flight.
  options.insert(options.end(), {"--admission-queue-memory-mb", "1"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto admin = node.client(ops.secret);
  std::string batch = "{\"jobs\": [";
  for (int i = 0; i < 500; ++i)
    batch += (i == 0 ? "" : ", ") + delayed_job();
  batch += "]}";
  int accepted_batches = 0;
  http_response refused;
  for (int i = 0; i < 20; ++i) {
    auto res = ca.post("/api/jobs/batch", batch);
    if (res.status != 200) {
      refused = res;
      break;
    }
    REQUIRE(body_of(res)["accepted"].integer() == 500);
    ++accepted_batches;
  }
  INFO(refused.body);
  REQUIRE(refused.status == 503);
  CHECK(error_code_of(refused) == "overloaded");
  CHECK(body_of(refused)["error"]["message"].str().find(
            "admission-queue-memory-mb")
        != std::string::npos);
  CHECK(refused.header("Retry-After") == "1");
  // 1 MiB: 7 batches of 500 waiting (896,000 bytes) leave room for about
  // 280 submissions in flight (about 530 bytes each), not for 500.
  CHECK(accepted_batches == 7);
  auto view = admission_view(admin);
  CHECK(view["queued_memory_limit_bytes"].integer() == 1024 * 1024);
  CHECK(view["queued_memory_bytes"].integer() == 3500 * 256);
  CHECK(view["queued_memory_bytes"].integer()
        <= view["queued_memory_limit_bytes"].integer());
  // Nothing of the refused batch exists: the queue holds 3,500 delayed jobs.
  auto q = admin.get("/api/admin/queues");
  REQUIRE(q.status == 200);
  CHECK(body_of(q)["delayed"].integer() == 3500);
  // Smaller requests still fit, and reads are served.
  auto small
      = ca.post("/api/jobs/batch", "{\"jobs\": [" + delayed_job() + "]}");
  CHECK(small.status == 200);
  CHECK(ca.get("/api/jobs?limit=1").status == 200);
}

TEST_CASE("metrics: GET /metrics is Prometheus text the client library "
          "parses, with the queue's figures, admin scope only",
          "[gateway][metrics]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key ops{"ops", "ops", "read,admin"};
  auto options = key_options({&a, &ops});
  options.insert(options.end(), {"--resources", "memory_gb=8"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto done = submit(ca, sleep_job(50, 1));
  await_end(node, a.secret, done);
  auto delayed = submit(ca, delayed_job());
  auto partition = std::to_string(drover::partition_of_id(delayed));

  auto res = node.client(ops.secret).get("/metrics");
  INFO(res.body);
  REQUIRE(res.status == 200);
  CHECK(res.header("Content-Type")
        == "text/plain; version=0.0.4; charset=utf-8");
  auto m = parse_metrics(res.body);
  CHECK(m["drover_jobs_completed_total"][""] == "1.0");
  CHECK(m["#type drover_jobs_completed_total"][""] == "counter");
  CHECK(m["drover_jobs_dispatched_total"]["priority=normal"] == "1.0");
  CHECK(m["drover_queue_delayed_jobs"][""] == "1.0");
  CHECK(m["#type drover_queue_delayed_jobs"][""] == "gauge");
  CHECK(m["drover_queue_ready_jobs"].size() == 3);
  CHECK(m["drover_admission_queued_work_bytes"][""] == "256.0");
  CHECK(m["drover_admission_queued_work_limit_bytes"][""] == "1073741824.0");
  CHECK(std::stod(m["process_resident_memory_bytes"][""]) > 1e6);
  CHECK(std::stod(m["process_start_time_seconds"][""]) > 1.7e9);
  CHECK(std::stod(m["drover_queue_start_time_seconds"][""]) > 1.7e9);
  // Per type, and the histograms: one job started and ran.
  CHECK(
      m["drover_jobs_type_completed_total"]["job_type=sleep,resource_class=cpu"]
      == "1.0");
  CHECK(m["drover_queue_type_delayed_jobs"]["job_type=sleep,resource_class=cpu"]
        == "1.0");
  // Scaling signals: two jobs arrived (one ready now, one delayed: the
  // delayed one arrives when due), one ran; one slot keeps up.
  const std::string sleep_cpu = "job_type=sleep,resource_class=cpu";
  CHECK(m["#type drover_queue_type_arrival_rate"][""] == "gauge");
  CHECK(std::stod(m["drover_queue_type_arrival_rate"][sleep_cpu]) > 0);
  CHECK(std::stod(m["drover_queue_type_completion_rate"][sleep_cpu]) > 0);
  // The one attempt slept 50 ms.
  CHECK(std::stod(m["drover_queue_type_mean_run_time_seconds"][sleep_cpu])
        >= 0.05);
  CHECK(m["drover_queue_type_recommended_slots"][sleep_cpu] == "1.0");
  // The node's own workers' pool ("" node), nothing held now.
  CHECK(m["drover_resource_pool_total"]["node=,pool=memory_gb"] == "8.0");
  CHECK(m["drover_resource_pool_used"]["node=,pool=memory_gb"] == "0.0");
  CHECK(m["#type drover_job_start_latency_seconds_count"][""] == "histogram");
  CHECK(m["drover_job_start_latency_seconds_count"][""] == "1.0");
  CHECK(m["drover_job_start_latency_seconds_bucket"]["le=+Inf"] == "1.0");
  CHECK(m["drover_job_run_time_seconds_count"][""] == "1.0");
  CHECK(m["drover_job_run_time_seconds_bucket"].size() == 17);
  // Per partition: the delayed job waits in its id's partition, and only
  // partitions with jobs are listed.
  CHECK(m["#type drover_partition_waiting_jobs"][""] == "gauge");
  CHECK(m["drover_partition_waiting_jobs"]["partition=" + partition] == "1.0");
  CHECK(m["drover_partition_waiting_jobs"].size() == 1);
  CHECK(m["drover_partition_running_attempts"]["partition=" + partition]
        == "0.0");
  auto queues = body_of(node.client(ops.secret).get("/api/admin/queues"));
  REQUIRE(queues["types"].items().size() == 1);
  CHECK(queues["types"].items()[0]["completed_total"].integer() == 1);
  CHECK(queues["types"].items()[0]["delayed"].integer() == 1);
  CHECK(queues["types"].items()[0]["recommended_slots"].integer() == 1);
  REQUIRE(queues["partitions"].size() == 1);
  CHECK(std::to_string(queues["partitions"].items()[0]["partition"].integer())
        == partition);
  CHECK(queues["partitions"].items()[0]["waiting"].integer() == 1);

  // Not without the admin scope, not without a key, GET only.
  CHECK(ca.get("/metrics").status == 403);
  CHECK(node.client().get("/metrics").status == 401);
  CHECK(node.client(ops.secret).post("/metrics", "").status == 405);
}

TEST_CASE("flow: jobs wait behind a rate limit without a worker, show in "
          "/api/admin/flow and /metrics, leave it when cancelled",
          "[gateway][metrics][flow]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key ops{"ops", "ops", "read,admin"};
  auto options = key_options({&a, &ops});
  // One token per 1000 s, and the bucket starts empty: every job waits.
  // The other key's name needs escaping in a label.
  options.insert(options.end(),
                 {"--slots", "cpu=2", "--rate-limit", "mail:rate=0.001",
                  "--rate-limit", "we\"ird\\:rate=5", "--circuit-breaker",
                  "sink:failures=2,cooldown=5", "--circuit-breaker",
                  "geo:ratio=0.5,window=30"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto admin = node.client(ops.secret);
  auto limited = [](const char* extra = "") {
    return std::string{R"({"type":"sleep","input":{"ms":1},)"}
           + R"("rate_limit_key":"mail")" + extra + "}";
  };
  auto first = submit(ca, limited(R"(,"breaker_key":"sink")"));
  auto second = submit(ca, limited());
  // Not held: another key's job runs while they wait, on an idle worker.
  auto free_job = submit(ca, sleep_job(0, 0));
  CHECK(await_end(node, a.secret, free_job)["status"].str() == "completed");

  auto flow = admin.get("/api/admin/flow");
  INFO(flow.body);
  REQUIRE(flow.status == 200);
  auto doc = body_of(flow);
  REQUIRE(doc["rate_limits"].items().size() == 2);
  auto mail = doc["rate_limits"].items()[0];
  CHECK(mail["key"].str() == "mail");
  CHECK(mail["waiting"].integer() == 2);
  CHECK(mail["granted"].integer() == 0);
  CHECK(doc["breakers"].items()[0]["state"].str() == "closed");
  // The control log: each limiter's and breaker's authority started.
  CHECK(doc["control_log"].items().size() == 4);
  auto q = body_of(admin.get("/api/admin/queues"));
  CHECK(q["priorities"]["normal"]["depth"].integer() == 2);
  // Their status says what they wait for.
  CHECK(body_of(ca.get("/api/jobs/" + second))["waiting_for"].str()
        == "a token of rate limit 'mail' (0.001/s; 2 job(s) wait for one)");
  CHECK(q["idle_workers"].integer() == 2);

  auto res = admin.get("/metrics");
  REQUIRE(res.status == 200);
  auto m = parse_metrics(res.body);
  CHECK(m["drover_rate_limit_waiting_jobs"]["key=mail"] == "2.0");
  CHECK(m["drover_rate_limit_granted_total"]["key=mail"] == "0.0");
  CHECK(m["#type drover_rate_limit_granted_total"][""] == "counter");
  CHECK(m["drover_rate_limit_tokens_per_second"]["key=we\"ird\\"] == "5.0");
  CHECK(m["drover_breaker_state"]["key=sink,state=closed"] == "1.0");
  CHECK(m["drover_breaker_state"]["key=sink,state=open"] == "0.0");
  // The window's figures, for the breaker with a ratio rule only.
  CHECK(m["drover_breaker_window_calls"]["key=geo"] == "0.0");
  CHECK(m["drover_breaker_window_failures"]["key=geo"] == "0.0");
  CHECK(m["drover_breaker_window_calls"].count("key=sink") == 0);

  // A cancelled job leaves its place behind the limit.
  REQUIRE(ca.post("/api/jobs/" + second + "/cancel", "").status == 202);
  CHECK(await_end(node, a.secret, second)["status"].str() == "cancelled");
  CHECK(body_of(admin.get("/api/admin/flow"))["rate_limits"]
            .items()[0]["waiting"]
            .integer()
        == 1);
  CHECK(body_of(ca.get("/api/jobs/" + first))["status"].str() == "queued");

  // Undeclared keys are refused, nothing created; the views are admin's.
  auto before = body_of(admin.get("/api/admin/queues"));
  auto bad = ca.post("/api/jobs", R"({"type":"sleep","input":{"ms":1},)"
                                  R"("breaker_key":"nope"})");
  CHECK(bad.status == 400);
  CHECK(bad.body.find("breaker_key 'nope' is not declared")
        != std::string::npos);
  CHECK(ca.get("/api/admin/flow").status == 403);
  CHECK(node.client().get("/api/admin/flow").status == 401);
  CHECK(admin.post("/api/admin/flow", "").status == 405);
}

TEST_CASE("flow: a job naming two rate limits waits for a token of each",
          "[gateway][flow]") {
  api_key a{"a-app", "tenant-a", "submit,read"};
  api_key ops{"ops", "ops", "read,admin"};
  auto options = key_options({&a, &ops});
  // "slow" starts empty and fills one token per 1000 s: nothing passes it.
  options.insert(options.end(),
                 {"--slots", "cpu=2", "--rate-limit", "fast:rate=1000",
                  "--rate-limit", "slow:rate=0.001"});
  gateway_node node{options};
  auto ca = node.client(a.secret);
  auto admin = node.client(ops.secret);
  auto both = submit(ca, R"({"type":"sleep","input":{"ms":1},)"
                         R"("rate_limit_keys":["fast","slow"]})");
  // The fast limit alone lets its job through, on a worker the held job
  // does not occupy.
  auto fast = submit(ca, R"({"type":"sleep","input":{"ms":1},)"
                         R"("rate_limit_key":"fast"})");
  CHECK(await_end(node, a.secret, fast)["status"].str() == "completed");
  auto held = body_of(ca.get("/api/jobs/" + both));
  CHECK(held["status"].str() == "queued");
  CHECK(held["waiting_for"].str()
        == "a token of rate limit 'slow' (0.001/s; 1 job(s) wait for one)");
  CHECK(held["rate_limit_key"].str() == "fast");
  REQUIRE(held["rate_limit_keys"].size() == 2);
  CHECK(held["rate_limit_keys"].items()[1].str() == "slow");
  // The slow limit raised at run time: the job gets its tokens and runs.
  auto put
      = admin.call(drover::testing::http_detail::bhttp::verb::put,
                   "/api/admin/rate-limits/slow", R"({"spec":"rate=1000"})",
                   {{"Content-Type", "application/json"}});
  INFO(put.body);
  REQUIRE(put.status == 200);
  CHECK(await_end(node, a.secret, both)["status"].str() == "completed");
  auto flow = body_of(admin.get("/api/admin/flow"));
  for (auto& r : flow["rate_limits"].items())
    CHECK(r["granted"].integer() == (r["key"].str() == "fast" ? 2 : 1));

  // Refused at submit, nothing created.
  auto refused = [&](const std::string& fields, const std::string& says) {
    auto res = ca.post("/api/jobs",
                       R"({"type":"sleep","input":{"ms":1},)" + fields + "}");
    INFO(fields << " -> " << res.body);
    CHECK(res.status == 400);
    CHECK(res.body.find(says) != std::string::npos);
  };
  refused(R"("rate_limit_key":"fast","rate_limit_keys":["slow"])",
          "give rate_limit_key or rate_limit_keys, not both");
  refused(R"("rate_limit_keys":["fast","fast"])", "is named twice");
  refused(R"("rate_limit_keys":["a","b","c","d","e"])", "at most 4");
  refused(R"("rate_limit_keys":["fast",""])", "a key is empty");
  refused(R"("rate_limit_keys":["fast",7])", "rate_limit_keys");
  refused(R"("rate_limit_keys":"fast")", "expected an array");
  refused(R"("rate_limit_keys":["fast","nope"])",
          "rate_limit_key 'nope' is not declared");
  auto list = body_of(ca.get("/api/jobs"));
  CHECK(list["data"].size() == 2);
}

TEST_CASE("flow: a job naming two busy rate limits is not overtaken at each "
          "of them by jobs naming one",
          "[gateway][flow]") {
  gateway_node node{{"--slots", "cpu=4", "--rate-limit", "ra:rate=7,burst=1",
                     "--rate-limit", "rb:rate=5,burst=1"}};
  auto c = node.client();
  auto job = [](const std::string& keys) {
    return R"({"type":"sleep","input":{"ms":1},"rate_limit_keys":)" + keys
           + "}";
  };
  auto both = submit(c, job(R"(["ra","rb"])"));
  std::vector<std::string> others;
  for (int i = 0; i < 15; ++i) {
    others.push_back(submit(c, job(R"(["ra"])")));
    others.push_back(submit(c, job(R"(["rb"])")));
  }
  // Its place: among the first starts, not after the lines at both
  // limits drained (it keeps the token of the first while it waits at the
  // second, where its age puts it first).
  CHECK(await_end(node, "", both)["status"].str() == "completed");
  auto started = run_interval(c, both).first;
  int before = 0;
  for (auto& id : others) {
    CHECK(await_end(node, "", id)["status"].str() == "completed");
    if (run_interval(c, id).first < started)
      ++before;
  }
  INFO(before << " of 30 younger jobs started first");
  CHECK(before <= 4);
}

TEST_CASE("flow: bad --rate-limit and --circuit-breaker items stop the node "
          "with exit 2",
          "[gateway][flow]") {
  using drover::testing::expect_node_refuses;
  expect_node_refuses({"--rate-limit", "mail:rate=0"},
                      "rate must be a number of tokens per second");
  expect_node_refuses({"--rate-limit", "mail=5"}, "expected NAME:rate=R");
  expect_node_refuses({"--rate-limit", "m:rate=1", "--rate-limit", "m:rate=2"},
                      "'m' is given twice");
  expect_node_refuses({"--circuit-breaker", "sink:cooldown=5"},
                      "failures=N (in a row) or ratio=R,window=S");
  expect_node_refuses({"--circuit-breaker", "sink:ratio=0.5,window=0"},
                      "window must be seconds within [1, 3600]");
  expect_node_refuses({"--circuit-breaker", "sink:failures=1,codes=cancelled"},
                      "never counts");
}

TEST_CASE("flow: a breaker that opens again after a failed last-attempt probe "
          "still lets its waiting jobs probe at the next cooldown",
          "[gateway][flow]") {
  gateway_node node{
      {"--slots", "cpu=2", "--circuit-breaker", "sink:failures=1,cooldown=1"}};
  auto c = node.client();
  auto exec = [](const char* program) {
    return std::string{R"({"type":"exec","input":{"argv":[")"} + program
           + R"("]},"breaker_key":"sink","max_attempts":1})";
  };
  auto first = submit(c, exec("/bin/false"));
  CHECK(await_end(node, "", first)["status"].str() == "failed");
  // Open: both wait; the older one probes and fails for good, which opens
  // the breaker again with no retry of its own to come back.
  auto probe = submit(c, exec("/bin/false"));
  auto waiting = submit(c, exec("/bin/true"));
  // While it is open (or half-open, the probe out), the waiting job's
  // status names the breaker.
  auto why = body_of(c.get("/api/jobs/" + waiting));
  if (why["status"].str() == "queued")
    CHECK(why["waiting_for"].str().rfind("its circuit breaker 'sink' is ", 0)
          == 0);
  CHECK(await_end(node, "", probe)["status"].str() == "failed");
  // The next cooldown lets the other one probe: it completes, closed.
  CHECK(await_end(node, "", waiting)["status"].str() == "completed");
  auto flow = body_of(c.get("/api/admin/flow"));
  CHECK(flow["breakers"].items()[0]["state"].str() == "closed");
  CHECK(flow["breakers"].items()[0]["times_opened"].integer() == 2);
}
