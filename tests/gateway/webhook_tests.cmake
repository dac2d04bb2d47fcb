# Webhook tests (gateway/webhook*.cpp), included by tests/CMakeLists.txt
# (paths relative to tests/). Their own executable: they need
# drover_gateway, real sockets and threads.
add_executable(drover_webhook_tests gateway/webhook_test.cpp
                                    gateway/webhook_resume_test.cpp)
target_link_libraries(drover_webhook_tests PRIVATE drover_gateway
                      Catch2::Catch2WithMain)
target_include_directories(drover_webhook_tests PRIVATE
                           "${CMAKE_CURRENT_SOURCE_DIR}")
drover_defaults(drover_webhook_tests)
catch_discover_tests(drover_webhook_tests TEST_PREFIX "webhook: "
  EXTRA_ARGS --warn NoTests
  PROPERTIES TIMEOUT 120)

# The dispatcher on the PostgreSQL store (DROVER_PG_URL, as the other [pg]
# tests).
add_executable(drover_webhook_pg_tests gateway/webhook_pg_test.cpp)
target_link_libraries(drover_webhook_pg_tests PRIVATE drover_gateway
                      Catch2::Catch2WithMain)
target_include_directories(drover_webhook_pg_tests PRIVATE
                           "${CMAKE_CURRENT_SOURCE_DIR}")
drover_defaults(drover_webhook_pg_tests)
catch_discover_tests(drover_webhook_pg_tests TEST_PREFIX "pg: webhook: "
  EXTRA_ARGS --warn NoTests
  PROPERTIES TIMEOUT 120)
