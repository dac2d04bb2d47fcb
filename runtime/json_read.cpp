#include "runtime/json_read.hpp"

#include <kj/exception.h>

namespace drover {

bool json_doc::parse(std::string_view text) {
  auto root = message_.initRoot<capnp::JsonValue>();
  auto failure = kj::runCatchingExceptions([&] {
    capnp::JsonCodec codec;
    codec.decodeRaw(kj::ArrayPtr<const char>{text.data(), text.size()}, root);
  });
  if (failure == nullptr)
    return true;
  message_.initRoot<capnp::JsonValue>();
  return false;
}

std::optional<json_reader> json_member(json_reader obj, std::string_view name) {
  if (obj.which() != capnp::JsonValue::OBJECT)
    return std::nullopt;
  for (auto f : obj.getObject()) {
    auto n = f.getName();
    if (std::string_view{n.begin(), n.size()} == name)
      return f.getValue();
  }
  return std::nullopt;
}

double json_number(json_reader obj, std::string_view name) {
  auto v = json_member(obj, name);
  return v && v->which() == capnp::JsonValue::NUMBER ? v->getNumber() : 0;
}

std::string json_string(json_reader obj, std::string_view name) {
  auto v = json_member(obj, name);
  if (!v || v->which() != capnp::JsonValue::STRING)
    return {};
  auto s = v->getString();
  return std::string{s.begin(), s.size()};
}

} // namespace drover
