-- Shape a: one message per request, the whole body is the message.
-- wrk -s post_single.lua <url of the queue> -- <application key> <body bytes>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

function init(args)
   local key = args[1] or "bench-key"
   local size = tonumber(args[2] or "100")
   local text = "single message body for the queuey benchmark "
   wrk.method = "POST"
   wrk.body = string.sub(string.rep(text, math.ceil(size / #text)), 1, size)
   wrk.headers["Content-Type"] = "text/plain"
   wrk.headers["Authorization"] = "Application " .. key
end
