-- wrk through a sidecar's outbound HTTP proxy: absolute-form requests for
-- the service named by TARGET (host:port), as an app in the mesh sends them.
local target = os.getenv("TARGET")
if target and target ~= "" then
  wrk.path = "http://" .. target .. "/"
  wrk.headers["Host"] = target
end
