// libFuzzer target: the Cap'n Proto decoders (runtime/codec.hpp,
// from_bytes<T> for every message kind) on untrusted bytes, as they arrive
// from another node.
//
// Input: one byte choosing the kind (see fuzz_check.hpp), then the message.
// Properties, beyond "no crash, no sanitizer report, no exception":
// - whatever decodes re-encodes to bytes that decode again, and encoding
//   that second value gives the same bytes (decode . encode is a fixpoint
//   after one round: nothing is lost or invented on the second trip);
// - to_json renders any decoded value (the gateway and logs do).

#include "fuzz_check.hpp"

#include "runtime/codec.hpp"

#include <cstddef>
#include <cstdint>

namespace {

template <class T>
void check_kind(const char* data, size_t size) {
  auto x = drover::from_bytes<T>(data, size);
  if (!x)
    return;
  auto first = drover::to_bytes(*x);
  auto y = drover::from_bytes<T>(first);
  FUZZ_CHECK(y, "a decoded value's encoding must decode again");
  FUZZ_CHECK(drover::to_bytes(*y) == first,
             "encoding must be stable after one decode/encode round");
  (void)drover::to_json(*x);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1)
    return 0;
  auto kind = data[0] % drover_fuzz_codec_kind_count;
  auto bytes = reinterpret_cast<const char*>(data + 1);
  auto n = size - 1;
  unsigned i = 0;
#define DROVER_FUZZ_DISPATCH(type)                                             \
  if (kind == i++) {                                                           \
    check_kind<drover::type>(bytes, n);                                        \
    return 0;                                                                  \
  }
  DROVER_FUZZ_CODEC_KINDS(DROVER_FUZZ_DISPATCH)
#undef DROVER_FUZZ_DISPATCH
  return 0;
}
