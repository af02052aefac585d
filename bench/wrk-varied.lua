-- wrk script for bench/proxy.py --heads varied: every request has its own path and its
-- own X-Request-Id, as a stream of real clients would, so no proxy can reuse anything it
-- worked out for an earlier head. The command line's -H headers are kept.
local counter = 0

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
