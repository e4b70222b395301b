-- wrk script: 16 pipelined GET requests per write (HTTP/1.1 pipelining).
--   wrk -t1 -c64 -d10s --latency -s benchmarks/pipeline.lua http://127.0.0.1:PORT/
-- wrk counts every response, so Requests/sec is requests, not batches; the latency figures
-- are per request but include waiting behind the others of the batch.
-- The depth can be changed with `-- 32` after the URL.

local depth = 16

init = function(args)
   if args[1] then
      depth = tonumber(args[1])
   end
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, wrk.path)
   end
   req = table.concat(r)
end

request = function()
   return req
end
