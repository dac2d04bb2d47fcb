#include "runtime/resources.hpp"

#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"
#include "runtime/model.hpp"

#include <algorithm>

namespace drover {

namespace {

caf::error bad(const std::string& what, const std::string& why,
               errc code = errc::invalid_request) {
  return make_error(code, what + ": " + why);
}

/// Sorts `amounts` by name and refuses a name twice.
caf::error sort_unique(resource_amounts& amounts, const std::string& what,
                       errc code) {
  std::sort(amounts.begin(), amounts.end());
  for (size_t i = 1; i < amounts.size(); ++i)
    if (amounts[i].first == amounts[i - 1].first)
      return bad(what, "'" + amounts[i].first + "' is named twice", code);
  return {};
}

caf::error check_entry(const std::string& name, uint64_t amount,
                       const std::string& what, errc code) {
  if (!valid_resource_name(name))
    return bad(what,
               "resource names are 1 to 64 letters, digits, '-' or '_' ('"
                   + name.substr(0, 64) + "')",
               code);
  if (amount < 1 || amount > max_resource_amount)
    return bad(what,
               "'" + name + "' must be an amount within [1, "
                   + std::to_string(max_resource_amount) + "]",
               code);
  return {};
}

} // namespace

bool valid_resource_name(const std::string& name) {
  if (name.empty() || name.size() > 64)
    return false;
  for (unsigned char c : name)
    if (!(std::isalnum(c) || c == '-' || c == '_'))
      return false;
  return true;
}

std::string to_text(const resource_amounts& amounts) {
  std::string out;
  for (const auto& [name, amount] : amounts)
    out += (out.empty() ? "" : ",") + name + "=" + std::to_string(amount);
  return out;
}

namespace {

/// The items of "name=amount,..." in their order, each checked (names,
/// amounts, how many); not yet for a name twice.
caf::expected<resource_amounts>
split_amounts(const std::string& text, const std::string& what, errc code) {
  resource_amounts out;
  if (text.size() > max_resources * 80)
    return bad(what, "too long", code);
  // Every item between commas counts: "a=1," and "a=1,,b=2" are refused.
  std::string::size_type pos = 0;
  while (!text.empty() && pos <= text.size()) {
    auto comma = text.find(',', pos);
    auto item = text.substr(pos, comma == std::string::npos ? std::string::npos
                                                            : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    auto eq = item.find('=');
    if (eq == std::string::npos)
      return bad(what, "expected name=amount, got '" + item.substr(0, 80) + "'",
                 code);
    auto name = item.substr(0, eq);
    auto digits = item.substr(eq + 1);
    if (digits.empty() || digits.size() > 7
        || digits.find_first_not_of("0123456789") != std::string::npos)
      return bad(what,
                 "'" + name.substr(0, 64) + "' must be an amount within [1, "
                     + std::to_string(max_resource_amount) + "]",
                 code);
    auto amount = std::stoul(digits);
    if (auto err = check_entry(name, amount, what, code))
      return err;
    out.emplace_back(name, static_cast<uint32_t>(amount));
    if (out.size() > max_resources)
      return bad(what,
                 "at most " + std::to_string(max_resources) + " resources",
                 code);
  }
  return out;
}

} // namespace

caf::expected<resource_amounts>
parse_amounts(const std::string& text, const std::string& what, errc code) {
  auto out = split_amounts(text, what, code);
  if (out)
    if (auto err = sort_unique(*out, what, code))
      return err;
  return out;
}

caf::expected<std::vector<resource_request>>
parse_requests(const std::string& text) {
  auto items = split_amounts(text, "resources", errc::invalid_request);
  if (!items)
    return std::move(items.error());
  auto sorted = *items;
  if (auto err = sort_unique(sorted, "resources", errc::invalid_request))
    return err;
  return requests_of(*items); // in the text's order: the first is the class
}

caf::expected<resource_amounts>
amounts_of(const std::vector<resource_request>& list, const std::string& what) {
  if (list.size() > max_resources)
    return bad(what, "at most " + std::to_string(max_resources) + " resources");
  resource_amounts out;
  for (const auto& r : list) {
    if (auto err = check_entry(r.name, r.amount, what, errc::invalid_request))
      return err;
    out.emplace_back(r.name, r.amount);
  }
  if (auto err = sort_unique(out, what, errc::invalid_request))
    return err;
  return out;
}

std::vector<resource_request> requests_of(const resource_amounts& amounts) {
  std::vector<resource_request> out;
  for (const auto& [name, amount] : amounts)
    out.push_back(resource_request{name, amount});
  return out;
}

caf::expected<resource_amounts>
pool_needs(const std::vector<resource_request>& resources) {
  const std::string what = "resources";
  if (resources.size() > max_resources)
    return bad(what, "at most " + std::to_string(max_resources) + " resources");
  if (resources.size() < 2)
    return resource_amounts{};
  // The first names the slot class, checked as such (prepare_spec).
  auto out = amounts_of({resources.begin() + 1, resources.end()}, what);
  if (out)
    for (const auto& [name, amount] : *out)
      if (name == resources.front().name)
        return bad(what, "'" + name + "' is named twice");
  return out;
}

void resource_ledger::sweep() {
  for (auto j = shapes_.begin(); j != shapes_.end();)
    j = j->second.expired() ? shapes_.erase(j) : std::next(j);
  shapes_swept_at_ = std::max<size_t>(64, shapes_.size());
}

bool resource_ledger::admits(const resource_amounts& needs) {
  if (needs.empty())
    return true;
  auto i = shapes_.find(to_text(needs));
  if (i != shapes_.end() && !i->second.expired())
    return true;
  if (shapes_.size() < max_live_shapes)
    return true;
  sweep();
  return shapes_.size() < max_live_shapes;
}

shape_ref resource_ledger::shape_of(const resource_amounts& needs) {
  if (needs.empty())
    return nullptr;
  auto key = to_text(needs);
  auto i = shapes_.find(key);
  if (i != shapes_.end())
    if (auto live = i->second.lock())
      return live;
  // Forget the shapes no entry holds any more, whenever the table has
  // doubled since the last sweep: it stays within twice the live shapes.
  if (shapes_.size() >= 2 * shapes_swept_at_)
    sweep();
  auto shape
      = std::make_shared<const resource_shape>(resource_shape{key, needs});
  shapes_[key] = shape;
  return shape;
}

void resource_ledger::declare(const std::string& node, resource_amounts pools) {
  auto& n = nodes_[node];
  for (auto& [name, p] : n)
    p.total = 0;
  for (const auto& [name, amount] : pools)
    n[name].total = amount;
  for (auto i = n.begin(); i != n.end();)
    i = (i->second.total == 0 && i->second.used == 0) ? n.erase(i)
                                                      : std::next(i);
}

bool resource_ledger::fits_now(const std::string& node,
                               const shape_ref& shape) const {
  return !shape || short_of(node, shape).empty();
}

std::vector<std::string>
resource_ledger::short_of(const std::string& node,
                          const shape_ref& shape) const {
  std::vector<std::string> out;
  if (!shape)
    return out;
  auto n = nodes_.find(node);
  for (const auto& [name, amount] : shape->needs) {
    uint64_t free = 0;
    if (n != nodes_.end())
      if (auto p = n->second.find(name); p != n->second.end())
        free = p->second.total > p->second.used
                   ? p->second.total - p->second.used
                   : 0;
    if (free < amount)
      out.push_back(name);
  }
  return out;
}

bool resource_ledger::fits_ever(const std::string& node,
                                const shape_ref& shape) const {
  return never_reason(node, shape).empty();
}

std::string resource_ledger::never_reason(const std::string& node,
                                          const shape_ref& shape) const {
  if (!shape)
    return {};
  auto n = nodes_.find(node);
  for (const auto& [name, amount] : shape->needs) {
    uint64_t total = 0;
    if (n != nodes_.end())
      if (auto p = n->second.find(name); p != n->second.end())
        total = p->second.total;
    if (total < amount)
      return name + "=" + std::to_string(amount) + " (it has "
             + std::to_string(total) + ")";
  }
  return {};
}

void resource_ledger::acquire(const std::string& node, const shape_ref& shape) {
  if (!shape)
    return;
  auto& n = nodes_[node];
  for (const auto& [name, amount] : shape->needs)
    n[name].used += amount;
}

void resource_ledger::release(const std::string& node, const shape_ref& shape) {
  if (!shape)
    return;
  auto n = nodes_.find(node);
  if (n == nodes_.end())
    return;
  for (const auto& [name, amount] : shape->needs) {
    auto p = n->second.find(name);
    if (p == n->second.end())
      continue;
    p->second.used -= std::min<uint64_t>(p->second.used, amount);
    if (p->second.used == 0 && p->second.total == 0)
      n->second.erase(p);
  }
}

std::string resource_ledger::to_json() const {
  std::string out = "{";
  for (const auto& [node, pools] : nodes_) {
    if (pools.empty())
      continue;
    out += (out.size() > 1 ? "," : "") + json_quote(node) + ":{";
    bool first = true;
    for (const auto& [name, p] : pools) {
      out += (first ? "" : ",") + json_quote(name)
             + ":{\"total\":" + std::to_string(p.total)
             + ",\"used\":" + std::to_string(p.used) + "}";
      first = false;
    }
    out += "}";
  }
  return out + "}";
}

} // namespace drover
