# Browser rules and stream tokens (gateway/browser_policy.hpp,
# gateway/stream_token.hpp): unit tests and process tests against a real
# drover-node in one executable (it links the gateway library to mint test
# tokens), plus the headless Chromium test (tests/browser/), which runs a
# real browser against a real node. Included from tests/CMakeLists.txt.
add_executable(drover_browser_tests
  gateway/browser_policy_test.cpp
  nodes/browser_security_test.cpp
)
target_link_libraries(drover_browser_tests PRIVATE drover_gateway Boost::boost
  Threads::Threads Catch2::Catch2WithMain)
target_include_directories(drover_browser_tests PRIVATE
  "${CMAKE_CURRENT_SOURCE_DIR}")
target_compile_definitions(drover_browser_tests PRIVATE
  DROVER_NODE_BIN="$<TARGET_FILE:drover-node>")
add_dependencies(drover_browser_tests drover-node)
drover_defaults(drover_browser_tests)
catch_discover_tests(drover_browser_tests TEST_PREFIX "browser: "
  EXTRA_ARGS --warn NoTests
  PROPERTIES TIMEOUT 120)

# Debian's chromium driven by playwright-core (tests/browser/package.json;
# scripts/test runs `npm ci` there). A missing node, package or browser
# fails the test: it never skips.
find_program(DROVER_NODEJS node)
# (The name is one word: CTest writes it unquoted into its test file.)
add_test(NAME browser_chromium_allowed_origin
  COMMAND "${DROVER_NODEJS}" "${CMAKE_CURRENT_SOURCE_DIR}/browser/browser_test.mjs"
          "$<TARGET_FILE:drover-node>"
  WORKING_DIRECTORY "${CMAKE_CURRENT_SOURCE_DIR}/browser")
set_tests_properties(browser_chromium_allowed_origin PROPERTIES TIMEOUT 180)
