set(DROVER_HANDLER_TEST_SOURCES runtime/builtin_handlers_exec_test.cpp
  runtime/builtin_handlers_control_test.cpp
  runtime/builtin_handlers_sleep_test.cpp
  runtime/exec_policy_test.cpp)
