-- Shape c: a range read (the URL carries ?limit=100).
-- wrk -s get_messages.lua <url of the queue>?limit=100 -- <application key>
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

function init(args)
   local key = args[1] or "bench-key"
   wrk.method = "GET"
   wrk.headers["Authorization"] = "Application " .. key
end
