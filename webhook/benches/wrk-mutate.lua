-- wrk script: POST an AdmissionReview to /mutate over keep-alive connections.
--   REVIEW=path/to/review.json   (default: webhook/tests/fixtures/deployment-pod.json)
--   DELAY_MS=n                   (optional: each connection waits n ms between requests,
--                                 which caps the rate at about connections * 1000 / n per second)
local path = os.getenv("REVIEW") or "webhook/tests/fixtures/deployment-pod.json"
local f = assert(io.open(path, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

local d = tonumber(os.getenv("DELAY_MS") or "0")
if d > 0 then
  function delay()
    return d
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "SUMMARY requests=%d seconds=%.1f rate=%.0f/s errors: connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format(
    "LATENCY_MS p50=%.3f p90=%.3f p99=%.3f p99.9=%.3f max=%.3f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000))
end
