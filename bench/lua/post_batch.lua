-- Shape b: a JSON batch of messages in one request.
-- wrk -s post_batch.lua <url of the queue> -- <application key> <messages> <body bytes each>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

function init(args)
   local key = args[1] or "bench-key"
   local count = tonumber(args[2] or "100")
   local size = tonumber(args[3] or "100")
   local text = "batched message body for the queuey benchmark "
   local body = string.sub(string.rep(text, math.ceil(size / #text)), 1, size)
   local entries = {}
   for i = 1, count do
      entries[i] = '{"body":"' .. body .. '"}'
   end
   wrk.method = "POST"
   wrk.body = '{"messages":[' .. table.concat(entries, ",") .. ']}'
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Application " .. key
end
