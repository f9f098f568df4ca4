-- wrk script: durable creates against clinic-api, each with its own
-- Idempotency-Key (as the engine sends them). TOKEN comes from the env.
local counter = 0
local nthreads = 0

-- Runs in the main Lua state; "tid" becomes a global of each thread's state.
function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
end

function init(args)
  token = os.getenv("TOKEN")
  body = '{"patient_id":"p-0042","therapist_id":"t-007","scheduled_at":"2026-03-02T09:00:00Z",' ..
         '"duration_min":50,"status":"scheduled","modality":"in_person","room":"A-12",' ..
         '"notes":"Follow-up on sleep hygiene; review homework from last week and adjust plan as agreed with patient."}'
end

function request()
  counter = counter + 1
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "wrk-" .. tid .. "-" .. counter,
  }
  return wrk.format("POST", "/v1/sessions", headers, body)
end

function response(status, headers, body)
  if status ~= 201 then
    errors = (errors or 0) + 1
  end
end
