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

bool split_type_key(const std::string& key, std::string& type,
                    std::string& tenant) {
  auto nul = key.find('\0');
  if (key.empty() || nul == 0
      || (nul != std::string::npos
          && key.find('\0', nul + 1) != std::string::npos))
    return false;
  type = key.substr(0, nul);
  tenant = nul == std::string::npos ? std::string{} : key.substr(nul + 1);
  return true;
}

own_key_ref own_key_of(const std::string& tenant, const std::string& key,
                       uint32_t limit) {
  if (key.empty())
    return nullptr;
  // Type keys start with a type (never empty, never a NUL): a leading NUL
  // keeps own keys apart from them, the second one the tenant from the key.
  std::string k;
  k.reserve(tenant.size() + key.size() + 2);
  k += '\0';
  k += tenant;
  k += '\0';
  k += key;
  return std::make_shared<const own_concurrency_key>(
      own_concurrency_key{std::move(k), limit});
}

slot_keys concurrency_slots::keys_of(const std::string& type,
                                     const std::string& tenant,
                                     const own_key_ref& own) const {
  slot_keys out;
  if (own)
    out.add(own->key, own->limit);
  out.add(key_of(type, tenant), 0);
  return out;
}

uint32_t concurrency_slots::limit_of(const std::string& key) const {
  if (!key.empty() && key[0] == '\0')
    return 0; // an own key: its jobs carry the limit
  auto type = key.substr(0, key.find('\0'));
  auto i = limits_.find(type);
  return i == limits_.end() ? 0 : i->second.limit;
}

bool concurrency_slots::take(const std::string& key, uint32_t limit) {
  if (key.empty())
    return true;
  auto& n = running_[key];
  if (n >= (limit != 0 ? limit : limit_of(key))) {
    if (n == 0)
      running_.erase(key); // an unknown key: no entry left behind
    return false;
  }
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
