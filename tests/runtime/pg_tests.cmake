# PostgreSQL integration tests (paths relative to tests/). They need
# DROVER_PG_URL (scripts/test starts a private server and sets it) and fail
# without it.
set(DROVER_PG_TEST_SOURCES runtime/pg_writes_test.cpp
  runtime/pg_queries_test.cpp runtime/pg_failures_test.cpp runtime/pg_isolate_test.cpp
  runtime/pg_lease_test.cpp runtime/pg_share_test.cpp runtime/pg_permits_test.cpp
  runtime/pg_control_test.cpp
  nodes/lease_process_test.cpp)
