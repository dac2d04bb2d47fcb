#include "nodes/worker_metrics.hpp"

#include "gateway/metrics.hpp"
#include "runtime/errors.hpp"
#include "runtime/type_ids.hpp"

#include <caf/actor_system.hpp>
#include <caf/event_based_actor.hpp>

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace drover::node {

namespace {

/// Closes a descriptor on every way out.
struct fd_guard {
  int fd;
  ~fd_guard() {
    if (fd >= 0)
      ::close(fd);
  }
};

} // namespace

caf::expected<std::string> read_metrics_token(const node_config& cfg) {
  const auto& path = cfg.metrics_token_file;
  if (path.empty())
    return std::string{};
  auto bad = [&path](const std::string& why) {
    return make_error(errc::bad_config,
                      "metrics-token-file '" + path + "': " + why);
  };
  // O_NOFOLLOW: the file itself, not what a link points to.
  fd_guard f{::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC)};
  if (f.fd < 0)
    return bad(std::string{"cannot open it: "} + std::strerror(errno));
  struct stat info {};
  if (::fstat(f.fd, &info) != 0 || !S_ISREG(info.st_mode))
    return bad("not a regular file");
  if (info.st_uid != ::geteuid())
    return bad("must belong to the user the node runs as (uid "
               + std::to_string(::geteuid()) + ")");
  if ((info.st_mode & 077) != 0)
    return bad("must be readable by its owner only (chmod 600)");
  if (info.st_size > 4096)
    return bad("too large for a token");
  std::string text(static_cast<size_t>(info.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    auto n = ::read(f.fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return bad("cannot read it");
    got += static_cast<size_t>(n);
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r'))
    text.pop_back();
  if (text.size() < 16 || text.size() > 1024)
    return bad("the token must be 16 to 1024 characters");
  for (char c : text)
    if (c < 0x21 || c > 0x7e)
      return bad("the token must be visible ASCII characters (no spaces)");
  return text;
}

caf::expected<std::unique_ptr<http::metrics_endpoint>>
open_worker_metrics(caf::actor_system& sys, const node_config& cfg,
                    std::string token, std::shared_ptr<worker_shared> shared) {
  http::metrics_endpoint_config mc;
  mc.host = cfg.metrics_host;
  mc.port = cfg.metrics_port;
  mc.bearer_token = std::move(token);
  mc.allowed_hosts = cfg.metrics_allowed_hosts;
  // Runs on the endpoint's thread: a short-lived actor asks the agents (one
  // per coordinator with --share-partitions), so no thread waits for the
  // answers.
  auto source
      = [&sys, shared](std::function<void(caf::expected<std::string>)> done) {
          auto agents = shared->current_agents();
          if (agents.empty())
            return done(make_error(errc::unavailable, "no worker agent"));
          sys.spawn([agents, done](caf::event_based_actor* self) {
            struct gathering {
              std::vector<worker_figures> parts;
              bool failed = false;
            };
            auto g = std::make_shared<gathering>();
            for (const auto& agent : agents)
              self->request(agent, std::chrono::seconds{5}, stats_atom::value)
                  .then(
                      [g, n = agents.size(), done](worker_figures& f) {
                        g->parts.push_back(std::move(f));
                        if (!g->failed && g->parts.size() == n)
                          done(http::worker_metrics_text(
                              merge(g->parts), http::read_process_figures()));
                      },
                      [g, done](caf::error& err) {
                        if (g->failed)
                          return;
                        g->failed = true;
                        done(make_error(errc::unavailable,
                                        "the worker agent did not answer: "
                                            + describe(err)));
                      });
          });
        };
  return http::metrics_endpoint::start(std::move(mc), std::move(source));
}

} // namespace drover::node
