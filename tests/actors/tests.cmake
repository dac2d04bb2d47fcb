# Actor tests, relative to tests/. Each actor adds its *_test.cpp.
set(DROVER_ACTOR_TEST_SOURCES actors/progress_publisher_test.cpp
  actors/handover_board_test.cpp
  actors/local_client_test.cpp)
