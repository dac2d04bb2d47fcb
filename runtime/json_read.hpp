#pragma once

// Reading JSON text Drover produced itself — the admin views built as text
// (the flow view, the node list) that /metrics and droverctl turn into
// other forms — with Cap'n Proto's JSON codec. Not for client input: the
// HTTP API's bodies go through gateway/http_api.cpp's checked readers. The
// views other coordinators send a sharing gateway (runtime/view_merge.cpp)
// are read with it too: that merge checks every shape it reads, refuses
// numbers JSON cannot hold and catches the codec's exceptions (nesting past
// its limit).

#include <capnp/compat/json.h>
#include <capnp/message.h>

#include <optional>
#include <string>
#include <string_view>

namespace drover {

using json_reader = capnp::JsonValue::Reader;

/// A JSON document parsed from text.
class json_doc {
public:
  /// False (and an empty document) if `text` is not JSON.
  bool parse(std::string_view text);

  json_reader root() {
    return message_.getRoot<capnp::JsonValue>().asReader();
  }

private:
  capnp::MallocMessageBuilder message_;
};

/// The member `name` of an object, if it is one and has it.
std::optional<json_reader> json_member(json_reader obj, std::string_view name);

/// A number member (0 when absent or not a number).
double json_number(json_reader obj, std::string_view name);

/// A string member ("" when absent or not a string).
std::string json_string(json_reader obj, std::string_view name);

} // namespace drover
