# Codec and type-ID tests, included by tests/CMakeLists.txt into the unit
# test executable (paths relative to tests/).
set(DROVER_RUNTIME_TEST_SOURCES
  runtime/codec_model_test.cpp
  runtime/codec_errors_test.cpp
  runtime/codec_job_api_test.cpp
  runtime/type_ids_test.cpp
  runtime/json_text_test.cpp
  runtime/json_strict_test.cpp
  runtime/url_test.cpp
  runtime/thread_cache_test.cpp
  runtime/log_test.cpp
  runtime/backoff_test.cpp
  runtime/partition_test.cpp
  runtime/share_keys_test.cpp
  runtime/partition_map_test.cpp
  runtime/view_merge_test.cpp
  runtime/partition_epochs_test.cpp
  runtime/client_routes_test.cpp
  runtime/worker_figures_test.cpp
  runtime/typed_forward_test.cpp
  runtime/queue_figures_test.cpp
)
