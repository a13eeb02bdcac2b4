-- bench/http's xffmany job: every request with the next X-Forwarded-For address of a list.
--   wrk ... -s xff.lua URL -- ADDRESSES_FILE     (one address a line; bench/http writes it)
-- The requests are formatted once, in init(); request() only hands out the next one, so
-- that wrk's own cost stays that of a fixed request. The list is cycled.
local requests = {}
local next_one = 0

function init(args)
  for address in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format(nil, nil, {["X-Forwarded-For"] = address})
  end
  assert(#requests > 0, "no addresses in " .. args[1])
end

function request()
  next_one = next_one % #requests + 1
  return requests[next_one]
end
