# Project-wide helpers.

# drover_defaults(<target>): warnings and the shared precompiled header.
# Every target of the project's own code goes through this, so the flags and
# the PCH stay identical (a requirement for REUSE_FROM).
function(drover_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  if(NOT target STREQUAL "drover_pch")
    target_precompile_headers(${target} REUSE_FROM drover_pch)
  endif()
endfunction()

# The CAF headers are the bulk of every translation unit that touches actors.
# They are compiled once into this PCH and reused by every target; the list
# names the headers we use instead of caf/all.hpp.
add_library(drover_pch OBJECT "${CMAKE_CURRENT_LIST_DIR}/pch.cpp")
target_link_libraries(drover_pch PUBLIC CAF::core CAF::io CapnProto::capnp)
target_precompile_headers(drover_pch PRIVATE
  <caf/actor_system.hpp>
  <caf/actor_system_config.hpp>
  <caf/event_based_actor.hpp>
  <caf/typed_event_based_actor.hpp>
  <caf/scoped_actor.hpp>
  <caf/stateful_actor.hpp>
  <caf/send.hpp>
  <caf/binary_serializer.hpp>
  <caf/binary_deserializer.hpp>
  <capnp/message.h>
  <capnp/serialize.h>
  <string>
  <vector>
  <chrono>
  <functional>)
drover_defaults(drover_pch)
