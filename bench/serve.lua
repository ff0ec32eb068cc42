-- As a browser calls `secured-activation serve`'s token endpoint: a new visitor (its own
-- sa_visitor cookie) and flow on every request, signed in as one user (the sa_user cookie the
-- benchmark signed, given after `--`), so every request is a first token request that mints.
-- setup() runs in wrk's main state, once per thread: it gives each thread its own prefix.
local counter = 0

function setup(thread)
  thread:set("prefix", math.random(1, 2147483647))
end

function init(args)
  user = args[1]
end

function request()
  counter = counter + 1
  local visitor = string.format("%016x%016x", prefix or 0, counter)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Cookie"] = "sa_visitor=" .. visitor .. "; sa_user=" .. user
  return wrk.format("POST", nil, nil, '{"flow":"f' .. visitor .. '"}')
end
