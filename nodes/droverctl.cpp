// droverctl: the command line for a running Drover node: its admin port,
// which speaks the client protocol over CAF's network layer
// (runtime/client_protocol.hpp; messages carry Cap'n Proto bytes). A node
// with API keys needs one: $DROVER_API_KEY or --api-key-file (never on the
// command line, where other local users could read it).
//
//   droverctl submit TYPE [options] [--watch]   prints the job id
//   droverctl get ID | events ID | result ID
//   droverctl watch ID        progress (a bar on a terminal, plain lines
//                             otherwise) on stderr until the job ends, then
//                             its outcome on stdout
//   droverctl cancel ID [--reason TEXT]
//   droverctl list [--status S] [--type T] [--limit N] [--after ID]
//   droverctl dlq list | dlq show ID | dlq retry ID|--all | dlq purge ID|--all
//   droverctl tree | nodes | queues
//
// People get tables and "key: value" lines; --json prints exactly what the
// HTTP API answers for the same object (gateway/http_api.hpp). Older
// names still work: wait (watch), redrive (dlq retry), purge (dlq purge),
// stats (queues), dlq without a subcommand (dlq list).
//
// Exit codes a script can rely on: 0 success; 1 the job failed, was
// cancelled or not found, or the node refused the request; 2 bad usage
// (one line, then the usage); 3 the node is unavailable (unreachable,
// restarting, or no answer in time).

#include "gateway/http_api.hpp"
#include "nodes/droverctl_nodes.hpp"
#include "nodes/droverctl_view.hpp"
#include "runtime/atoms.hpp"
#include "runtime/client_protocol.hpp"
#include "runtime/errors.hpp"
#include "runtime/resources.hpp"
#include "runtime/tls.hpp"
#include "runtime/type_ids.hpp"
#include "runtime/view_merge.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/sec.hpp>

#include <boost/program_options.hpp>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <unistd.h>

namespace po = boost::program_options;
using namespace drover;

namespace {

enum exit_code : int { ok = 0, failed = 1, usage_error = 2, unavailable = 3 };

/// The exit code of an error from the node or from CAF.
int code_of(const caf::error& err) {
  if (is(err, errc::unavailable) || is(err, errc::overloaded)
      || is(err, errc::not_owner) // its partition moved: run it again
      || err.category() == caf::atom("system")
      || err.category()
             == caf::make_error(caf::exit_reason::unreachable).category())
    return unavailable; // unreachable, timed out, restarting
  return failed;
}

const char* usage_text
    = "usage: droverctl COMMAND [ARGS] [options]\n"
      "  submit TYPE [--input JSON ...] [--watch]   prints the job id\n"
      "  get ID | events ID | result ID | watch ID | cancel ID [--reason R]\n"
      "  list [--status S] [--type T] [--limit N] [--after ID]\n"
      "  dlq list | dlq show ID | dlq retry ID|--all | dlq purge ID|--all\n"
      "  tree | nodes | queues\n"
      "--json prints the HTTP API's JSON. Exit codes: 0 ok, 1 job failed or "
      "not found, 2 usage, 3 unavailable.\n";

int usage_fail(const std::string& what) {
  std::cerr << "droverctl: " << what << '\n' << usage_text;
  return usage_error;
}

struct session {
  caf::actor_system& sys;
  client_door_actor node;
  std::string key;
  std::chrono::milliseconds timeout;
  /// The exit code of the last failed request.
  int code = ok;

  /// One request; prints the error and returns none on failure.
  template <class T, class... Ts>
  caf::optional<T> ask(Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::optional<T> result;
    self->request(node, timeout, client_atom::value, key,
                  std::forward<Ts>(xs)...)
        .receive([&](T& x) { result = std::move(x); },
                 [&](caf::error& err) {
                   code = code_of(err);
                   std::cerr << "droverctl: " << describe(err) << '\n';
                 });
    return result;
  }
};

/// Follows a job until it is terminal: progress on stderr, the outcome on
/// stdout; 0 if it completed.
int watch(session& s, const std::string& id, std::chrono::milliseconds limit,
          bool json) {
  caf::scoped_actor self{s.sys};
  caf::error failure;
  // Subscribed, then the job as it is: one that ends meanwhile is seen.
  caf::optional<job_record> rec;
  self->request(s.node, s.timeout, client_atom::value, s.key,
                subscribe_atom::value, id, caf::actor{self})
      .receive([&](job_record& r) { rec = std::move(r); },
               [&](caf::error& err) { failure = err; });
  if (failure) {
    std::cerr << "droverctl: " << describe(failure) << '\n';
    return code_of(failure);
  }
  ctl::progress_view view{stderr, isatty(STDERR_FILENO) == 1};
  auto finish = [&](const job_record& r) {
    view.finish();
    std::cout << (json ? http::job_json(r) + '\n' : ctl::outcome_text(r));
    return r.status == job_status::completed ? ok : failed;
  };
  int rc = ok;
  bool done = false;
  if (is_terminal(rec->status)) {
    rc = finish(*rec);
    done = true;
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  self->monitor(s.node); // a node that goes away ends the watch at once
  while (!done) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      view.finish();
      std::cerr << "droverctl: gave up watching after " << limit.count()
                << " ms; the job goes on\n";
      rc = unavailable;
      break;
    }
    self->receive(
        [&](progress_atom, const progress_update& u) {
          if (json)
            std::cerr << http::progress_json(u) << '\n';
          else
            view.update(u);
        },
        [&](final_atom, const job_record& r) {
          rc = finish(r);
          done = true;
        },
        [](changed_atom, const std::string&) {}, // the history grew
        [&](caf::down_msg&) {
          view.finish();
          std::cerr << "droverctl: lost the node; the job goes on (watch it "
                       "again)\n";
          rc = unavailable;
          done = true;
        },
        caf::after(left) >> [] {});
  }
  self->send(s.node, client_atom::value, s.key, unsubscribe_atom::value, id,
             caf::actor{self});
  return rc;
}

/// The tree as GET /api/admin/tree shows it: running jobs with their record.
std::string tree_json(session& s, const tree_node& tree) {
  std::vector<std::string> ids;
  http::running_job_ids(tree, ids);
  std::map<std::string, job_record> jobs;
  for (const auto& id : ids) {
    caf::scoped_actor self{s.sys};
    self->request(s.node, s.timeout, client_atom::value, s.key, get_atom::value,
                  id)
        .receive([&](job_record& r) { jobs.emplace(id, std::move(r)); },
                 [&](caf::error& err) {
                   // Ended meanwhile (not found): shown without its
                   // record; anything else is worth a word on stderr.
                   if (!is(err, errc::not_found))
                     std::cerr << "droverctl: job " << id
                               << " shown without its record: " << describe(err)
                               << "\n";
                 });
  }
  return http::tree_json(tree, jobs);
}

} // namespace

int main(int argc, char** argv) {
  std::string command, arg, arg2;
  std::string host = "127.0.0.1";
  int port = 7411;
  int64_t timeout_ms = 5000;
  int64_t wait_ms = 3600000;
  std::string input, priority_name, run_at, key, tenant, status_name, after;
  std::string type_filter, key_file, rate_key, breaker_key, resources;
  std::string concurrency_key, nodes_list;
  tls_files tls;
  int64_t concurrency_limit = 1;
  std::string reason = "cancelled with droverctl";
  int64_t delay_ms = -1, max_attempts = -1, job_timeout_ms = -1;
  int64_t limit = 100;
  po::options_description opts{"options"};
  opts.add_options()("help,h", "print this help")(
      "command", po::value(&command), "what to do")(
      "arg", po::value(&arg), "job type or job id")("arg2", po::value(&arg2),
                                                    "dlq: the job id")(
      "host", po::value(&host)->default_value(host), "node API host")(
      "port", po::value(&port)->default_value(port), "node API port")(
      "nodes", po::value(&nodes_list),
      "coordinators sharing a database, host:port,...: a request about a "
      "job (or a keyed submit) goes to its partition's owner; dlq "
      "retry/purge --all to each (instead of --host and --port)")(
      "timeout-ms", po::value(&timeout_ms)->default_value(timeout_ms),
      "give up on one request after this long")(
      "tls-certificate", po::value(&tls.certificate),
      "a node with TLS: this client's certificate chain (PEM), signed by "
      "the cluster's CA")("tls-key", po::value(&tls.key),
                          "its unencrypted private key (PEM)")(
      "tls-ca", po::value(&tls.ca),
      "the cluster's CA (PEM): the node must present a certificate it "
      "signed")("api-key-file", po::value(&key_file),
                "read the API key from this file (default: $DROVER_API_KEY)")(
      "json", "print the HTTP API's JSON for the same object")(
      "input", po::value(&input), "submit: job input (JSON)")(
      "priority", po::value(&priority_name), "submit: high, normal or low")(
      "delay-ms", po::value(&delay_ms), "submit: run no earlier than this")(
      "run-at", po::value(&run_at), "submit: RFC 3339 time to run at")(
      "max-attempts", po::value(&max_attempts), "submit: attempts in total")(
      "job-timeout-ms", po::value(&job_timeout_ms),
      "submit: per-attempt timeout")("idempotency-key", po::value(&key),
                                     "submit: deduplication key")(
      "rate-limit-key", po::value(&rate_key),
      "submit: the rate limiter the job takes a token of (declared on the "
      "coordinator with --rate-limit); several, comma-separated, for a "
      "token of each")(
      "breaker-key", po::value(&breaker_key),
      "submit: the circuit breaker the job's attempts count against "
      "(declared with --circuit-breaker)")(
      "concurrency-key", po::value(&concurrency_key),
      "submit: the job's own concurrency key within its tenant, e.g. "
      "user:42")("concurrency-limit", po::value(&concurrency_limit),
                 "submit: attempts of --concurrency-key running at once "
                 "(default 1)")(
      "resources", po::value(&resources),
      "submit: the slot class, then amounts drawn from the worker node's "
      "pools, e.g. gpu=1,memory_gb=16")("tenant", po::value(&tenant),
                                        "submit/list: tenant")(
      "watch", "submit: follow the job until it ends")(
      "wait", "submit: the same as --watch")(
      "wait-ms", po::value(&wait_ms)->default_value(wait_ms),
      "watch: give up after this long (exit 3; the job goes on)")(
      "status", po::value(&status_name), "list: only this status")(
      "type", po::value(&type_filter), "list: only this job type")(
      "limit", po::value(&limit)->default_value(limit),
      "list/dlq: page size (1 to 1000)")(
      "after", po::value(&after), "list/dlq: the page after this job id")(
      "all", "dlq retry/purge: every job in the dead-letter queue")(
      "reason", po::value(&reason)->default_value(reason),
      "cancel: why (kept in the job's history)");
  po::positional_options_description pos;
  pos.add("command", 1).add("arg", 1).add("arg2", 1);
  po::variables_map vm;
  try {
    po::store(
        po::command_line_parser(argc, argv).options(opts).positional(pos).run(),
        vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return usage_fail(e.what());
  }
  if (vm.count("help")) {
    std::cout << usage_text << '\n' << opts << '\n';
    return ok;
  }
  if (command.empty())
    return usage_fail("no command");
  // Older names, and `dlq` with its subcommand folded into the command.
  if (command == "wait")
    command = "watch";
  else if (command == "stats")
    command = "queues";
  else if (command == "redrive" || command == "purge") {
    arg2 = arg;
    arg = command == "redrive" ? "retry" : "purge";
    command = "dlq";
  }
  if (command == "dlq") {
    auto sub = arg.empty() ? std::string{"list"} : arg;
    if (sub != "list" && sub != "show" && sub != "retry" && sub != "purge")
      return usage_fail("unknown dlq subcommand '" + sub
                        + "' (list, show, retry, purge)");
    command = "dlq " + sub;
    arg = arg2;
    arg2.clear();
  }
  static const std::vector<std::string> known{
      "submit", "get",       "events",   "result",   "watch",
      "cancel", "list",      "dlq list", "dlq show", "dlq retry",
      "tree",   "dlq purge", "nodes",    "queues"};
  if (std::find(known.begin(), known.end(), command) == known.end())
    return usage_fail("unknown command '" + command + "'");
  if (!arg2.empty())
    return usage_fail("unexpected argument '" + arg2 + "'");
  if (port < 1 || port > 65535)
    return usage_fail("--port must be within [1, 65535]");
  std::vector<coordinator_address> addresses{
      {host, static_cast<uint16_t>(port)}};
  if (!nodes_list.empty()) {
    if (!vm["host"].defaulted() || !vm["port"].defaulted())
      return usage_fail("--nodes replaces --host and --port");
    auto list = parse_address_list(nodes_list, "--nodes");
    if (!list)
      return usage_fail(describe(list.error()));
    addresses = std::move(*list);
  }
  if (timeout_ms < 1 || wait_ms < 1)
    return usage_fail("--timeout-ms and --wait-ms must be positive");
  if (limit < 1 || limit > 1000)
    return usage_fail("--limit must be within [1, 1000]");
  bool all = vm.count("all") > 0;
  bool takes_all = command == "dlq retry" || command == "dlq purge";
  if (all && !takes_all)
    return usage_fail("--all is for dlq retry and dlq purge");
  bool no_arg = command == "list" || command == "dlq list" || command == "tree"
                || command == "nodes" || command == "queues"
                || (takes_all && all);
  if (no_arg && !arg.empty())
    return usage_fail("'" + command + "' takes no argument ('" + arg + "')");
  if (!no_arg && arg.empty())
    return usage_fail("'" + command + "' needs "
                      + (command == "submit" ? "a job type" : "a job id"));
  bool json = vm.count("json") > 0;
  submit_request req;
  job_query query;
  if (command == "submit") {
    req.type = arg;
    req.input = input;
    req.tenant = tenant;
    req.idempotency_key = key;
    if (rate_key.find(',') == std::string::npos) {
      req.rate_limit_key = rate_key;
    } else { // several: a token of each
      for (size_t from = 0;;) {
        auto comma = rate_key.find(',', from);
        req.rate_limit_keys.push_back(rate_key.substr(from, comma - from));
        if (comma == std::string::npos)
          break;
        from = comma + 1;
      }
    }
    req.breaker_key = breaker_key;
    req.concurrency_key = concurrency_key;
    if (vm.count("concurrency-limit") > 0)
      req.concurrency_limit = concurrency_limit;
    if (!resources.empty()) {
      auto parsed = parse_requests(resources);
      if (!parsed)
        return usage_fail(describe(parsed.error()));
      req.resources = std::move(*parsed);
    }
    if (!priority_name.empty()) {
      priority p;
      if (!from_string(priority_name, p))
        return usage_fail("--priority must be high, normal or low");
      req.priority = static_cast<int32_t>(p);
    }
    if (!run_at.empty())
      req.run_at = run_at;
    if (delay_ms >= 0)
      req.delay_ms = delay_ms;
    if (max_attempts >= 0)
      req.max_attempts
          = static_cast<int32_t>(std::min<int64_t>(max_attempts, INT32_MAX));
    if (job_timeout_ms >= 0)
      req.timeout_ms = job_timeout_ms;
  }
  if (command == "list" || command == "dlq list") {
    // One more than asked tells whether there is a next page, as the HTTP
    // API does.
    query.limit = static_cast<uint32_t>(limit) + 1;
    query.after = after;
    query.tenant = tenant;
    query.type = type_filter;
    query.dead_lettered = command == "dlq list";
    if (!status_name.empty()) {
      job_status st;
      if (!from_string(status_name, st))
        return usage_fail("unknown status '" + status_name + "'");
      query.status = static_cast<int32_t>(st);
    }
  }
  std::string api_key;
  if (!key_file.empty()) {
    std::ifstream in{key_file};
    if (!in || !std::getline(in, api_key) || api_key.empty())
      return usage_fail("--api-key-file: cannot read a key from '" + key_file
                        + "'");
  } else if (const char* env = std::getenv("DROVER_API_KEY")) {
    api_key = env;
  }
  if (auto err = check_tls(tls, "--tls-"))
    return usage_fail(describe(err));
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.load<caf::io::middleman>();
  use_tls(tls, cfg);
  cfg.set("scheduler.max-threads", size_t{1});
  caf::actor_system sys{cfg};
  // Connecting counts against --timeout-ms too: a node that accepts and
  // says nothing (stopped) must not hold droverctl forever.
  std::chrono::milliseconds timeout{timeout_ms};
  client_door_actor node;
  ctl::door_set all_doors;
  if (addresses.size() == 1) {
    auto one = connect_client_door(sys, addresses[0].host, addresses[0].port,
                                   timeout, tls.enabled());
    if (!one) {
      std::cerr << "droverctl: " << describe(one.error()) << '\n';
      return is(one.error(), errc::forbidden) ? failed : unavailable;
    }
    node = *one;
    all_doors.doors.push_back(node);
    all_doors.names.push_back(addresses[0].text());
  } else {
    all_doors = ctl::connect_all(sys, addresses, timeout, tls.enabled());
    if (all_doors.doors.empty()) {
      std::cerr << "droverctl: no node answered (" << all_doors.failures
                << ")\n";
      return unavailable;
    }
    client_detail::route_target about;
    if (command == "submit") {
      about.key = req.idempotency_key;
      about.concurrency_key = req.concurrency_key;
      about.tenant = req.tenant;
    } else if (!no_arg) {
      about.job_id = arg;
    }
    node = ctl::pick_door(sys, all_doors, about, api_key, timeout);
  }
  session s{sys, node, api_key, timeout};
  auto show = [&](const job_record& r) {
    std::cout << (json ? http::job_json(r) + '\n' : ctl::job_text(r));
    return ok;
  };
  if (command == "tree" && addresses.size() > 1) {
    // One tree, as a sharing gateway shows it: each coordinator's under one
    // root, named by its address, and those that did not answer named.
    auto all = ctl::merged_tree(sys, all_doors, api_key, timeout);
    if (!all) {
      std::cerr << "droverctl: " << describe(all.error()) << '\n';
      return code_of(all.error());
    }
    auto& [root, unreached] = *all;
    if (json)
      std::cout << with_unreached(tree_json(s, root), unreached) << '\n';
    else
      std::cout << ctl::tree_text(root)
                << ctl::unreached_text(unreached, "trees");
    return ok;
  }
  if (command == "tree") {
    auto tree = s.ask<tree_node>(describe_atom::value);
    if (!tree)
      return s.code;
    std::cout << (json ? tree_json(s, *tree) + '\n' : ctl::tree_text(*tree));
    return ok;
  }
  if (command == "nodes") {
    // The node's JSON is the HTTP API's (GET /api/admin/nodes); with
    // several coordinators, all of theirs merged (each knows only the nodes
    // joined to it), naming those that did not answer.
    caf::optional<std::string> nodes;
    if (addresses.size() > 1) {
      auto merged = ctl::merged_nodes(sys, all_doors, api_key, timeout);
      if (!merged) {
        std::cerr << "droverctl: " << describe(merged.error()) << '\n';
        return code_of(merged.error());
      }
      nodes = std::move(*merged);
    } else {
      nodes = s.ask<std::string>(nodes_atom::value);
    }
    if (!nodes)
      return s.code;
    std::cout << (json ? *nodes + '\n' : ctl::nodes_text(*nodes));
    return ok;
  }
  if (command == "queues") {
    if (addresses.size() > 1) {
      // Every coordinator's figures added up (each counts its own
      // partitions' jobs), naming those that did not answer.
      auto all = ctl::merged_queues(sys, all_doors, api_key, timeout);
      if (!all) {
        std::cerr << "droverctl: " << describe(all.error()) << '\n';
        return code_of(all.error());
      }
      auto& [figures, unreached] = *all;
      if (json) {
        std::cout << with_unreached(http::queues_json(figures, {-1, -1, -1}),
                                    unreached)
                  << '\n';
      } else {
        std::cout << ctl::queues_text(figures);
        std::cout << ctl::unreached_text(unreached, "figures");
      }
      return ok;
    }
    auto st = s.ask<queue_stats>(stats_atom::value);
    if (!st)
      return s.code;
    std::cout << (json ? http::queues_json(*st, {-1, -1, -1}) + '\n'
                       : ctl::queues_text(*st));
    return ok;
  }
  if (command == "submit") {
    auto rec = s.ask<job_record>(submit_atom::value, req);
    if (!rec)
      return s.code;
    std::cout << (json ? http::submitted_json(*rec) : rec->job_id) << '\n';
    if (vm.count("watch") || vm.count("wait"))
      return watch(s, rec->job_id, std::chrono::milliseconds{wait_ms}, json);
    return ok;
  }
  if (command == "watch")
    return watch(s, arg, std::chrono::milliseconds{wait_ms}, json);
  if (command == "list" || command == "dlq list") {
    auto jobs = s.ask<std::vector<job_record>>(list_atom::value, query);
    if (!jobs)
      return s.code;
    bool more = jobs->size() > static_cast<size_t>(limit);
    if (more)
      jobs->resize(static_cast<size_t>(limit));
    std::cout << (json ? http::job_page_json(*jobs, more) + '\n'
                       : ctl::jobs_table(*jobs, more));
    return ok;
  }
  if (takes_all && all) {
    // Each coordinator acts on its own partitions' dead letters.
    if (addresses.size() > 1 && all_doors.doors.size() < addresses.size()) {
      std::cerr << "droverctl: not every node answered (" << all_doors.failures
                << "); nothing was done\n";
      return unavailable;
    }
    if (addresses.size() > 1) {
      // Each acts on its own partitions: together they must own them all.
      auto map = ctl::read_routes(sys, all_doors, api_key, timeout);
      if (!map.loaded() || map.unowned() > 0) {
        std::cerr << "droverctl: the nodes given own "
                  << (map.loaded() ? std::to_string(map.count() - map.unowned())
                                         + " of " + std::to_string(map.count())
                                   : std::string{"none of the"})
                  << " partitions (a node missing from --nodes, or a "
                     "takeover under way); nothing was done\n";
        return unavailable;
      }
    }
    uint32_t sum = 0;
    for (const auto& d : all_doors.doors) {
      s.node = d;
      auto n = command == "dlq retry"
                   ? s.ask<uint32_t>(redrive_atom::value, all_atom::value)
                   : s.ask<uint32_t>(purge_atom::value, all_atom::value);
      if (!n) {
        if (sum > 0)
          std::cerr << "droverctl: " << sum << " jobs "
                    << (command == "dlq retry" ? "retried" : "purged")
                    << " on the nodes before that one\n";
        return s.code;
      }
      sum += *n;
    }
    auto n = &sum;
    auto what = command == "dlq retry" ? "retried" : "purged";
    if (json)
      std::cout << "{\"" << what << "\":" << *n << "}\n";
    else
      std::cout << *n << " jobs " << what << '\n';
    return ok;
  }
  // These answer with the job as it is afterwards, as over HTTP.
  if (command == "cancel" || command == "dlq retry" || command == "dlq purge") {
    auto after = command == "cancel"
                     ? s.ask<job_record>(cancel_atom::value, arg, reason)
                 : command == "dlq retry"
                     ? s.ask<job_record>(redrive_atom::value, arg)
                     : s.ask<job_record>(purge_atom::value, arg);
    return after ? show(*after) : s.code;
  }
  if (command == "events") {
    auto evs = s.ask<std::vector<job_event>>(events_atom::value, arg);
    if (!evs)
      return s.code;
    std::cout << (json ? http::events_json(arg, *evs) + '\n'
                       : ctl::events_text(*evs));
    return ok;
  }
  auto rec = s.ask<job_record>(get_atom::value, arg);
  if (!rec)
    return s.code;
  if (command == "result") {
    if (rec->status != job_status::completed) {
      std::cerr << "droverctl: job '" << arg << "' is "
                << to_string(rec->status)
                << "; its result exists once it is completed\n";
      return failed;
    }
    std::cout << (rec->result.empty() ? "null" : rec->result) << '\n';
    return ok;
  }
  if (command == "dlq show" && !rec->dead_lettered) {
    std::cerr << "droverctl: job '" << arg
              << "' is not in the dead-letter queue\n";
    return failed;
  }
  return show(*rec); // get, dlq show
}
