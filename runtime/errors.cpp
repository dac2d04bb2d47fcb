#include "runtime/errors.hpp"

#include <caf/actor_system_config.hpp>
#include <caf/message.hpp>

namespace drover {

std::string code_text(const caf::error& err, const char* other) {
  if (err && err.category() == errc_category)
    return to_string(static_cast<errc>(err.code()));
  return other;
}

const char* to_string(errc x) {
  switch (x) {
    case errc::none:
      return "none";
    case errc::truncated:
      return "truncated";
    case errc::too_large:
      return "too_large";
    case errc::malformed:
      return "malformed";
    case errc::too_deep:
      return "too_deep";
    case errc::invalid_value:
      return "invalid_value";
    case errc::restart_intensity_exceeded:
      return "restart_intensity_exceeded";
    case errc::escalated:
      return "escalated";
    case errc::shutdown_timeout:
      return "shutdown_timeout";
    case errc::not_found:
      return "not_found";
    case errc::unavailable:
      return "unavailable";
    case errc::bad_config:
      return "bad_config";
    case errc::conflict:
      return "conflict";
    case errc::invalid_request:
      return "invalid_request";
    case errc::stale_attempt:
      return "stale_attempt";
    case errc::not_owner:
      return "not_owner";
    case errc::forbidden:
      return "forbidden";
    case errc::unauthenticated:
      return "unauthenticated";
    case errc::rate_limited:
      return "rate_limited";
    case errc::outcome_unknown:
      return "outcome_unknown";
    case errc::overloaded:
      return "overloaded";
  }
  return "unknown";
}

namespace {

std::string render(uint8_t code, const std::string& context) {
  std::string result = "drover: ";
  result += to_string(static_cast<errc>(code));
  if (!context.empty()) {
    result += " (";
    result += context;
    result += ')';
  }
  return result;
}

} // namespace

std::string describe(const caf::error& err) {
  if (!err)
    return "no error";
  if (err.category() != errc_category)
    return caf::to_string(err);
  std::string context;
  const auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    context = ctx.get_as<std::string>(0);
  return render(err.code(), context);
}

void register_error_category(caf::actor_system_config& cfg) {
  cfg.add_error_category(errc_category,
                         [](uint8_t code, caf::atom_value,
                            const caf::message& ctx) -> std::string {
                           std::string context;
                           if (ctx.size() == 1
                               && ctx.match_element<std::string>(0))
                             context = ctx.get_as<std::string>(0);
                           return render(code, context);
                         });
}

} // namespace drover
