-- A new visitor and flow on every request: every request is a first token request that mints.
-- setup() runs in wrk's main state, once per thread: it gives each thread its own prefix.
local counter = 0

function setup(thread)
  thread:set("prefix", tostring(math.random(1, 1000000000)))
end

function request()
  counter = counter + 1
  local id = (prefix or "p") .. "-" .. counter
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Visitor"] = "v" .. id
  return wrk.format("POST", nil, nil, '{"flow":"f' .. id .. '"}')
end
