// droverctl: the command line for a running Drover node (its API actor,
// reached over CAF's network layer; messages carry Cap'n Proto bytes).
//
//   droverctl tree                         live supervision tree
//   droverctl submit TYPE [options]        submit a job (prints the record)
//   droverctl get ID | events ID           a job's record / its history
//   droverctl wait ID                      progress with ETA until terminal
//   droverctl cancel ID [--reason TEXT]    recorded in the job's history
//   droverctl list [--status S] [--limit N] [--after ID]
//   droverctl dlq [--limit N]              the dead-letter queue
//   droverctl redrive ID|--all  /  purge ID|--all
//   droverctl stats                        queue depth, age, throughput
//
// Exit codes: 0 success, 1 the node refused or could not be reached (or a
// waited-for job did not complete), 2 bad usage.

#include "runtime/atoms.hpp"
#include "runtime/codec.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>

#include <boost/program_options.hpp>

#include <cmath>
#include <iostream>

namespace po = boost::program_options;
using namespace drover;

namespace {

void print_tree(const tree_node& n, int depth) {
  std::cout << std::string(static_cast<size_t>(depth) * 2, ' ') << n.name
            << " [" << to_string(n.kind);
  if (n.kind == child_kind::supervisor)
    std::cout << ' ' << to_string(n.strat);
  std::cout << "] " << to_string(n.state) << " restarts=" << n.restarts
            << " uptime=" << n.uptime_ms << "ms";
  if (depth > 0)
    std::cout << " restart=" << to_string(n.restart);
  if (!n.last_exit.empty())
    std::cout << " last_exit=\"" << n.last_exit << '"';
  std::cout << '\n';
  for (const auto& c : n.children)
    print_tree(c, depth + 1);
}

struct session {
  caf::actor_system& sys;
  caf::actor node;
  std::chrono::milliseconds timeout;

  /// One request; prints the error and returns none on failure.
  template <class T, class... Ts>
  caf::optional<T> ask(Ts&&... xs) {
    caf::scoped_actor self{sys};
    caf::optional<T> result;
    self->request(node, timeout, std::forward<Ts>(xs)...)
        .receive([&](T& x) { result = std::move(x); },
                 [&](caf::error& err) {
                   std::cerr << "droverctl: " << describe(err) << '\n';
                 });
    return result;
  }
};

int print_records(const std::vector<job_record>& jobs) {
  std::cout << "[";
  for (size_t i = 0; i < jobs.size(); ++i)
    std::cout << (i > 0 ? ",\n " : "") << to_json(jobs[i]);
  std::cout << "]\n";
  return 0;
}

/// Follows a job's progress until it is terminal; 0 if it completed.
int wait_for(session& s, const std::string& id,
             std::chrono::milliseconds limit) {
  caf::scoped_actor self{s.sys};
  caf::error failure;
  self->request(s.node, s.timeout, subscribe_atom::value, id, caf::actor{self})
      .receive([](ok_atom) {}, [&](caf::error& err) { failure = err; });
  if (failure) {
    std::cerr << "droverctl: " << describe(failure) << '\n';
    return 1;
  }
  auto rec = s.ask<job_record>(get_atom::value, id);
  if (!rec)
    return 1;
  auto finish = [](const job_record& r) {
    std::cout << to_json(r) << '\n';
    return r.status == job_status::completed ? 0 : 1;
  };
  if (is_terminal(rec->status))
    return finish(*rec);
  int rc = 1;
  bool done = false;
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::cerr << "droverctl: gave up waiting after " << limit.count()
                << " ms\n";
      break;
    }
    self->receive(
        [&](progress_atom, const progress_update& u) {
          std::cerr << "attempt " << u.attempt << ": " << std::lround(u.percent)
                    << "%";
          if (!u.stage.empty())
            std::cerr << " [" << u.stage << "]";
          if (u.eta_ms >= 0)
            std::cerr << " eta " << (u.eta_ms + 500) / 1000 << "s";
          if (!u.message.empty())
            std::cerr << " " << u.message;
          std::cerr << '\n';
        },
        [&](final_atom, const job_record& r) {
          rc = finish(r);
          done = true;
        },
        caf::after(left) >> [] {});
  }
  self->send(s.node, unsubscribe_atom::value, id, caf::actor{self});
  return rc;
}

int usage(const po::options_description& opts) {
  std::cout << "usage: droverctl COMMAND [ARG] [options]\n"
               "commands: tree, submit TYPE, get ID, events ID, wait ID,\n"
               "          cancel ID, list, dlq, redrive ID|--all,\n"
               "          purge ID|--all, stats, nodes\n\n"
            << opts << '\n';
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  std::string command;
  std::string arg;
  std::string host = "127.0.0.1";
  int port = 7411;
  int64_t timeout_ms = 5000;
  int64_t wait_ms = 3600000;
  std::string input, priority_name, run_at, key, tenant, status_name, after;
  std::string reason = "cancelled with droverctl";
  int64_t delay_ms = -1, max_attempts = -1, job_timeout_ms = -1;
  uint32_t limit = 100;
  po::options_description opts{"options"};
  opts.add_options()("help,h", "print this help")(
      "command", po::value(&command), "what to do")("arg", po::value(&arg),
                                                    "job type or job id")(
      "host", po::value(&host)->default_value(host), "node API host")(
      "port", po::value(&port)->default_value(port), "node API port")(
      "timeout-ms", po::value(&timeout_ms)->default_value(timeout_ms),
      "give up on one request after this long")(
      "json", "tree: print JSON instead of an indented tree")(
      "input", po::value(&input), "submit: job input (JSON)")(
      "priority", po::value(&priority_name), "submit: high, normal or low")(
      "delay-ms", po::value(&delay_ms), "submit: run no earlier than this")(
      "run-at", po::value(&run_at), "submit: RFC 3339 time to run at")(
      "max-attempts", po::value(&max_attempts), "submit: attempts in total")(
      "job-timeout-ms", po::value(&job_timeout_ms),
      "submit: per-attempt timeout")("idempotency-key", po::value(&key),
                                     "submit: deduplication key")(
      "tenant", po::value(&tenant),
      "submit/list: tenant")("wait", "submit: follow the job until it ends")(
      "wait-ms", po::value(&wait_ms)->default_value(wait_ms),
      "wait: give up after this long")("status", po::value(&status_name),
                                       "list: only this status")(
      "limit", po::value(&limit)->default_value(limit), "list/dlq: page size")(
      "after", po::value(&after), "list/dlq: page after this job id")(
      "all", "redrive/purge: every job in the dead-letter queue")(
      "reason", po::value(&reason)->default_value(reason),
      "cancel: why (kept in the job's history)");
  po::positional_options_description pos;
  pos.add("command", 1).add("arg", 1);
  po::variables_map vm;
  try {
    po::store(
        po::command_line_parser(argc, argv).options(opts).positional(pos).run(),
        vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "droverctl: " << e.what() << '\n';
    return 2;
  }
  if (vm.count("help") || command.empty())
    return usage(opts);
  static const std::vector<std::string> known{
      "tree", "submit", "get",     "events", "wait",  "cancel",
      "list", "dlq",    "redrive", "purge",  "stats", "nodes"};
  if (std::find(known.begin(), known.end(), command) == known.end()) {
    std::cerr << "droverctl: unknown command '" << command
              << "' (see droverctl --help)\n";
    return 2;
  }
  if (port < 1 || port > 65535 || timeout_ms < 1 || wait_ms < 1) {
    std::cerr << "droverctl: --port must be within [1, 65535], timeouts "
                 "positive\n";
    return 2;
  }
  bool needs_arg
      = command == "submit" || command == "get" || command == "events"
        || command == "wait" || command == "cancel"
        || ((command == "redrive" || command == "purge") && !vm.count("all"));
  if (needs_arg && arg.empty()) {
    std::cerr << "droverctl: '" << command << "' needs "
              << (command == "submit" ? "a job type" : "a job id") << '\n';
    return 2;
  }
  submit_request req;
  job_query query;
  if (command == "submit") {
    req.type = arg;
    req.input = input;
    req.tenant = tenant;
    req.idempotency_key = key;
    if (!priority_name.empty()) {
      priority p;
      if (!from_string(priority_name, p)) {
        std::cerr << "droverctl: --priority must be high, normal or low\n";
        return 2;
      }
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
  if (command == "list" || command == "dlq") {
    query.limit = limit;
    query.after = after;
    query.tenant = tenant;
    query.dead_lettered = command == "dlq";
    if (!status_name.empty()) {
      job_status st;
      if (!from_string(status_name, st)) {
        std::cerr << "droverctl: unknown status '" << status_name << "'\n";
        return 2;
      }
      query.status = static_cast<int32_t>(st);
    }
  }
  caf::actor_system_config cfg;
  register_types(cfg);
  cfg.load<caf::io::middleman>();
  cfg.set("scheduler.max-threads", size_t{1});
  caf::actor_system sys{cfg};
  auto node = sys.middleman().remote_actor(host, static_cast<uint16_t>(port));
  if (!node) {
    std::cerr << "droverctl: cannot reach " << host << ':' << port << ": "
              << sys.render(node.error()) << '\n';
    return 1;
  }
  session s{sys, *node, std::chrono::milliseconds{timeout_ms}};
  if (command == "tree") {
    auto tree = s.ask<tree_node>(describe_atom::value);
    if (!tree)
      return 1;
    if (vm.count("json"))
      std::cout << to_json(*tree) << '\n';
    else
      print_tree(*tree, 0);
    return 0;
  }
  if (command == "nodes") {
    auto nodes = s.ask<std::string>(nodes_atom::value);
    if (!nodes)
      return 1;
    std::cout << *nodes << '\n';
    return 0;
  }
  if (command == "submit") {
    auto rec = s.ask<job_record>(submit_atom::value, req);
    if (!rec)
      return 1;
    std::cout << to_json(*rec) << '\n';
    if (vm.count("wait"))
      return wait_for(s, rec->job_id, std::chrono::milliseconds{wait_ms});
    return 0;
  }
  if (command == "get") {
    auto rec = s.ask<job_record>(get_atom::value, arg);
    if (!rec)
      return 1;
    std::cout << to_json(*rec) << '\n';
    return 0;
  }
  if (command == "events") {
    auto evs = s.ask<std::vector<job_event>>(events_atom::value, arg);
    if (!evs)
      return 1;
    for (const auto& ev : *evs)
      std::cout << to_json(ev) << '\n';
    return 0;
  }
  if (command == "wait")
    return wait_for(s, arg, std::chrono::milliseconds{wait_ms});
  if (command == "cancel")
    return s.ask<ok_atom>(cancel_atom::value, arg, reason) ? 0 : 1;
  if (command == "list" || command == "dlq") {
    auto jobs = s.ask<std::vector<job_record>>(list_atom::value, query);
    return jobs ? print_records(*jobs) : 1;
  }
  if (command == "redrive" || command == "purge") {
    if (vm.count("all")) {
      auto n = command == "redrive"
                   ? s.ask<uint32_t>(redrive_atom::value, all_atom::value)
                   : s.ask<uint32_t>(purge_atom::value, all_atom::value);
      if (!n)
        return 1;
      std::cout << *n << '\n';
      return 0;
    }
    auto ok = command == "redrive" ? s.ask<ok_atom>(redrive_atom::value, arg)
                                   : s.ask<ok_atom>(purge_atom::value, arg);
    return ok ? 0 : 1;
  }
  // stats
  auto st = s.ask<queue_stats>(stats_atom::value);
  if (!st)
    return 1;
  static const char* names[] = {"high", "normal", "low"};
  std::cout << "priority  depth  oldest_ms  dispatched\n";
  for (size_t i = 0; i < 3; ++i)
    std::cout << names[i] << "  " << st->depth[i] << "  "
              << st->oldest_age_ms[i] << "  " << st->dispatched[i] << '\n';
  std::cout << "delayed=" << st->delayed << " running=" << st->running
            << " idle_workers=" << st->idle_workers
            << " completed=" << st->completed << " failed=" << st->failed
            << " cancelled=" << st->cancelled << " retried=" << st->retried
            << '\n';
  return 0;
}
