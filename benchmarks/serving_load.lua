-- wrk script of benchmarks/serving.py: recommendations (k=10) for a random customer of FEDSHOP_CUSTOMERS per
-- request, with the bearer token FEDSHOP_TOKEN; prints one JSON line. wrk counts every answer that is not 2xx
-- or 3xx (summary.errors.status) without reading bodies here, so the load tool stays light.
math.randomseed(tonumber(os.getenv("FEDSHOP_SEED") or "1"))
local customers = {}
for line in io.lines(os.getenv("FEDSHOP_CUSTOMERS")) do customers[#customers + 1] = line end
local header = {["Authorization"] = "Bearer " .. os.getenv("FEDSHOP_TOKEN")}

request = function()
  return wrk.format("GET", "/customers/" .. customers[math.random(#customers)] .. "/recommendations?k=10", header)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format('WRK-RESULT {"requests": %d, "not_ok": %d, "socket_errors": %d, "duration_us": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d, "max_us": %d}\n', summary.requests, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
