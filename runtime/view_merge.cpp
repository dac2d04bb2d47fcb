#include "runtime/view_merge.hpp"

#include "runtime/json_read.hpp"
#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <kj/exception.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <set>

namespace drover {

namespace {

using capnp::JsonValue;

std::string raw(json_reader v) {
  capnp::JsonCodec codec;
  auto s = codec.encodeRaw(v);
  return std::string{s.cStr(), s.size()};
}

std::string text_of(capnp::Text::Reader t) {
  return std::string{t.cStr(), t.size()};
}

/// Whole numbers as such (counters), others with fifteen significant
/// digits; `ok` turns false for one JSON cannot hold (a sum that overflowed).
std::string number_text(double x, bool& ok) {
  ok = ok && std::isfinite(x);
  char buf[32];
  if (std::isfinite(x) && x == std::floor(x) && std::fabs(x) < 1e15)
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(x));
  else
    std::snprintf(buf, sizeof buf, "%.15g", x);
  return buf;
}

/// The object `obj` as text with the members of `set` (name -> JSON text)
/// instead of its own, or added after them.
std::string object_text(json_reader obj,
                        const std::map<std::string, std::string>& set) {
  std::string out = "{";
  std::set<std::string> seen;
  for (auto f : obj.getObject()) {
    auto name = text_of(f.getName());
    auto s = set.find(name);
    out += (out.size() > 1 ? "," : "") + json_quote(name) + ":"
           + (s != set.end() ? s->second : raw(f.getValue()));
    seen.insert(std::move(name));
  }
  for (const auto& [name, value] : set)
    if (seen.count(name) == 0)
      out += (out.size() > 1 ? "," : "") + json_quote(name) + ":" + value;
  return out + "}";
}

/// Every part parsed, each an object; nullopt if one is not.
struct parsed_parts {
  std::vector<std::unique_ptr<json_doc>> docs;
  std::vector<json_reader> roots;
};

std::optional<parsed_parts> parse_all(const std::vector<view_part>& parts) {
  parsed_parts out;
  for (const auto& part : parts) {
    auto doc = std::make_unique<json_doc>();
    if (!doc->parse(part.json) || doc->root().which() != JsonValue::OBJECT)
      return std::nullopt;
    out.roots.push_back(doc->root());
    out.docs.push_back(std::move(doc));
  }
  return out;
}

/// The member `name` of `obj` if it is an array of objects; `absent` says
/// whether it may be missing (then an empty list).
std::optional<std::vector<json_reader>>
objects_of(json_reader obj, const char* name, bool absent) {
  auto m = json_member(obj, name);
  std::vector<json_reader> out;
  if (!m) {
    if (!absent)
      return std::nullopt;
    return out;
  }
  if (m->which() != JsonValue::ARRAY)
    return std::nullopt;
  for (auto x : m->getArray()) {
    if (x.which() != JsonValue::OBJECT)
      return std::nullopt;
    out.push_back(x);
  }
  return out;
}

int breaker_rank(const std::string& state) {
  return state == "open" ? 2 : state == "half_open" ? 1 : 0;
}

std::optional<std::string> nodes_merged(const std::vector<view_part>& parts) {
  auto p = parse_all(parts);
  if (!p)
    return std::nullopt;
  bool ok = true;
  std::string nodes;
  std::optional<std::string> coordinators;
  // (resource class, job type, resources) -> (first entry, jobs), in the
  // order first seen.
  std::vector<std::pair<std::string, std::pair<json_reader, double>>> waiting;
  bool any_waiting = false;
  for (size_t i = 0; i < parts.size(); ++i) {
    auto root = p->roots[i];
    auto listed = objects_of(root, "nodes", false);
    auto waits = objects_of(root, "waiting_without_worker", true);
    if (!listed || !waits)
      return std::nullopt;
    for (auto n : *listed)
      nodes += (nodes.empty() ? "" : ",")
               + object_text(
                   n, {{"coordinator", json_quote(parts[i].coordinator)}});
    if (auto c = json_member(root, "coordinators"); c && !coordinators)
      coordinators = raw(*c);
    any_waiting = any_waiting || json_member(root, "waiting_without_worker");
    for (auto w : *waits) {
      auto res = json_member(w, "resources");
      auto key = json_string(w, "resource_class") + '\0'
                 + json_string(w, "job_type") + '\0' + (res ? raw(*res) : "");
      auto at = std::find_if(waiting.begin(), waiting.end(),
                             [&](const auto& x) { return x.first == key; });
      if (at == waiting.end())
        waiting.push_back({key, {w, json_number(w, "jobs")}});
      else
        at->second.second += json_number(w, "jobs");
    }
  }
  std::string out = "{\"nodes\":[" + nodes + "]";
  if (coordinators)
    out += ",\"coordinators\":" + *coordinators;
  if (any_waiting) {
    out += ",\"waiting_without_worker\":[";
    for (size_t k = 0; k < waiting.size(); ++k)
      out += (k > 0 ? "," : "")
             + object_text(
                 waiting[k].second.first,
                 {{"jobs", number_text(waiting[k].second.second, ok)}});
    out += "]";
  }
  if (!ok)
    return std::nullopt;
  return out + "}";
}

std::optional<std::string> flow_merged(const std::vector<view_part>& parts) {
  auto p = parse_all(parts);
  if (!p)
    return std::nullopt;
  bool ok = true;
  struct rate {
    json_reader first;
    double share = 0, tokens = 0, granted = 0, waiting = 0;
  };
  struct breaker {
    json_reader first;
    std::string state;
    double in_row = 0, probes = 0, opened = 0, followed = 0, waiting = 0;
    std::optional<double> calls, failures;
    std::string states;
  };
  std::map<std::string, rate> rates;
  std::map<std::string, breaker> breakers;
  std::optional<std::string> control_log;
  std::map<std::string, std::map<std::string, std::pair<double, double>>> pools;
  bool any_pools = false;
  auto add_window
      = [](std::optional<double>& sum, json_reader x, const char* name) {
          auto v = json_member(x, name);
          if (v && v->which() == JsonValue::NUMBER)
            sum = sum.value_or(0) + v->getNumber();
        };
  for (size_t i = 0; i < parts.size(); ++i) {
    auto root = p->roots[i];
    auto rs = objects_of(root, "rate_limits", false);
    auto bs = objects_of(root, "breakers", false);
    if (!rs || !bs)
      return std::nullopt;
    for (auto x : *rs) {
      auto [at, fresh] = rates.try_emplace(json_string(x, "key"));
      auto& r = at->second;
      if (fresh)
        r.first = x;
      r.share += json_number(x, "share");
      r.tokens += json_number(x, "tokens");
      r.granted += json_number(x, "granted");
      r.waiting += json_number(x, "waiting");
    }
    for (auto x : *bs) {
      auto [at, fresh] = breakers.try_emplace(json_string(x, "key"));
      auto& b = at->second;
      if (fresh)
        b.first = x;
      auto state = json_string(x, "state");
      if (b.states.empty() || breaker_rank(state) > breaker_rank(b.state))
        b.state = state;
      b.states += (b.states.empty() ? "" : ",")
                  + json_quote(parts[i].coordinator) + ":" + json_quote(state);
      b.in_row = std::max(b.in_row, json_number(x, "failures_in_row"));
      b.probes += json_number(x, "probes_running");
      b.opened += json_number(x, "times_opened");
      b.followed += json_number(x, "times_followed");
      b.waiting += json_number(x, "waiting");
      add_window(b.calls, x, "window_calls");
      add_window(b.failures, x, "window_failures");
    }
    if (auto l = json_member(root, "control_log"); l && !control_log)
      control_log = raw(*l);
    if (auto pl = json_member(root, "resource_pools")) {
      if (pl->which() != JsonValue::OBJECT)
        return std::nullopt;
      any_pools = true;
      for (auto node : pl->getObject()) {
        if (node.getValue().which() != JsonValue::OBJECT)
          return std::nullopt;
        auto& of_node = pools[text_of(node.getName())];
        for (auto pool : node.getValue().getObject()) {
          auto& [total, used] = of_node[text_of(pool.getName())];
          total = std::max(total, json_number(pool.getValue(), "total"));
          used += json_number(pool.getValue(), "used");
        }
      }
    }
  }
  auto optional_number = [&ok](const std::optional<double>& x) {
    return x ? number_text(*x, ok) : std::string{"null"};
  };
  std::string out = "{\"rate_limits\":[";
  bool first = true;
  for (const auto& [key, r] : rates) {
    out += (first ? "" : ",")
           + object_text(
               r.first,
               {{"share", number_text(std::round(r.share * 1000) / 1000, ok)},
                {"tokens", number_text(std::floor(r.tokens * 100) / 100, ok)},
                {"granted", number_text(r.granted, ok)},
                {"waiting", number_text(r.waiting, ok)}});
    first = false;
  }
  out += "],\"breakers\":[";
  first = true;
  for (const auto& [key, b] : breakers) {
    out += (first ? "" : ",")
           + object_text(b.first,
                         {{"state", json_quote(b.state)},
                          {"failures_in_row", number_text(b.in_row, ok)},
                          {"window_calls", optional_number(b.calls)},
                          {"window_failures", optional_number(b.failures)},
                          {"probes_running", number_text(b.probes, ok)},
                          {"times_opened", number_text(b.opened, ok)},
                          {"times_followed", number_text(b.followed, ok)},
                          {"waiting", number_text(b.waiting, ok)},
                          {"states", "{" + b.states + "}"}});
    first = false;
  }
  out += "]";
  if (control_log)
    out += ",\"control_log\":" + *control_log;
  if (any_pools) {
    out += ",\"resource_pools\":{";
    bool first_node = true;
    for (const auto& [node, of_node] : pools) {
      out += (first_node ? "" : ",") + json_quote(node) + ":{";
      first_node = false;
      bool first_pool = true;
      for (const auto& [pool, figures] : of_node) {
        out += (first_pool ? "" : ",") + json_quote(pool)
               + ":{\"total\":" + number_text(figures.first, ok)
               + ",\"used\":" + number_text(figures.second, ok) + "}";
        first_pool = false;
      }
      out += "}";
    }
    out += "}";
  }
  if (!ok)
    return std::nullopt;
  return out + "}";
}

/// `merge(parts)`, or nullopt if Cap'n Proto's codec threw on a part (a
/// number it cannot encode again, nesting past its limit).
std::optional<std::string>
guarded(std::optional<std::string> (*merge)(const std::vector<view_part>&),
        const std::vector<view_part>& parts) {
  std::optional<std::string> out;
  auto failure = kj::runCatchingExceptions([&] { out = merge(parts); });
  if (failure != nullptr)
    return std::nullopt;
  return out;
}

} // namespace

std::string with_unreached(std::string merged,
                           const std::vector<std::string>& unreached) {
  if (merged.size() < 2 || merged.back() != '}')
    return merged; // not an object: left as it is
  merged.pop_back();
  merged += std::string{merged.size() > 1 ? "," : ""}
            + "\"unreached_coordinators\":[";
  for (size_t i = 0; i < unreached.size(); ++i)
    merged += (i > 0 ? "," : "") + json_quote(unreached[i]);
  return merged + "]}";
}

std::optional<std::string>
merge_nodes_views(const std::vector<view_part>& parts) {
  return guarded(nodes_merged, parts);
}

std::optional<std::string>
merge_flow_views(const std::vector<view_part>& parts) {
  return guarded(flow_merged, parts);
}

} // namespace drover
