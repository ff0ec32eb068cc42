-- A new visitor and flow on every request: every request is a first token request that mints.
-- setup() runs in wrk's main state, once per thread, before that thread's init(args): it gives
-- each thread its own prefix. wrk never seeds math.random, so the same prefixes come back in
-- every run: the fresh nonce given after `--` keeps one run's visitors out of the next.
local counter = 0

function setup(thread)
  thread:set("prefix", tostring(math.random(1, 1000000000)))
end

function init(args)
  if args[1] then
    prefix = args[1] .. "-" .. (prefix or "p")
  end
end

function request()
  counter = counter + 1
  local id = (prefix or "p") .. "-" .. counter
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Visitor"] = "v" .. id
  return wrk.format("POST", nil, nil, '{"flow":"f' .. id .. '"}')
end
