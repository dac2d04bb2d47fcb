# Actor tests, relative to tests/. Each actor adds its *_test.cpp.
set(DROVER_ACTOR_TEST_SOURCES actors/progress_publisher_updates_test.cpp
  actors/progress_publisher_subscribers_test.cpp
  actors/handover_board_test.cpp
  actors/local_client_test.cpp)
