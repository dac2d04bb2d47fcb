-- wrk script: POST /api/jobs with a small no-op-ish job (sleep 0 ms, no
-- progress). Counts non-202 answers so a run that "succeeds" on errors is
-- visible. Usage: wrk -s benchmarks/http/submit.lua --latency http://127.0.0.1:8080
wrk.method = "POST"
wrk.path = "/api/jobs"
wrk.body = '{"type":"sleep","input":{"ms":0,"steps":0}}'
wrk.headers["Content-Type"] = "application/json"
if os.getenv("DROVER_KEY") then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("DROVER_KEY")
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
end

function response(status, headers, body)
  if status ~= 202 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
  end
  io.write(string.format(
    '{"bench":"http_submit","requests":%d,"non_202":%d,"seconds":%.2f,' ..
    '"requests_per_second":%.0f,"latency_ms_p50":%.2f,"latency_ms_p90":%.2f,' ..
    '"latency_ms_p99":%.2f,"latency_ms_max":%.2f,"socket_errors":%d}\n',
    summary.requests, total_bad, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout))
end
