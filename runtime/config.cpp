#include "runtime/config.hpp"

#include "runtime/errors.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/atom.hpp>
#include <caf/timespan.hpp>

#include <boost/program_options.hpp>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <ostream>
#include <unistd.h>

namespace po = boost::program_options;

namespace drover {

namespace {

std::string default_node_id() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0)
    return "node";
  return host;
}

const std::vector<std::string> known_roles{"all", "coordinator", "worker",
                                           "gateway"};

} // namespace

caf::error validate(const node_config& cfg) {
  auto bad = [](std::string what) {
    return make_error(errc::bad_config, std::move(what));
  };
  if (cfg.node_id.empty() || cfg.node_id.size() > 128)
    return bad("node-id must be 1 to 128 characters");
  for (auto c : cfg.node_id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'
          || c == '.'))
      return bad("node-id may only contain letters, digits, '-', '_' and '.'");
  if (cfg.roles.empty())
    return bad("roles must name at least one role");
  for (const auto& r : cfg.roles)
    if (std::find(known_roles.begin(), known_roles.end(), r)
        == known_roles.end())
      return bad("unknown role '" + r
                 + "' (known: all, coordinator, worker, gateway)");
  if (cfg.admin_host.empty())
    return bad("admin-host must not be empty");
  if (cfg.scheduler_threads < 1 || cfg.scheduler_threads > 256)
    return bad("scheduler-threads must be within [1, 256]");
  if (cfg.heartbeat_interval.count() < 10)
    return bad("heartbeat-interval-ms must be at least 10");
  if (cfg.connection_timeout <= cfg.heartbeat_interval)
    return bad("connection-timeout-ms must exceed heartbeat-interval-ms");
  if (cfg.shutdown_timeout.count() < 1)
    return bad("shutdown-timeout-ms must be positive");
  if (cfg.state_dir.empty())
    return bad("state-dir must not be empty");
  if (cfg.store != "memory" && cfg.store != "postgres")
    return bad("store must be 'postgres' or 'memory', got '" + cfg.store
               + "'");
  if (cfg.store == "postgres" && cfg.pg_url.empty())
    return bad("--store postgres needs --pg-url");
  if (cfg.retention_days > 36500)
    return bad("retention-days must be at most 36500");
  return caf::none;
}

caf::expected<parse_outcome> parse_node_config(int argc,
                                               const char* const* argv,
                                               std::ostream& out) {
  parse_outcome result;
  auto& cfg = result.config;
  std::string config_file;
  std::string roles = "all";
  int64_t admin_port = cfg.admin_port;
  int64_t threads = cfg.scheduler_threads;
  int64_t heartbeat = cfg.heartbeat_interval.count();
  int64_t conn_timeout = cfg.connection_timeout.count();
  int64_t shutdown = cfg.shutdown_timeout.count();
  std::string slots = "cpu=2";
  int64_t aging = cfg.aging_interval.count();
  int64_t max_input = static_cast<int64_t>(cfg.max_input_bytes);
  int64_t kill_grace = cfg.exec_kill_grace.count();
  po::options_description general{"drover-node options"};
  general.add_options()
    ("help,h", "print this help and exit")
    ("config,c", po::value(&config_file), "INI file with the options below")
    ("node-id", po::value(&cfg.node_id)->default_value(default_node_id()),
     "stable name of this node")
    ("roles", po::value(&roles)->default_value(roles),
     "comma-separated roles: all, coordinator, worker, gateway")
    ("admin-host", po::value(&cfg.admin_host)->default_value(cfg.admin_host),
     "interface of the admin endpoint")
    ("admin-port", po::value(&admin_port)->default_value(admin_port),
     "port of the admin endpoint (0 = pick a free one)")
    ("scheduler-threads", po::value(&threads)->default_value(threads),
     "CAF scheduler threads")
    ("heartbeat-interval-ms", po::value(&heartbeat)->default_value(heartbeat),
     "CAF middleman heartbeat interval")
    ("connection-timeout-ms",
     po::value(&conn_timeout)->default_value(conn_timeout),
     "drop a peer silent for this long")
    ("shutdown-timeout-ms", po::value(&shutdown)->default_value(shutdown),
     "deadline for an orderly shutdown")
    ("state-dir", po::value(&cfg.state_dir)->default_value(cfg.state_dir),
     "folder for local state")
    ("slots", po::value(&slots)->default_value(slots),
     "worker slots per resource class, e.g. cpu=4,gpu=1")
    ("aging-interval-ms", po::value(&aging)->default_value(aging),
     "priority aging: a low job waits at most 2x this behind newer high jobs")
    ("max-input-bytes", po::value(&max_input)->default_value(max_input),
     "largest accepted job input")
    ("exec-kill-grace-ms", po::value(&kill_grace)->default_value(kill_grace),
     "exec jobs: SIGTERM to SIGKILL on cancel or timeout")
    ("store", po::value(&cfg.store)->default_value(cfg.store),
     "job store: postgres (durable) or memory (nothing survives a restart)")
    ("pg-url", po::value(&cfg.pg_url),
     "PostgreSQL connection string for --store postgres")
    ("retention-days", po::value(&cfg.retention_days),
     "postgres: purge finished jobs (and their events) older than this; "
     "0 keeps them forever; live jobs and the DLQ are never purged");
  try {
    po::variables_map vm;
    // Command line first: Boost keeps the first value stored.
    po::store(po::parse_command_line(argc, argv, general), vm);
    if (vm.count("help")) {
      out << general << '\n';
      result.exit_now = true;
      return result;
    }
    if (vm.count("config")) {
      auto file = vm["config"].as<std::string>();
      std::ifstream in{file};
      if (!in)
        return make_error(errc::bad_config,
                          "cannot read config file '" + file + "'");
      po::store(po::parse_config_file(in, general), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    return make_error(errc::bad_config, e.what());
  }
  auto in_range = [](int64_t v, int64_t lo, int64_t hi) {
    return v >= lo && v <= hi;
  };
  if (!in_range(admin_port, 0, 65535))
    return make_error(errc::bad_config, "admin-port must be within [0, 65535]");
  if (!in_range(threads, 1, 256))
    return make_error(errc::bad_config,
                      "scheduler-threads must be within [1, 256]");
  if (!in_range(heartbeat, 0, 3600000) || !in_range(conn_timeout, 0, 3600000)
      || !in_range(shutdown, 0, 3600000))
    return make_error(errc::bad_config,
                      "time settings must be within [0, 3600000] ms");
  if (!in_range(aging, 1, 86400000))
    return make_error(errc::bad_config,
                      "aging-interval-ms must be within [1, 86400000]");
  if (!in_range(max_input, 1, 256LL * 1024 * 1024))
    return make_error(errc::bad_config,
                      "max-input-bytes must be within [1, 268435456]");
  if (!in_range(kill_grace, 0, 86400000))
    return make_error(errc::bad_config,
                      "exec-kill-grace-ms must be within [0, 86400000]");
  auto parsed_slots = parse_slots(slots);
  if (!parsed_slots)
    return std::move(parsed_slots.error());
  cfg.slots = std::move(*parsed_slots);
  cfg.aging_interval = std::chrono::milliseconds{aging};
  cfg.max_input_bytes = static_cast<size_t>(max_input);
  cfg.exec_kill_grace = std::chrono::milliseconds{kill_grace};
  cfg.admin_port = static_cast<uint16_t>(admin_port);
  cfg.scheduler_threads = static_cast<uint32_t>(threads);
  cfg.heartbeat_interval = std::chrono::milliseconds{heartbeat};
  cfg.connection_timeout = std::chrono::milliseconds{conn_timeout};
  cfg.shutdown_timeout = std::chrono::milliseconds{shutdown};
  cfg.roles.clear();
  std::string::size_type pos = 0;
  while (pos <= roles.size()) {
    auto comma = roles.find(',', pos);
    auto item = roles.substr(pos, comma == std::string::npos ? std::string::npos
                                                             : comma - pos);
    if (!item.empty())
      cfg.roles.push_back(item);
    if (comma == std::string::npos)
      break;
    pos = comma + 1;
  }
  if (auto err = validate(cfg))
    return err;
  return result;
}

caf::expected<std::map<std::string, uint32_t>>
parse_slots(const std::string& text) {
  std::map<std::string, uint32_t> result;
  std::string::size_type pos = 0;
  while (pos < text.size()) {
    auto comma = text.find(',', pos);
    auto item = text.substr(pos, comma == std::string::npos ? std::string::npos
                                                            : comma - pos);
    pos = comma == std::string::npos ? text.size() : comma + 1;
    if (item.empty())
      continue;
    auto eq = item.find('=');
    auto bad = [&item](const std::string& why) {
      return make_error(errc::bad_config,
                        "slots entry '" + item + "': " + why);
    };
    if (eq == std::string::npos || eq == 0)
      return bad("expected class=count");
    auto name = item.substr(0, eq);
    auto count = item.substr(eq + 1);
    if (count.empty() || count.size() > 4
        || count.find_first_not_of("0123456789") != std::string::npos)
      return bad("count must be a number within [1, 1024]");
    auto n = std::stoul(count);
    if (n < 1 || n > 1024)
      return bad("count must be a number within [1, 1024]");
    for (auto c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-'
            || c == '_'))
        return bad("class names may only contain letters, digits, - and _");
    if (!result.emplace(name, static_cast<uint32_t>(n)).second)
      return bad("class listed twice");
  }
  if (result.empty())
    return make_error(errc::bad_config, "slots must name at least one class");
  return result;
}

void apply(const node_config& cfg, caf::actor_system_config& caf_cfg) {
  caf_cfg.set("scheduler.max-threads",
              static_cast<size_t>(cfg.scheduler_threads));
  caf_cfg.set("middleman.heartbeat-interval",
              caf::timespan{cfg.heartbeat_interval});
  caf_cfg.set("middleman.connection-timeout",
              caf::timespan{cfg.connection_timeout});
}

} // namespace drover
