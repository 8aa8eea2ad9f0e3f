-- wrk script: each request asks for the top 10 (seen items excluded) of one of USERS users in turn.
local users = tonumber(os.getenv("LOAD_USERS") or "64")
local counter = 0

function setup(thread)
  thread:set("offset", math.random(0, 1000000))
end

function request()
  counter = counter + 1
  return wrk.format("GET", "/v1/users/load-" .. ((counter + offset) % users) .. "/recommendations?k=10&exclude_seen=true")
end

function response(status, headers, body)
  if status ~= 200 then error("status " .. status .. ": " .. body) end
end
