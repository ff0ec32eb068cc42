-- As a browser calls `secured-activation serve`'s token endpoint: a new visitor (its own
-- sa_visitor cookie) and flow on every request, signed in as one user, so every request is a
-- first token request that mints. After `--`: the sa_user cookie the benchmark signed, and a
-- fresh hex nonce per run. The nonce matters: wrk never seeds math.random, so anything drawn
-- from it repeats in every run, and a repeated visitor is no longer a first request.
-- setup() runs in wrk's main state once per thread, before that thread's init(args).
local threads = 0
local counter = 0

function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end

function init(args)
  user = args[1]
  prefix = string.format("%s%02x", args[2], id)
end

function request()
  counter = counter + 1
  local visitor = string.format("%s%016x", prefix, counter)
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Cookie"] = "sa_visitor=" .. visitor .. "; sa_user=" .. user
  return wrk.format("POST", nil, nil, '{"flow":"f' .. visitor .. '"}')
end
