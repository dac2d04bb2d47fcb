// The HTTP API's errors (gateway/http_api.hpp): the error body, the HTTP
// status and API code of an error from the node or a parser, and the text
// a client is told. See gateway/detail/http_api_writer.hpp.

#include "gateway/detail/http_api_writer.hpp"

#include "runtime/errors.hpp"

namespace drover::http {

using api_detail::writer;

std::string error_json(std::string_view code, std::string_view message) {
  writer w;
  w.open_object()
      .key("error")
      .open_object()
      .key("code")
      .str(code)
      .key("message")
      .str(message)
      .close_object()
      .close_object();
  return w.take();
}

error_status classify(const caf::error& err) {
  if (err.category() != errc_category) {
    // CAF's own errors: a request that timed out or a node that went away.
    return {503, "unavailable"};
  }
  switch (static_cast<errc>(err.code())) {
    case errc::truncated:
    case errc::malformed:
      return {400, "malformed_json"};
    case errc::too_deep:
      return {400, "too_deep"};
    case errc::invalid_value:
    case errc::invalid_request:
      return {400, "invalid_request"};
    case errc::too_large:
      return {413, "too_large"};
    case errc::not_found:
      return {404, "not_found"};
    case errc::conflict:
      return {409, "conflict"};
    case errc::unavailable:
      return {503, "unavailable"};
    case errc::not_owner:
      // Another coordinator owns the job's partition (--share-partitions):
      // the request may succeed through that one, or here once it moved.
      return {503, "not_owner"};
    case errc::stale_attempt:
      return {409, "conflict"};
    case errc::forbidden:
      return {403, "forbidden"};
    case errc::unauthenticated:
      return {401, "unauthenticated"};
    case errc::rate_limited:
      return {429, "rate_limited"};
    case errc::overloaded:
      return {503, "overloaded"};
    case errc::outcome_unknown:
      // The node that took the request stopped before it answered (a
      // sharing gateway's coordinator died): it may or may not be done.
      return {504, "outcome_unknown"};
    default:
      return {500, "internal"};
  }
}

std::string context_of(const caf::error& err) {
  auto& ctx = err.context();
  if (ctx.match_elements<std::string>())
    return ctx.get_as<std::string>(0);
  return err.category() == errc_category
             ? std::string{to_string(static_cast<errc>(err.code()))}
             : std::string{"the node did not answer in time; retry"};
}

} // namespace drover::http
