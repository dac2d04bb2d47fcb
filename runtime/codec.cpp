#include "runtime/codec.hpp"

#include "runtime/detail/capnp_model.hpp"
#include "runtime/errors.hpp"
#include "runtime/json_text.hpp"

#include <capnp/compat/json.h>
#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <kj/encoding.h>
#include <kj/exception.h>

#include <cstring>
#include <string>
#include <vector>

namespace drover {

namespace {

// -- error mapping ------------------------------------------------------------

bool contains(const std::string& text, const char* part) {
  return text.find(part) != std::string::npos;
}

/// Turns an exception from Cap'n Proto's reader or JSON codec into a Drover
/// error. The library reports every problem as a generic FAILED exception,
/// so the specific code comes from its description (Cap'n Proto 0.9.2
/// wording; tests/runtime/codec_errors_test.cpp pins each case).
caf::error to_error(const kj::Exception& e, const char* what) {
  auto desc = e.getDescription();
  std::string text{desc.cStr(), desc.size()};
  auto code = errc::malformed;
  if (contains(text, "nested too deeply")
      || contains(text, "too deeply-nested"))
    code = errc::too_deep;
  else if (contains(text, "traversal limit"))
    code = errc::too_large;
  else if (contains(text, "no such enumerant")
           || contains(text, "out-of-range"))
    code = errc::invalid_value;
  else if (contains(text, "ends prematurely"))
    code = errc::truncated;
  return make_error(code, std::string{what} + ": " + text);
}

// -- framing ------------------------------------------------------------------

uint32_t read_le32(const char* p) {
  auto b = reinterpret_cast<const unsigned char*>(p);
  return uint32_t{b[0]} | (uint32_t{b[1]} << 8) | (uint32_t{b[2]} << 16)
         | (uint32_t{b[3]} << 24);
}

/// Cap'n Proto's own cap on segments per message.
constexpr uint64_t max_segments = 512;

/// Checks the segment table against the input size before Cap'n Proto sees
/// the bytes, so cut-off input is reported as truncated and trailing bytes
/// as malformed, both with sizes in the message.
caf::error check_framing(const char* data, size_t size) {
  auto n = std::to_string(size);
  if (size < 8)
    return make_error(errc::truncated, "Cap'n Proto message: " + n
                                           + " bytes, a message needs at "
                                             "least 8 (the segment table)");
  uint64_t segments = uint64_t{read_le32(data)} + 1;
  if (segments > max_segments)
    return make_error(errc::malformed,
                      "Cap'n Proto message: segment table announces "
                          + std::to_string(segments) + " segments (at most "
                          + std::to_string(max_segments) + ")");
  // 4 bytes of count, 4 per segment size, padded to a word.
  uint64_t table_bytes = (4 + 4 * segments + 7) / 8 * 8;
  if (size < table_bytes)
    return make_error(errc::truncated,
                      "Cap'n Proto message: " + n
                          + " bytes, its segment table alone needs "
                          + std::to_string(table_bytes));
  uint64_t total = table_bytes;
  for (uint64_t i = 0; i < segments; ++i)
    total += uint64_t{read_le32(data + 4 + 4 * i)} * 8;
  if (size < total)
    return make_error(errc::truncated, "Cap'n Proto message: " + n
                                           + " bytes, the message announces "
                                           + std::to_string(total));
  if (size > total)
    return make_error(
        errc::malformed,
        "Cap'n Proto message: " + n + " bytes, " + std::to_string(size - total)
            + " of them past the message's end at " + std::to_string(total));
  return {};
}

// -- JSON ---------------------------------------------------------------------

/// JSON payload fields (job input, result) are JSON text in the model and in
/// the binary form. In JSON they appear as the JSON value itself. Empty text
/// and JSON null both mean "no payload".
class embedded_json_handler final
    : public capnp::JsonCodec::Handler<capnp::Text> {
public:
  void encode(const capnp::JsonCodec& codec, capnp::Text::Reader input,
              capnp::JsonValue::Builder output) const override {
    if (input.size() == 0) {
      output.setNull();
      return;
    }
    // Text that is not valid JSON (never accepted by from_json; possible in
    // bytes from elsewhere) is shown as a JSON string rather than failing.
    // Payload text may hold \uXXXX escapes that Cap'n Proto 0.9.2 misreads
    // (e.g. from the binary API): runtime/json_text.hpp.
    auto fixed = fix_unicode_escapes({input.begin(), input.size()});
    auto failure = kj::runCatchingExceptions([&codec, &fixed, &output] {
      codec.decodeRaw(kj::ArrayPtr<const char>{fixed.data(), fixed.size()},
                      output);
    });
    if (failure != nullptr)
      output.setString(input);
  }

  capnp::Orphan<capnp::Text> decode(const capnp::JsonCodec& codec,
                                    capnp::JsonValue::Reader input,
                                    capnp::Orphanage orphanage) const override {
    if (input.isNull())
      return {};
    auto text = codec.encodeRaw(input);
    return orphanage.newOrphanCopy(capnp::Text::Reader{text});
  }
};

/// Opaque bytes (checkpoints) as standard base64. Replaces Cap'n Proto's
/// $Json.base64 handler, which silently drops invalid characters.
class base64_handler final : public capnp::JsonCodec::Handler<capnp::Data> {
public:
  void encode(const capnp::JsonCodec&, capnp::Data::Reader input,
              capnp::JsonValue::Builder output) const override {
    output.setString(kj::encodeBase64(input));
  }

  capnp::Orphan<capnp::Data> decode(const capnp::JsonCodec&,
                                    capnp::JsonValue::Reader input,
                                    capnp::Orphanage orphanage) const override {
    KJ_REQUIRE(input.isString(), "base64 field: expected a string");
    auto bytes = kj::decodeBase64(input.getString().asArray());
    KJ_REQUIRE(!bytes.hadErrors, "base64 field: invalid base64");
    return orphanage.newOrphanCopy(
        capnp::Data::Reader{bytes.begin(), bytes.size()});
  }
};

/// A JsonCodec set up for Drover's schemas. Cheap enough to build per call,
/// which keeps it free of shared state.
class drover_json_codec {
public:
  explicit drover_json_codec(size_t max_depth) {
    codec_.setMaxNestingDepth(max_depth);
    codec_.addFieldHandler(field<schema::JobSpec>("input"), json_);
    codec_.addFieldHandler(field<schema::SubmitRequest>("input"), json_);
    codec_.addFieldHandler(field<schema::JobRecord>("result"), json_);
    codec_.addFieldHandler(field<schema::JobEvent::Details>("result"), json_);
    codec_.addFieldHandler(field<schema::Completion>("result"), json_);
    codec_.addFieldHandler(field<schema::ProgressUpdate>("checkpoint"),
                           base64_);
    codec_.addFieldHandler(field<schema::JobRecord>("checkpoint"), base64_);
    codec_.addFieldHandler(field<schema::JobEvent::Details>("checkpoint"),
                           base64_);
    codec_.addFieldHandler(field<schema::Lease>("checkpoint"), base64_);
  }

  const capnp::JsonCodec& get() const {
    return codec_;
  }

private:
  template <class Struct>
  static capnp::StructSchema::Field field(kj::StringPtr name) {
    return capnp::Schema::from<Struct>().getFieldByName(name);
  }

  // The handlers outlive the codec that refers to them (declared first).
  embedded_json_handler json_;
  base64_handler base64_;
  capnp::JsonCodec codec_;
};

// -- optional members in JSON -------------------------------------------------

using field_list = std::vector<capnp::StructSchema::Field>;

/// The optional members of `schema`: groups holding exactly
/// `union { unset @n :Void; value @m :T; }` (schemas/job_api.capnp).
field_list find_optional_members(capnp::StructSchema schema) {
  field_list result;
  for (auto field : schema.getNonUnionFields()) {
    if (!field.getProto().isGroup())
      continue;
    auto group = field.getType().asStruct();
    auto members = group.getUnionFields();
    if (group.getFields().size() == 2 && members.size() == 2
        && members[0].getProto().getName() == "unset"
        && members[0].getType().isVoid()
        && members[1].getProto().getName() == "value")
      result.push_back(field);
  }
  return result;
}

template <class Wire>
const field_list& optional_members() {
  static const field_list result
      = find_optional_members(capnp::Schema::from<Wire>());
  return result;
}

bool is_optional_member(const field_list& optionals, kj::StringPtr name) {
  for (auto field : optionals)
    if (field.getProto().getName() == name)
      return true;
  return false;
}

/// Cap'n Proto's codec writes an optional member as a group object,
/// `"priority": {"value": "high"}` or `"priority": {"unset": null}`; the API
/// form is `"priority": "high"` or nothing. Copies `in` (an object) to `out`
/// that way.
void lift_optional_members(capnp::JsonValue::Reader in,
                           capnp::JsonValue::Builder out,
                           const field_list& optionals) {
  auto lifted = [&optionals](capnp::JsonValue::Field::Reader field)
      -> kj::Maybe<capnp::JsonValue::Reader> {
    if (!is_optional_member(optionals, field.getName()))
      return field.getValue();
    auto group = field.getValue();
    if (group.isObject() && group.getObject().size() == 1
        && group.getObject()[0].getName() == "value")
      return group.getObject()[0].getValue();
    return nullptr; // unset
  };
  auto fields = in.getObject();
  unsigned count = 0;
  for (auto field : fields)
    if (lifted(field) != nullptr)
      ++count;
  auto outs = out.initObject(count);
  unsigned i = 0;
  for (auto field : fields)
    KJ_IF_MAYBE (value, lifted(field)) {
      outs[i].setName(field.getName());
      outs[i].setValue(*value);
      ++i;
    }
}

/// The reverse of lift_optional_members for decoding: copies the object
/// `in` to `out` with each optional member's value `x` wrapped as the group
/// object `{"value": x}`, and JSON null as `{}` (the group reset: unset).
/// Absent members stay absent (unset).
void wrap_optional_members(capnp::JsonValue::Reader in,
                           capnp::JsonValue::Builder out,
                           const field_list& optionals) {
  auto fields = in.getObject();
  auto outs = out.initObject(fields.size());
  for (unsigned i = 0; i < fields.size(); ++i) {
    auto field = fields[i];
    outs[i].setName(field.getName());
    if (!is_optional_member(optionals, field.getName())) {
      outs[i].setValue(field.getValue());
    } else if (field.getValue().isNull()) {
      outs[i].initValue().initObject(0);
    } else {
      auto member = outs[i].initValue().initObject(1)[0];
      member.setName("value");
      member.setValue(field.getValue());
    }
  }
}

/// Depth allowed when embedding payloads while encoding: payloads were
/// validated when they entered the system; this only bounds the parser's
/// recursion for text that was not.
constexpr size_t encode_max_depth = 1024;

// -- generic encode/decode ----------------------------------------------------

template <class T>
std::vector<char> encode_bytes(const T& x) {
  using wire = typename detail::schema_of<T>::type;
  capnp::MallocMessageBuilder message;
  detail::write(message.initRoot<wire>(), x);
  auto words = capnp::messageToFlatArray(message);
  auto bytes = words.asChars();
  return {bytes.begin(), bytes.end()};
}

template <class T>
std::string encode_json(const T& x) {
  using wire = typename detail::schema_of<T>::type;
  capnp::MallocMessageBuilder message;
  auto root = message.initRoot<wire>();
  detail::write(root, x);
  drover_json_codec codec{encode_max_depth};
  const auto& optionals = optional_members<wire>();
  if (optionals.empty()) {
    auto text = codec.get().encode(root.asReader());
    return {text.cStr(), text.size()};
  }
  capnp::MallocMessageBuilder json;
  auto as_groups = json.initRoot<capnp::JsonValue>();
  codec.get().encode(root.asReader(), as_groups);
  auto lifted = json.getOrphanage().newOrphan<capnp::JsonValue>();
  lift_optional_members(as_groups.asReader(), lifted.get(), optionals);
  auto text = codec.get().encodeRaw(lifted.getReader());
  return {text.cStr(), text.size()};
}

} // namespace

template <class T>
caf::expected<T> from_bytes(const char* data, size_t size,
                            const decode_limits& limits) {
  using wire = typename detail::schema_of<T>::type;
  if (size > limits.max_bytes)
    return make_error(errc::too_large,
                      "Cap'n Proto message: " + std::to_string(size)
                          + " bytes, the limit is "
                          + std::to_string(limits.max_bytes));
  if (auto err = check_framing(data, size))
    return err;
  // FlatArrayMessageReader needs word-aligned memory; `data` may be any
  // char buffer.
  auto words = kj::heapArray<capnp::word>(size / sizeof(capnp::word));
  std::memcpy(words.begin(), data, size);
  capnp::ReaderOptions options;
  options.traversalLimitInWords = limits.traversal_limit_words;
  options.nestingLimit = limits.nesting_limit;
  T result;
  caf::error err;
  auto failure = kj::runCatchingExceptions([&] {
    capnp::FlatArrayMessageReader reader{words.asPtr(), options};
    detail::read_context ctx{words.size()};
    err = detail::read(reader.getRoot<wire>(), result, ctx);
  });
  KJ_IF_MAYBE (e, failure)
    return to_error(*e, "Cap'n Proto message");
  if (err)
    return err;
  return result;
}

template <class T>
caf::expected<T> from_json(std::string_view text, const decode_limits& limits) {
  using wire = typename detail::schema_of<T>::type;
  if (text.size() > limits.max_bytes)
    return make_error(errc::too_large, "JSON: " + std::to_string(text.size())
                                           + " bytes, the limit is "
                                           + std::to_string(limits.max_bytes));
  T result;
  caf::error err;
  auto failure = kj::runCatchingExceptions([&] {
    // After the size check, so the limit applies to the input as it came;
    // the rewrite never makes the text longer (runtime/json_text.hpp).
    auto fixed = fix_unicode_escapes(text);
    drover_json_codec codec{limits.max_json_depth};
    capnp::MallocMessageBuilder message;
    auto root = message.initRoot<wire>();
    kj::ArrayPtr<const char> input{fixed.data(), fixed.size()};
    const auto& optionals = optional_members<wire>();
    if (optionals.empty()) {
      codec.get().decode(input, root);
    } else {
      // What JsonCodec::decode(text, root) does, with the API form of
      // optional members turned into the groups the codec expects.
      capnp::MallocMessageBuilder json;
      auto parsed = json.initRoot<capnp::JsonValue>();
      codec.get().decodeRaw(input, parsed);
      if (parsed.isObject()) {
        auto wrapped = json.getOrphanage().newOrphan<capnp::JsonValue>();
        wrap_optional_members(parsed.asReader(), wrapped.get(), optionals);
        codec.get().decode(wrapped.getReader(), root);
      } else {
        codec.get().decode(parsed.asReader(), root); // fails: not an object
      }
    }
    detail::read_context ctx{fixed.size()};
    err = detail::read(root.asReader(), result, ctx);
  });
  KJ_IF_MAYBE (e, failure)
    return to_error(*e, "JSON");
  if (err)
    return err;
  return result;
}

#define DROVER_CODEC_INSTANTIATE(type)                                         \
  std::vector<char> to_bytes(const type& x) {                                  \
    return encode_bytes(x);                                                    \
  }                                                                            \
  std::string to_json(const type& x) {                                         \
    return encode_json(x);                                                     \
  }                                                                            \
  std::string to_string(const type& x) {                                       \
    return encode_json(x);                                                     \
  }                                                                            \
  template caf::expected<type> from_bytes<type>(const char*, size_t,           \
                                                const decode_limits&);         \
  template caf::expected<type> from_json<type>(std::string_view,               \
                                               const decode_limits&);

DROVER_CODEC_INSTANTIATE(backoff_policy)
DROVER_CODEC_INSTANTIATE(resource_request)
DROVER_CODEC_INSTANTIATE(job_spec)
DROVER_CODEC_INSTANTIATE(stage)
DROVER_CODEC_INSTANTIATE(progress_update)
DROVER_CODEC_INSTANTIATE(error_info)
DROVER_CODEC_INSTANTIATE(job_record)
DROVER_CODEC_INSTANTIATE(webhook_attempt)
DROVER_CODEC_INSTANTIATE(job_event)
DROVER_CODEC_INSTANTIATE(resource_capacity)
DROVER_CODEC_INSTANTIATE(register_worker)
DROVER_CODEC_INSTANTIATE(lease)
DROVER_CODEC_INSTANTIATE(lease_batch)
DROVER_CODEC_INSTANTIATE(running_attempt)
DROVER_CODEC_INSTANTIATE(heartbeat)
DROVER_CODEC_INSTANTIATE(progress_batch)
DROVER_CODEC_INSTANTIATE(completion)
DROVER_CODEC_INSTANTIATE(completion_batch)
DROVER_CODEC_INSTANTIATE(coordinator_reply)
DROVER_CODEC_INSTANTIATE(tree_node)
DROVER_CODEC_INSTANTIATE(tree_snapshot)
DROVER_CODEC_INSTANTIATE(submit_request)
DROVER_CODEC_INSTANTIATE(job_query)
DROVER_CODEC_INSTANTIATE(queue_stats)

#undef DROVER_CODEC_INSTANTIATE

caf::error validate_json(std::string_view text, const decode_limits& limits) {
  if (text.size() > limits.max_bytes)
    return make_error(errc::too_large, "JSON: " + std::to_string(text.size())
                                           + " bytes, the limit is "
                                           + std::to_string(limits.max_bytes));
  auto failure = kj::runCatchingExceptions([&] {
    // As in from_json: checked at its original size, then rewritten.
    auto fixed = fix_unicode_escapes(text);
    capnp::JsonCodec codec;
    codec.setMaxNestingDepth(limits.max_json_depth);
    capnp::MallocMessageBuilder message;
    codec.decodeRaw(kj::ArrayPtr<const char>{fixed.data(), fixed.size()},
                    message.initRoot<capnp::JsonValue>());
  });
  KJ_IF_MAYBE (e, failure)
    return to_error(*e, "JSON");
  return {};
}

} // namespace drover
