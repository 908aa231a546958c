-- wrk through a sidecar's outbound HTTP proxy: absolute-form requests for
-- the service named by TARGET (host:port), as an app in the mesh sends them.
-- BODY_FILE: POST this file's contents (the echo sends them back).
-- CLOSE=1: `Connection: close`, a new connection for every request.
local target = os.getenv("TARGET")
if target and target ~= "" then
  wrk.path = "http://" .. target .. "/"
  wrk.headers["Host"] = target
end
local body_file = os.getenv("BODY_FILE")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.method = "POST"
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = "application/octet-stream"
end
if os.getenv("CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end
