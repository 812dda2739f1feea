-- Stops the thread after N responses; optional PUT of $BODY.
local n = 0
local max = tonumber(os.getenv("N") or "1000")
if os.getenv("BODY") then
  wrk.method = "PUT"
  local f = io.open(os.getenv("BODY"), "rb"); wrk.body = f:read("*a"); f:close()
end
response = function(status, headers, body)
  n = n + 1
  if n >= max then wrk.thread:stop() end
end
