// droverctl as a subprocess against a real node (all roles, memory store):
// --json prints exactly what the HTTP API answers for the same object, exit
// codes a script can rely on, watch on a pipe and on a pseudo-terminal,
// bad arguments (issue 14).

#include "support/gateway_api.hpp"
#include "support/gateway_node.hpp"
#include "support/http_client.hpp"
#include "support/process.hpp"
#include "support/test_db.hpp"

#include "runtime/client_protocol.hpp"
#include "runtime/errors.hpp"

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/exit_reason.hpp>
#include <caf/io/middleman.hpp>
#include <caf/scoped_actor.hpp>
#include <caf/send.hpp>

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <fstream>
#include <poll.h>
#include <pty.h>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

using namespace drover::testing;
using namespace drover::testing::gateway_api;
using namespace std::chrono_literals;

namespace {

struct ctl_node {
  gateway_node node{{"--slots", "cpu=2"}};
  std::string admin = admin_port_of(node.ready_line());
  http_client http = node.client();

  std::pair<int, std::string> ctl(std::vector<std::string> args) {
    args.insert(args.end(), {"--port", admin});
    return droverctl(std::move(args));
  }

  /// A job that ran to its end: completed (sleep) or dead-lettered (exec
  /// of `false`, one attempt).
  std::string finished(bool succeed) {
    auto [rc, id]
        = succeed ? ctl({"submit", "sleep", "--input",
                         R"({"ms": 50, "steps": 2})", "--watch"})
                  : ctl({"submit", "exec", "--input", R"({"argv": ["false"]})",
                         "--max-attempts", "1", "--watch"});
    INFO(id);
    REQUIRE(rc == (succeed ? 0 : 1));
    return job_id_of(id);
  }
};

/// In a forked child: execs droverctl with `args` (never returns).
[[noreturn]] void exec_droverctl(std::vector<std::string> args) {
  args.insert(args.begin(), DROVER_CTL_BIN);
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  _exit(127);
}

/// stdout only: droverctl's --json answer (progress and errors go to
/// stderr).
std::string stdout_of(std::vector<std::string> args) {
  int out[2];
  REQUIRE(pipe(out) == 0);
  auto pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(out[1], STDOUT_FILENO);
    int null = open("/dev/null", O_WRONLY);
    dup2(null, STDERR_FILENO);
    exec_droverctl(std::move(args));
  }
  close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = read(out[0], buf, sizeof buf)) > 0)
    text.append(buf, static_cast<size_t>(n));
  close(out[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  REQUIRE(WIFEXITED(st));
  return text;
}

} // namespace

TEST_CASE("droverctl --json prints what the HTTP API answers for the same "
          "object",
          "[droverctl]") {
  ctl_node n;
  auto done = n.finished(true);
  auto dead = n.finished(false);
  auto same = [&](std::vector<std::string> args, const std::string& target) {
    args.insert(args.end(), {"--port", n.admin, "--json"});
    auto mine = stdout_of(args);
    auto res = n.http.get(target);
    INFO(target);
    REQUIRE(res.status == 200);
    CHECK(mine == res.body + '\n');
  };
  same({"get", done}, "/api/jobs/" + done);
  same({"get", dead}, "/api/jobs/" + dead);
  same({"events", done}, "/api/jobs/" + done + "/events");
  same({"events", dead}, "/api/jobs/" + dead + "/events");
  same({"result", done}, "/api/jobs/" + done + "/result");
  same({"list"}, "/api/jobs");
  same({"list", "--limit", "1"}, "/api/jobs?limit=1");
  same({"list", "--status", "completed"}, "/api/jobs?status=completed");
  same({"list", "--type", "exec"}, "/api/jobs?type=exec");
  same({"dlq", "list"}, "/api/dlq");
  // A page's cursor leads to the same next page both ways.
  auto first = n.http.get("/api/jobs?limit=1").body;
  auto cursor_at = first.find("\"next_cursor\":\"");
  REQUIRE(cursor_at != std::string::npos);
  auto cursor = first.substr(cursor_at + 15,
                             first.find('"', cursor_at + 15) - cursor_at - 15);
  same({"list", "--limit", "1", "--after", cursor},
       "/api/jobs?limit=1&cursor=" + cursor);
  // The submission's answer has the HTTP API's shape too.
  auto sub = stdout_of({"submit", "sleep", "--port", n.admin, "--input",
                        R"({"ms": 1})", "--json"});
  auto id = job_id_of(sub);
  CHECK(sub.find("\"check_status_url\":\"/api/jobs/" + id + "\"")
        != std::string::npos);
}

TEST_CASE("droverctl's exit codes: 0 ok, 1 failed or not found, 2 usage, "
          "3 unavailable",
          "[droverctl]") {
  ctl_node n;
  auto done = n.finished(true);
  auto dead = n.finished(false);
  CHECK(n.ctl({"get", done}).first == 0);
  CHECK(n.ctl({"get", "j0000000000000-0"}).first == 1); // not found
  CHECK(n.ctl({"watch", dead}).first == 1);             // failed
  CHECK(n.ctl({"result", dead}).first == 1);            // no result
  CHECK(n.ctl({"result", done}).first == 0);
  CHECK(n.ctl({"cancel", done}).first == 1);      // already completed
  CHECK(n.ctl({"dlq", "show", done}).first == 1); // not dead-lettered
  CHECK(n.ctl({"dlq", "show", dead}).first == 0);
  CHECK(n.ctl({"submit", "nope"}).first == 1);    // refused type
  auto [rc, out] = n.ctl({"dlq", "retry", dead}); // runs (and fails)
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("status:"));
  // Unreachable: a port nobody listens on (the node's HTTP port speaks
  // HTTP, not CAF; a closed port is unreachable).
  auto [urc, uout] = droverctl({"get", done, "--port", "1"});
  CHECK(urc == 3);
  CHECK_THAT(uout, Catch::Contains("cannot reach"));
  // Bad usage: one line naming the problem, then the usage; exit 2.
  for (auto args : std::vector<std::vector<std::string>>{
           {"frobnicate"},
           {"get"},
           {"get", "a", "b"},
           {"dlq", "shred", "x"},
           {"list", "--limit", "0"},
           {"get", done, "--all"},
           {"list", "--status", "sleepy"},
           {"submit", "sleep", "--priority", "urgent"},
           {"list", "extra"},
           {"get", done, "--no-such-option"}}) {
    auto [brc, bout] = n.ctl(args);
    INFO(args.front() << ": " << bout);
    CHECK(brc == 2);
    CHECK_THAT(bout, Catch::StartsWith("droverctl: "));
    CHECK_THAT(bout, Catch::Contains("usage: droverctl"));
  }
}

TEST_CASE("droverctl watch: plain lines on a pipe, a bar on a terminal, "
          "then the outcome",
          "[droverctl]") {
  ctl_node n;
  auto [rc, id_line]
      = n.ctl({"submit", "sleep", "--input", R"({"ms": 1500, "steps": 3})"});
  REQUIRE(rc == 0);
  auto id = job_id_of(id_line);

  SECTION("on a pipe") {
    auto [wrc, out] = n.ctl({"watch", id});
    INFO(out);
    CHECK(wrc == 0);
    CHECK_THAT(out, Catch::Contains("100%  "));
    CHECK_THAT(out, Catch::Contains(id + " completed (attempt 1)\n"));
    CHECK_THAT(out, Catch::Contains("\"slept_ms\":1500"));
    CHECK(out.find('\r') == std::string::npos); // no redrawing
  }

  SECTION("on a pseudo-terminal") {
    int master = -1;
    auto pid = forkpty(&master, nullptr, nullptr, nullptr);
    REQUIRE(pid >= 0);
    if (pid == 0)
      exec_droverctl({"watch", id, "--port", n.admin});
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{master, POLLIN, 0};
      if (poll(&p, 1, 30000) <= 0)
        break;
      auto got = read(master, buf, sizeof buf);
      if (got <= 0)
        break; // EIO once the child has gone
      out.append(buf, static_cast<size_t>(got));
    }
    close(master);
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    INFO(out);
    CHECK(WIFEXITED(st));
    CHECK(WEXITSTATUS(st) == 0);
    // Redrawn in place: carriage return, erase line, the bar.
    CHECK_THAT(out, Catch::Contains("\r\x1b[2K[##############################]"
                                    "  100%"));
    CHECK_THAT(out, Catch::Contains(id + " completed (attempt 1)"));
  }
}

TEST_CASE("the admin port checks API keys, tenants and scopes as the HTTP "
          "API does",
          "[droverctl][security]") {
  api_key acme{"acme_ops", "acme", "submit,read,admin"};
  api_key acme_ro{"acme_ro", "acme", "read"};
  api_key other{"other", "globex", "submit,read"};
  gateway_node node{key_options({&acme, &acme_ro, &other})};
  auto admin = admin_port_of(node.ready_line());
  // Keys are read from a file (or $DROVER_API_KEY), never from argv.
  auto file_of = [&](const api_key& k) {
    auto path = node.dir() + "/" + k.name + ".key";
    std::ofstream{path} << k.secret << '\n';
    return path;
  };
  auto as = [&](const std::string& key_file, std::vector<std::string> args) {
    args.insert(args.end(), {"--port", admin});
    if (!key_file.empty())
      args.insert(args.end(), {"--api-key-file", key_file});
    return droverctl(std::move(args));
  };
  auto acme_key = file_of(acme), ro_key = file_of(acme_ro),
       other_key = file_of(other);

  // No key, or one the node does not know: nothing is created.
  auto [nrc, nout] = as("", {"submit", "sleep", "--input", R"({"ms": 1})"});
  CHECK(nrc == 1);
  CHECK_THAT(nout, Catch::Contains("unauthenticated"));
  api_key stranger{"stranger", "acme", "submit"};
  auto [src, sout] = as(file_of(stranger), {"list"});
  CHECK(src == 1);
  CHECK_THAT(sout, Catch::Contains("unknown API key"));

  auto [rc, out]
      = as(acme_key, {"submit", "sleep", "--input", R"({"ms": 1})", "--watch"});
  INFO(out);
  REQUIRE(rc == 0);
  auto job = job_id_of(out);
  // The job belongs to the key's tenant; the HTTP API agrees.
  auto http = node.client(acme.secret).get("/api/jobs/" + job);
  REQUIRE(http.status == 200);
  CHECK_THAT(http.body, Catch::Contains(R"("tenant":"acme")"));

  // Another tenant's key sees no such job, and cannot act on it.
  auto [grc, gout] = as(other_key, {"get", job});
  CHECK(grc == 1);
  CHECK_THAT(gout, Catch::Contains("no job '" + job + "'"));
  CHECK(as(other_key, {"events", job}).first == 1);
  CHECK(as(other_key, {"cancel", job}).first == 1);
  auto [lrc, lout] = as(other_key, {"list", "--json"});
  CHECK(lrc == 0);
  CHECK(lout.find(job) == std::string::npos);
  // Naming another tenant is refused, not obeyed.
  auto [trc, tout] = as(other_key, {"submit", "sleep", "--tenant", "acme",
                                    "--input", R"({"ms": 1})"});
  CHECK(trc == 1);
  CHECK_THAT(tout, Catch::Contains("forbidden"));
  auto [t2rc, t2out] = as(other_key, {"list", "--tenant", "acme"});
  CHECK(t2rc == 1);
  CHECK_THAT(t2out, Catch::Contains("forbidden"));

  // Scopes: read only reads; exec needs its own scope; admin views need
  // admin.
  CHECK(as(ro_key, {"get", job}).first == 0);
  auto [wrc, wout] = as(ro_key, {"submit", "sleep", "--input", R"({"ms": 1})"});
  CHECK(wrc == 1);
  CHECK_THAT(wout, Catch::Contains("lacks the 'submit' scope"));
  auto [xrc, xout]
      = as(acme_key, {"submit", "exec", "--input", R"({"argv": ["true"]})"});
  CHECK(xrc == 1);
  CHECK_THAT(xout, Catch::Contains("'exec' scope"));
  CHECK(as(ro_key, {"queues"}).first == 1);
  CHECK(as(other_key, {"tree"}).first == 1);
  CHECK(as(acme_key, {"queues"}).first == 0);
  CHECK(as(acme_key, {"tree"}).first == 0);
  // What was refused created nothing: acme's one job is all there is.
  auto all = node.client(acme.secret).get("/api/jobs");
  CHECK(all.body.find("\"job_id\"") == all.body.rfind("\"job_id\""));
  auto theirs = node.client(other.secret).get("/api/jobs");
  CHECK(theirs.body.find("\"job_id\"") == std::string::npos);
}

TEST_CASE("the admin port's door: subscribers hear only from a relay, foreign "
          "subscribers are refused, and a killed door is put back",
          "[droverctl][security]") {
  ctl_node n;
  caf::actor_system_config cfg;
  drover::register_types(cfg);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  auto door = drover::connect_client_door(
      sys, "127.0.0.1", static_cast<uint16_t>(std::stoi(n.admin)), 10s);
  REQUIRE(door);
  caf::scoped_actor self{sys};
  auto ask_job = [&](auto... xs) {
    caf::expected<drover::job_record> r{caf::error{}};
    self->request(*door, 10s, drover::client_atom::value, std::string{}, xs...)
        .receive([&](drover::job_record& x) { r = std::move(x); },
                 [&](caf::error& e) { r = std::move(e); });
    return r;
  };
  drover::submit_request req;
  req.type = "sleep";
  req.input = R"({"ms": 1500, "steps": 10})";
  auto job = ask_job(drover::submit_atom::value, req);
  REQUIRE(job);
  // A subscriber that is not the asking client's own actor is refused:
  // here, the coordinator's own door.
  auto foreign = ask_job(drover::subscribe_atom::value, job->job_id,
                         caf::actor_cast<caf::actor>(*door));
  REQUIRE_FALSE(foreign);
  CHECK(drover::is(foreign.error(), drover::errc::forbidden));
  // Subscribed: progress arrives from a relay, which ignores what the
  // client sends it (here: asking for every tenant's finals).
  REQUIRE(
      ask_job(drover::subscribe_atom::value, job->job_id, caf::actor{self}));
  caf::strong_actor_ptr from;
  self->receive([&](drover::progress_atom, drover::progress_update&) {
    from = self->current_sender();
  });
  REQUIRE(from);
  self->send(caf::actor_cast<caf::actor>(from),
             drover::watch_finals_atom::value, caf::actor{self});
  req.input = R"({"ms": 1})";
  auto other = ask_job(drover::submit_atom::value, req);
  REQUIRE(other);
  bool own_final = false;
  bool others_final = false;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!own_final && std::chrono::steady_clock::now() < deadline)
    self->receive(
        [&](drover::final_atom, drover::job_record& r) {
          own_final |= r.job_id == job->job_id;
          others_final |= r.job_id == other->job_id;
        },
        [](drover::progress_atom, drover::progress_update&) {},
        [](drover::changed_atom, std::string&) {}, caf::after(1s) >> [] {});
  CHECK(own_final);
  CHECK_FALSE(others_final); // never subscribed to it: nothing came
  // Anyone who reaches the port can kill the door (CAF lets no actor
  // refuse exit_reason::kill): the node puts a new one on the same port.
  caf::anon_send_exit(*door, caf::exit_reason::kill);
  CHECK(poll_until(
      [&] {
        return n.ctl({"get", other->job_id}).first == 0;
      },
      20s));
  CHECK_THAT(n.node.log(), Catch::Contains("a new one serves the same port"));
}
