#include "actors/handover_board.hpp"

namespace drover {

void handover_board::post(entry e) {
  std::lock_guard<std::mutex> guard{mx_};
  auto key = std::make_pair(e.job_id, e.attempt);
  entries_[key] = std::move(e);
}

std::optional<handover_board::entry>
handover_board::withdraw(const std::string& job_id, uint32_t attempt,
                         const caf::actor_addr& lender) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || i->second.lender.address() != lender)
    return std::nullopt;
  auto e = std::move(i->second);
  entries_.erase(i);
  return e;
}

namespace {

/// `agent`, on `link`, may offer (and claim) `e`.
bool offerable(const handover_board::entry& e, const caf::actor_addr& agent,
               const caf::actor_addr& link) {
  return e.lender.address() != agent || (link && e.link != link);
}

} // namespace

bool handover_board::stop_offering(const std::string& job_id, uint32_t attempt,
                                   const caf::actor_addr& lender) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || i->second.lender.address() != lender)
    return false;
  i->second.offered = false;
  return true;
}

bool handover_board::as_hand_over(const std::string& job_id, uint32_t attempt,
                                  const caf::actor_addr& lender) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || i->second.lender.address() != lender)
    return false;
  i->second.move = false;
  i->second.offered = true;
  return true;
}

bool handover_board::finish(const std::string& job_id, uint32_t attempt,
                            const caf::actor_addr& lender, completion c) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || i->second.lender.address() != lender)
    return false;
  i->second.done = std::move(c);
  i->second.worker = nullptr;
  return true;
}

std::vector<running_attempt>
handover_board::offers(const caf::actor_addr& agent,
                       const caf::actor_addr& link) const {
  std::vector<running_attempt> out;
  std::lock_guard<std::mutex> guard{mx_};
  for (const auto& [key, e] : entries_)
    if (e.offered && offerable(e, agent, link))
      out.push_back(running_attempt{key.first, key.second, e.resource_class});
  return out;
}

std::optional<handover_board::entry>
handover_board::claim(const std::string& job_id, uint32_t attempt,
                      const caf::actor_addr& agent,
                      const caf::actor_addr& link) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || !offerable(i->second, agent, link))
    return std::nullopt;
  auto e = std::move(i->second);
  entries_.erase(i);
  return e;
}

size_t handover_board::size() const {
  std::lock_guard<std::mutex> guard{mx_};
  return entries_.size();
}

} // namespace drover
