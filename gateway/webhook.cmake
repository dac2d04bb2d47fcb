# Sources of the webhook dispatcher and client, relative to gateway/
# (included by gateway/CMakeLists.txt into drover_gateway).
set(DROVER_WEBHOOK_SOURCES webhook.cpp webhook_dispatcher.cpp webhook_resume.cpp)
