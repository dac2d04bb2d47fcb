#include "runtime/concurrency.hpp"

namespace drover {

concurrency_slots::concurrency_slots(concurrency_limits limits)
    : limits_(std::move(limits)) {}

std::string concurrency_slots::key_of(const std::string& type,
                                      const std::string& tenant) const {
  auto i = limits_.find(type);
  if (i == limits_.end())
    return {};
  // A NUL byte cannot occur in a type or a tenant: the key is unambiguous.
  return i->second.per_tenant ? type + '\0' + tenant : type;
}

uint32_t concurrency_slots::limit_of(const std::string& key) const {
  auto type = key.substr(0, key.find('\0'));
  auto i = limits_.find(type);
  return i == limits_.end() ? 0 : i->second.limit;
}

bool concurrency_slots::take(const std::string& key) {
  if (key.empty())
    return true;
  auto& n = running_[key];
  if (n >= limit_of(key))
    return false;
  ++n;
  return true;
}

void concurrency_slots::force(const std::string& key) {
  if (!key.empty())
    ++running_[key];
}

void concurrency_slots::release(const std::string& key) {
  if (key.empty())
    return;
  auto i = running_.find(key);
  if (i == running_.end())
    return;
  if (i->second <= 1)
    running_.erase(i);
  else
    --i->second;
}

uint32_t concurrency_slots::running(const std::string& key) const {
  auto i = running_.find(key);
  return i == running_.end() ? 0 : i->second;
}

} // namespace drover
