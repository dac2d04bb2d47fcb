-- wrk script: the same output format for a plain GET (the reference run
-- against /healthz: the gateway's HTTP ceiling without the node behind it).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad = 0 end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local total_bad = 0
  for _, t in ipairs(threads) do total_bad = total_bad + t:get("bad") end
  io.write(string.format(
    '{"bench":"http_get","requests":%d,"non_200":%d,"seconds":%.2f,' ..
    '"requests_per_second":%.0f,"latency_ms_p50":%.2f,"latency_ms_p90":%.2f,' ..
    '"latency_ms_p99":%.2f,"latency_ms_max":%.2f}\n',
    summary.requests, total_bad, summary.duration / 1e6,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
