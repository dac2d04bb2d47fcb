# Sources of the HTTP gateway, relative to gateway/.
set(DROVER_GATEWAY_SOURCES http_api.cpp http_api_jobs.cpp http_api_admin.cpp
  http_api_errors.cpp auth.cpp server.cpp server_websocket.cpp gateway.cpp
  gateway_jobs.cpp gateway_admin.cpp gateway_stream.cpp
  browser_policy.cpp stream_token.cpp client_door.cpp metrics.cpp
  metrics_endpoint.cpp local_client.cpp job_stream.cpp)
