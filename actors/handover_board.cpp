#include "actors/handover_board.hpp"

namespace drover {

void handover_board::post(entry e) {
  std::lock_guard<std::mutex> guard{mx_};
  auto key = std::make_pair(e.job_id, e.attempt);
  entries_[key] = std::move(e);
  ++posts_;
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

bool handover_board::change_lent(const std::string& job_id, uint32_t attempt,
                                 const caf::actor_addr& lender,
                                 const std::function<void(entry&)>& change) {
  std::lock_guard<std::mutex> guard{mx_};
  auto i = entries_.find({job_id, attempt});
  if (i == entries_.end() || i->second.lender.address() != lender)
    return false;
  change(i->second);
  return true;
}

bool handover_board::stop_offering(const std::string& job_id, uint32_t attempt,
                                   const caf::actor_addr& lender) {
  return change_lent(job_id, attempt, lender,
                     [](entry& e) { e.offered = false; });
}

bool handover_board::as_hand_over(const std::string& job_id, uint32_t attempt,
                                  const caf::actor_addr& lender) {
  return change_lent(job_id, attempt, lender, [](entry& e) {
    e.move = false;
    e.offered = true;
  });
}

bool handover_board::finish(const std::string& job_id, uint32_t attempt,
                            const caf::actor_addr& lender, completion c) {
  return change_lent(job_id, attempt, lender, [&c](entry& e) {
    e.done = std::move(c);
    e.worker = nullptr;
  });
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

uint64_t handover_board::posts() const {
  std::lock_guard<std::mutex> guard{mx_};
  return posts_;
}

size_t handover_board::size() const {
  std::lock_guard<std::mutex> guard{mx_};
  return entries_.size();
}

} // namespace drover
