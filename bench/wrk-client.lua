-- wrk script for bench/proxy.py, set through the environment (wrk takes one script):
--
-- BENCH_HEADS=varied  every request has its own path and its own X-Request-Id, as a
--                     stream of real clients would, so no proxy can reuse anything it
--                     worked out for an earlier head. The command line's -H headers stay.
-- BENCH_DELAY_MS=D    each connection waits D ms before each request: an offered rate of
--                     about connections * 1000 / (D + latency) requests/s, the same for
--                     every proxy measured, so neither runs saturated.
local varied = os.getenv("BENCH_HEADS") == "varied"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "")
local counter = 0

if varied then
  request = function()
    counter = counter + 1
    local headers = {}
    for name, value in pairs(wrk.headers) do
      headers[name] = value
    end
    headers["User-Agent"] = "edgestick-bench"
    headers["X-Request-Id"] = tostring(counter)
    return wrk.format("GET", "/item/" .. counter, headers)
  end
end

if delay_ms then
  delay = function()
    return delay_ms
  end
end
