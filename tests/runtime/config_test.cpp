#include "runtime/config.hpp"

#include "runtime/errors.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace drover;

namespace {

caf::expected<parse_outcome> parse(std::vector<std::string> args) {
  std::vector<const char*> argv{"drover-node"};
  for (auto& a : args)
    argv.push_back(a.c_str());
  std::ostringstream out;
  return parse_node_config(static_cast<int>(argv.size()), argv.data(), out);
}

void expect_bad(std::vector<std::string> args, const std::string& fragment) {
  auto r = parse(std::move(args));
  REQUIRE_FALSE(r);
  CHECK(is(r.error(), errc::bad_config));
  INFO(describe(r.error()));
  CHECK(describe(r.error()).find(fragment) != std::string::npos);
}

} // namespace

TEST_CASE("defaults are valid", "[config]") {
  auto r = parse({});
  REQUIRE(r);
  CHECK_FALSE(r->exit_now);
  CHECK(r->config.roles == std::vector<std::string>{"all"});
  CHECK(r->config.admin_host == "127.0.0.1");
  CHECK(r->config.admin_port == 7411);
  CHECK_FALSE(r->config.node_id.empty());
}

TEST_CASE("command line values are parsed", "[config]") {
  auto r = parse({"--node-id", "n1", "--roles", "coordinator,worker",
                  "--admin-port", "0", "--scheduler-threads", "1"});
  REQUIRE(r);
  CHECK(r->config.node_id == "n1");
  CHECK(r->config.roles == std::vector<std::string>{"coordinator", "worker"});
  CHECK(r->config.admin_port == 0);
  CHECK(r->config.scheduler_threads == 1);
  r = parse({"--slots", "cpu=4,gpu=1"});
  REQUIRE(r);
  CHECK(r->config.slots
        == std::map<std::string, uint32_t>{{"cpu", 4}, {"gpu", 1}});
  CHECK(r->config.recovery_page_jobs == 5000);
  r = parse({"--recovery-page-jobs", "250"});
  REQUIRE(r);
  CHECK(r->config.recovery_page_jobs == 250);
}

TEST_CASE("the command line wins over the config file", "[config]") {
  char path[] = "/tmp/drover-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f{path};
    f << "node-id = from-file\nadmin-port = 9000\n";
  }
  auto r = parse({"--config", path, "--admin-port", "9001"});
  std::remove(path);
  REQUIRE(r);
  CHECK(r->config.node_id == "from-file");
  CHECK(r->config.admin_port == 9001);
}

TEST_CASE("cluster roles parse into what each node needs", "[config]") {
  auto r = parse({"--node-id", "w1", "--roles", "worker", "--coordinator",
                  "10.0.0.5:7420", "--join-secret", "0123456789abcdef",
                  "--job-types", "sleep,exec", "--slots", "gpu=1",
                  "--insecure-cluster"});
  REQUIRE(r);
  CHECK(r->config.insecure_cluster);
  REQUIRE(r->config.coordinators.size() == 1);
  CHECK(r->config.coordinators[0].host == "10.0.0.5");
  CHECK(r->config.coordinators[0].port == 7420);
  CHECK(r->config.job_types == std::vector<std::string>{"sleep", "exec"});
  auto roles = roles_of(r->config);
  CHECK((roles.worker && !roles.coordinator && !roles.gateway));
  auto c = parse({"--roles", "coordinator,gateway", "--cluster-port", "0"});
  REQUIRE(c);
  CHECK(c->config.cluster_port == 0);
  CHECK(roles_of(c->config).gateway);
  auto v6 = parse({"--roles", "gateway", "--coordinator", "[::1]:7420"});
  REQUIRE(v6);
  REQUIRE(v6->config.coordinators.size() == 1);
  CHECK(v6->config.coordinators[0].host == "::1");
  CHECK(v6->config.coordinators[0].text() == "[::1]:7420");
  // An active coordinator and its standbys, in the order given.
  auto many = parse({"--roles", "worker", "--coordinator",
                     "127.0.0.1:7420,127.0.0.1:7421", "--coordinator",
                     "localhost:7422"});
  REQUIRE(many);
  REQUIRE(many->config.coordinators.size() == 3);
  CHECK(many->config.coordinators[1].port == 7421);
  CHECK(many->config.coordinators[2].text() == "localhost:7422");
  auto standby = parse({"--roles", "all", "--store", "postgres", "--pg-url",
                        "postgresql:///x", "--standby"});
  REQUIRE(standby);
  CHECK(standby->config.standby);
}

TEST_CASE("bad configuration gets a specific error", "[config]") {
  expect_bad({"--no-such-option"}, "no-such-option");
  expect_bad({"--admin-port", "70000"}, "admin-port");
  expect_bad({"--admin-port", "http"}, "admin-port");
  expect_bad({"--scheduler-threads", "0"}, "scheduler-threads");
  expect_bad({"--scheduler-policy", "fifo"}, "scheduler-policy");
  expect_bad({"--roles", "janitor"}, "unknown role 'janitor'");
  expect_bad({"--roles", ","}, "at least one role");
  // A node refuses a role set it cannot serve (docs/cluster.md).
  expect_bad({"--roles", "worker"}, "needs --coordinator");
  expect_bad({"--roles", "gateway"}, "needs --coordinator");
  expect_bad({"--roles", "coordinator"}, "needs --cluster-port");
  expect_bad({"--roles", "worker", "--coordinator", "h:1", "--store",
              "postgres", "--pg-url", "x"},
             "a worker or gateway node has no store");
  expect_bad({"--roles", "all", "--coordinator", "h:1"},
             "--coordinator is for worker and gateway nodes");
  expect_bad(
      {"--roles", "worker", "--coordinator", "h:1", "--cluster-port", "1"},
      "--cluster-port is for coordinators");
  expect_bad({"--roles", "coordinator", "--cluster-port", "0", "--cluster-host",
              "0.0.0.0"},
             "--join-secret is required");
  expect_bad({"--roles", "worker", "--coordinator", "h"}, "host:port");
  expect_bad({"--roles", "worker", "--coordinator", "h:99999"},
             "within [1, 65535]");
  expect_bad({"--join-secret", "short"}, "at least 16 characters");
  // The PostgreSQL store's cache: a range, and not for the memory store.
  expect_bad({"--store-cache-jobs", "5000"}, "is for --store postgres");
  for (auto n : {"0", "999", "10000001", "-1"})
    expect_bad(
        {"--store", "postgres", "--pg-url", "x", "--store-cache-jobs", n},
        "store-cache-jobs must be within [1000, 10000000]");
  {
    auto ok = parse({"--store", "postgres", "--pg-url", "x",
                     "--store-cache-jobs", "20000"});
    REQUIRE(ok);
    CHECK(ok->config.store_cache_jobs == 20000);
  }
  // Outside loopback: TLS, or an explicit trusted network.
  expect_bad({"--roles", "worker", "--coordinator", "10.0.0.5:7420"},
             "without TLS");
  expect_bad({"--roles", "coordinator", "--cluster-port", "7420",
              "--cluster-host", "10.0.0.1", "--join-secret",
              "0123456789abcdef"},
             "without TLS");
  expect_bad({"--tls-certificate", "a.pem"}, "all three");
  expect_bad({"--worker-prefetch", "4", "--roles", "coordinator",
              "--cluster-port", "0"},
             "--worker-prefetch is for worker nodes");
  expect_bad({"--exec-user-id", "2000000000", "--roles", "coordinator",
              "--cluster-port", "0"},
             "--exec-user-id are for worker nodes");
  expect_bad({"--exec-cgroup", "/sys/fs/cgroup/pids", "--roles", "coordinator",
              "--cluster-port", "0"},
             "--exec-cgroup, --exec-memory-mb and --exec-user-id are for");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:1",
              "--attempt-lease-ttl-ms", "4000"},
             "the coordinator's");
  expect_bad({"--roles", "gateway", "--coordinator", "127.0.0.1:1",
              "--join-secret", "0123456789abcdef", "--gateway-join-secret",
              "fedcba9876543210"},
             "--gateway-join-secret is for coordinators");
  expect_bad(
      {"--roles", "worker", "--coordinator", "127.0.0.1:7420,127.0.0.1:7420"},
      "given twice");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:7420,"},
             "host:port");
  expect_bad(
      {"--roles", "worker", "--coordinator", "127.0.0.1:7420,10.0.0.5:7420"},
      "without TLS");
  // The default host given alone still needs a port: not taken and ignored.
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:7420",
              "--metrics-host", "127.0.0.1"},
             "need --metrics-port");
  // Loopback is an address written as one: a name that looks like it is
  // resolved, and may resolve anywhere.
  for (auto host : {"127.evil.example", "127.0.0.1.nip.io", "::2"})
    expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:7420",
                "--metrics-port", "9100", "--metrics-host", host},
               "needs --metrics-token-file");
  expect_bad({"--roles", "worker", "--coordinator", "127.evil.example:7420"},
             "without TLS");
  for (auto host : {"127.0.0.2", "[::1]", "::ffff:127.0.0.1", "localhost"}) {
    auto ok = parse({"--roles", "worker", "--coordinator", "127.0.0.1:7420",
                     "--metrics-port", "9100", "--metrics-host", host});
    INFO(host);
    CHECK(ok);
  }
  expect_bad({"--standby"}, "--standby needs --store postgres");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:1", "--store",
              "memory", "--standby"},
             "--standby");
  expect_bad({"--share-partitions"},
             "--share-partitions needs --store postgres");
  expect_bad({"--store", "postgres", "--pg-url", "postgresql:///x",
              "--share-partitions", "--standby"},
             "exclude each other");
  expect_bad({"--roles", "gateway", "--coordinator", "127.0.0.1:1",
              "--share-partitions", "--standby"},
             "--standby");
  CHECK(parse({"--roles", "gateway", "--coordinator", "127.0.0.1:1,127.0.0.1:2",
               "--share-partitions"}));
  // Only a sharing coordinator has a share to keep.
  expect_bad({"--store", "postgres", "--pg-url", "postgresql:///x",
              "--keep-share-on-stop"},
             "--keep-share-on-stop is for coordinators started with "
             "--share-partitions");
  expect_bad({"--roles", "gateway", "--coordinator", "127.0.0.1:1,127.0.0.1:2",
              "--share-partitions", "--keep-share-on-stop"},
             "--keep-share-on-stop");
  CHECK(parse({"--store", "postgres", "--pg-url", "postgresql:///x",
               "--share-partitions", "--keep-share-on-stop"}));
  {
    // A worker node: join each coordinator listed, with a share of the
    // slots; what one connection alone accounts for is refused.
    const std::vector<std::string> worker{
        "--roles", "worker", "--coordinator",     "127.0.0.1:1,127.0.0.1:2",
        "--slots", "cpu=4",  "--share-partitions"};
    auto w = parse(worker);
    REQUIRE(w);
    CHECK(w->config.share_partitions);
    auto with = [&worker](std::vector<std::string> more) {
      auto args = worker;
      args.insert(args.end(), more.begin(), more.end());
      return args;
    };
    expect_bad(with({"--resources", "memory_gb=8"}),
               "--resources with --share-partitions");
    expect_bad(with({"--elastic-slots", "cpu=1"}),
               "--elastic-slots with --share-partitions");
    expect_bad(with({"--node-id", std::string(121, 'w')}),
               "at most 120 characters");
  }
  {
    auto sharing = parse({"--store", "postgres", "--pg-url", "postgresql:///x",
                          "--share-partitions"});
    REQUIRE(sharing);
    CHECK(sharing->config.share_partitions);
  }
  expect_bad({"--recovery-page-jobs", "0"}, "within [1, 100000]");
  expect_bad({"--recovery-page-jobs", "100001"}, "within [1, 100000]");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:1",
              "--recovery-page-jobs", "100"},
             "--recovery-page-jobs is for coordinators");
  expect_bad({"--attempt-lease-ttl", "sleep"}, "type=ms");
  expect_bad({"--attempt-lease-ttl", "sleep=abc"}, "not a number");
  expect_bad({"--attempt-lease-ttl", "sleep=600"}, "more than twice");
  expect_bad({"--attempt-lease-ttl", "sleep=6000", "--attempt-lease-ttl",
              "sleep=7000"},
             "given twice");
  expect_bad({"--join-secret", "0123456789abcdef", "--gateway-join-secret",
              "0123456789abcdef"},
             "must differ");
  expect_bad({"--attempt-lease-ttl-ms", "2000",
              "--worker-heartbeat-interval-ms", "1000"},
             "less than half");
  expect_bad(
      {"--job-types", "sleep", "--roles", "coordinator", "--cluster-port", "0"},
      "--job-types is for worker nodes");
  expect_bad({"--node-id", "a b"}, "node-id");
  expect_bad({"--node-id", "w.c1"}, "may not end in '.c' and digits");
  expect_bad({"--node-id", "host.c12"}, "may not end in '.c' and digits");
  CHECK(parse({"--node-id", "w.c"}));
  CHECK(parse({"--node-id", "w.c1x"}));
  CHECK(parse({"--node-id", "web.cluster1"}));
  expect_bad(
      {"--heartbeat-interval-ms", "5000", "--connection-timeout-ms", "1000"},
      "connection-timeout-ms must exceed");
  expect_bad({"--config", "/nonexistent/drover.ini"}, "cannot read config");
  expect_bad({"--slots", "cpu"}, "expected class=count");
  expect_bad({"--slots", "cpu=0"}, "within [1, 1024]");
  expect_bad({"--slots", "cpu=2,cpu=3"}, "listed twice");
  expect_bad({"--slots", "c pu=2"}, "class names");
  expect_bad({"--slots", ","}, "at least one class");
  expect_bad({"--aging-interval-ms", "0"}, "aging-interval-ms");
  expect_bad({"--store", "redis"}, "store must be 'postgres' or 'memory'");
  expect_bad({"--store", "postgres"}, "needs --pg-url");
}

TEST_CASE("a config file with an unknown key is refused", "[config]") {
  char path[] = "/tmp/drover-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f{path};
    f << "admin-prot = 9000\n";
  }
  auto r = parse({"--config", path});
  std::remove(path);
  REQUIRE_FALSE(r);
  CHECK(describe(r.error()).find("admin-prot") != std::string::npos);
}

TEST_CASE("help asks to exit without running", "[config]") {
  auto r = parse({"--help"});
  REQUIRE(r);
  CHECK(r->exit_now);
}

TEST_CASE("webhook options are parsed and validated", "[config][webhook]") {
  // 32 bytes, base64: what `openssl rand -base64 32` prints.
  const std::string secret
      = "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
  auto r = parse(
      {"--webhook-secret", secret, "--webhook-allow", "127.0.0.1/32, ::1",
       "--webhook-allow", "10.1.0.0/16", "--webhook-retry-period-ms", "5000",
       "--webhook-initial-backoff-ms", "10", "--webhook-max-backoff-ms", "100",
       "--webhook-timeout-ms", "500", "--webhook-max-response-bytes", "1024"});
  INFO((r ? "" : describe(r.error())));
  REQUIRE(r);
  const auto& cfg = r->config;
  CHECK(cfg.webhook_secret == secret);
  CHECK(cfg.webhook_allow
        == std::vector<std::string>{"127.0.0.1/32", "::1", "10.1.0.0/16"});
  CHECK(cfg.webhook_retry_period.count() == 5000);
  CHECK(cfg.webhook_initial_backoff.count() == 10);
  CHECK(cfg.webhook_max_backoff.count() == 100);
  CHECK(cfg.webhook_timeout.count() == 500);
  CHECK(cfg.webhook_max_response_bytes == 1024);
  auto key = decode_webhook_secret(secret);
  REQUIRE(key);
  CHECK(*key == "0123456789abcdef0123456789abcdef");
  // Defaults.
  auto d = parse({});
  REQUIRE(d);
  CHECK(d->config.webhook_secret.empty());
  CHECK(d->config.webhook_retry_period.count() == 24LL * 3600 * 1000);
  CHECK(d->config.webhook_initial_backoff.count() == 1000);
  CHECK(d->config.webhook_max_backoff.count() == 3600 * 1000);
  CHECK(d->config.webhook_timeout.count() == 10000);
  CHECK(d->config.webhook_max_response_bytes == 64 * 1024);
}

TEST_CASE("bad webhook options are refused with clear errors",
          "[config][webhook]") {
  expect_bad({"--webhook-secret", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3"},
             "whsec_<base64>");
  expect_bad({"--webhook-secret", "whsec_not*base64"}, "not valid base64");
  expect_bad({"--webhook-secret", "whsec_c2hvcnQ="}, "24 to 64 bytes");
  expect_bad({"--webhook-allow", "10.0.0.1/8"}, "bits set past its prefix");
  expect_bad({"--webhook-allow", "localhost"}, "webhook-allow");
  expect_bad({"--webhook-allow", "::1/129"}, "prefix length over 128");
  expect_bad({"--webhook-retry-period-ms", "-1"}, "webhook-retry-period-ms");
  expect_bad({"--webhook-initial-backoff-ms", "0"},
             "webhook-initial-backoff-ms");
  expect_bad({"--webhook-initial-backoff-ms", "5000",
              "--webhook-max-backoff-ms", "100"},
             "webhook-max-backoff-ms must be at least");
  expect_bad({"--webhook-timeout-ms", "0"}, "webhook-timeout-ms");
  expect_bad({"--webhook-max-response-bytes", "0"},
             "webhook-max-response-bytes");
}

TEST_CASE("webhook-allow lines of a config file add up", "[config][webhook]") {
  char path[] = "/tmp/drover-config-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  {
    std::ofstream f{path};
    f << "webhook-allow = 127.0.0.1/32\nwebhook-allow = ::1/128,10.0.0.0/8\n";
  }
  auto r = parse({"--config", path, "--webhook-allow", "192.168.0.0/16"});
  std::remove(path);
  INFO((r ? "" : describe(r.error())));
  REQUIRE(r);
  CHECK(r->config.webhook_allow
        == std::vector<std::string>{"192.168.0.0/16", "127.0.0.1/32", "::1/128",
                                    "10.0.0.0/8"});
}

TEST_CASE("lease options are parsed and validated", "[config][lease]") {
  auto defaults = parse({});
  REQUIRE(defaults);
  CHECK(defaults->config.lease_ttl == std::chrono::milliseconds{5000});
  CHECK(defaults->config.lease_renew_interval
        == std::chrono::milliseconds{1000});
  auto r
      = parse({"--lease-ttl-ms", "2000", "--lease-renew-interval-ms", "300"});
  REQUIRE(r);
  CHECK(r->config.lease_ttl == std::chrono::milliseconds{2000});
  CHECK(r->config.lease_renew_interval == std::chrono::milliseconds{300});
  expect_bad({"--lease-ttl-ms", "100"}, "lease-ttl-ms must be within");
  expect_bad({"--lease-ttl-ms", "700000"}, "lease-ttl-ms must be within");
  expect_bad({"--lease-ttl-ms", "2000", "--lease-renew-interval-ms", "1000"},
             "less than half of lease-ttl-ms");
  expect_bad({"--lease-renew-interval-ms", "10"}, "at least 50");
}

TEST_CASE("admission options: defaults, values, and refusals", "[config]") {
  auto d = parse({});
  REQUIRE(d);
  CHECK(d->config.admission.memory_bytes == uint64_t{1024} * 1024 * 1024);
  CHECK(d->config.admission.store_backlog == 50000);
  CHECK(d->config.admission.tenant_waiting == 0);
  CHECK(d->config.admission.partition_waiting == 0);
  auto r
      = parse({"--admission-queue-memory-mb", "64", "--admission-store-backlog",
               "0", "--admission-tenant-waiting", "1000",
               "--admission-tenant-cap", "acme=5", "--admission-tenant-cap",
               "free=0", "--admission-partition-waiting", "20000"});
  REQUIRE(r);
  const auto& a = r->config.admission;
  CHECK(a.memory_bytes == uint64_t{64} * 1024 * 1024);
  CHECK(a.store_backlog == 0);
  CHECK(a.tenant_waiting == 1000);
  CHECK(a.tenant_waiting_caps
        == std::map<std::string, uint64_t>{{"acme", 5}, {"free", 0}});
  CHECK(a.partition_waiting == 20000);
  expect_bad({"--admission-tenant-cap", "acme"}, "tenant=N");
  expect_bad({"--admission-tenant-cap", "=5"}, "tenant=N");
  expect_bad({"--admission-tenant-cap", "acme=-1"}, "is not a count");
  expect_bad({"--admission-tenant-cap", "acme=1e3"}, "is not a count");
  expect_bad(
      {"--admission-tenant-cap", "acme=1", "--admission-tenant-cap", "acme=2"},
      "given twice");
  expect_bad({"--admission-queue-memory-mb", "2000000"}, "within [0, 1048576]");
  expect_bad({"--admission-queue-memory-mb", "-1"}, "within [0, 1048576]");
  expect_bad({"--admission-tenant-waiting", "-5"}, "within [0, 1099511627776]");
  expect_bad({"--admission-store-backlog", "99999999999999"},
             "within [0, 1099511627776]");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:1",
              "--admission-tenant-waiting", "10"},
             "admission options are for coordinators");
}

TEST_CASE("concurrency-limit: values and refusals", "[config]") {
  auto r = parse({"--concurrency-limit", "export=3/tenant",
                  "--concurrency-limit", "mail=1"});
  REQUIRE(r);
  CHECK(r->config.concurrency
        == concurrency_limits{{"export", {3, true}}, {"mail", {1, false}}});
  CHECK(parse({})->config.concurrency.empty());
  expect_bad({"--concurrency-limit", "export"}, "TYPE=N");
  expect_bad({"--concurrency-limit", "=3"}, "TYPE=N");
  expect_bad({"--concurrency-limit", "export=0"}, "within [1, 1000000]");
  expect_bad({"--concurrency-limit", "export=1000001"}, "within [1, 1000000]");
  expect_bad({"--concurrency-limit", "export=x"}, "within [1, 1000000]");
  expect_bad({"--concurrency-limit", "export=3/user"}, "is not a scope");
  expect_bad(
      {"--concurrency-limit", "export=1", "--concurrency-limit", "export=2"},
      "given twice");
  expect_bad({"--roles", "worker", "--coordinator", "127.0.0.1:1",
              "--concurrency-limit", "export=1"},
             "--concurrency-limit is for coordinators");
}

TEST_CASE("resources: worker pools, parsed and refused",
          "[config][resources]") {
  auto r = parse(
      {"--slots", "cpu=4,gpu=1", "--resources", "memory_gb=64,scratch_gb=500"});
  REQUIRE(r);
  CHECK(r->config.resources
        == std::map<std::string, uint32_t>{{"memory_gb", 64},
                                           {"scratch_gb", 500}});
  CHECK(parse({})->config.resources.empty());
  expect_bad({"--resources", "memory_gb"}, "expected name=amount");
  expect_bad({"--resources", "memory_gb=0"}, "within [1, 1000000]");
  expect_bad({"--resources", "memory_gb=1000001"}, "within [1, 1000000]");
  expect_bad({"--resources", "memory gb=1"}, "resource names are 1 to 64");
  expect_bad({"--resources", "a=1,a=2"}, "'a' is named twice");
  expect_bad({"--slots", "cpu=2,gpu=1", "--resources", "gpu=1"},
             "'gpu' is also a slot class");
  expect_bad({"--roles", "coordinator", "--cluster-port", "0", "--resources",
              "memory_gb=1"},
             "--resources is for worker nodes");
}

TEST_CASE("elastic-slots: values and refusals", "[config][elastic]") {
  std::vector<std::string> worker{"--roles",     "worker",  "--coordinator",
                                  "127.0.0.1:1", "--slots", "cpu=4"};
  auto with = [&](std::vector<std::string> more) {
    auto args = worker;
    args.insert(args.end(), more.begin(), more.end());
    return args;
  };
  auto r
      = parse(with({"--elastic-slots", "cpu=1", "--elastic-idle-ms", "500"}));
  REQUIRE(r);
  CHECK(r->config.elastic_slots == std::map<std::string, uint32_t>{{"cpu", 1}});
  CHECK(r->config.elastic_idle == std::chrono::milliseconds{500});
  expect_bad(with({"--elastic-slots", "gpu=1"}), "'gpu' is not a slot class");
  expect_bad(with({"--elastic-slots", "cpu=5"}), "more than its 4 slots");
  expect_bad(with({"--elastic-slots", "cpu=0"}), "within [1, 1000000]");
  expect_bad(with({"--elastic-idle-ms", "5"}), "within [100, 3600000]");
  expect_bad({"--elastic-slots", "cpu=1"},
             "--elastic-slots is for worker nodes that join a coordinator");
  expect_bad({"--roles", "coordinator", "--cluster-port", "0",
              "--elastic-idle-ms", "1000"},
             "--elastic-idle-ms needs --elastic-slots");
  expect_bad(with({"--elastic-idle-ms", "1000"}), "needs --elastic-slots");
}
