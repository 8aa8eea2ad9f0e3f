-- wrk script: each request posts one event for one of USERS users in turn (a fixed set of
-- concurrent users), items drawn from 1..ITEMS (the dataset's integer tokens).
local users = tonumber(os.getenv("LOAD_USERS") or "64")
local items = tonumber(os.getenv("LOAD_ITEMS") or "1000")
local counter = 0

function setup(thread)
  thread:set("offset", math.random(0, 1000000))
end

function request()
  counter = counter + 1
  local user = (counter + offset) % users
  local item = 1 + (counter * 7919 + offset) % items
  return wrk.format("POST", "/v1/users/load-" .. user .. "/events", { ["Content-Type"] = "application/json" },
    '{"items": [' .. item .. ']}')
end

function response(status, headers, body)
  if status ~= 200 then error("status " .. status .. ": " .. body) end
end
