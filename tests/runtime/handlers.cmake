set(DROVER_HANDLER_TEST_SOURCES runtime/builtin_handlers_test.cpp
  runtime/exec_policy_test.cpp)
