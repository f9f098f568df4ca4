-- validate.lua — what a document must look like before the engine accepts it.
--
-- One function per collection: validate(doc, ctx) returns true, or
-- false and a list of {field = ..., message = ...}. It runs on every create
-- and on the merged document of every update (ctx.previous is then the
-- stored document before the update). See docs/POLICIES.md.

-- Globals read once, when the file loads: inside the sandbox every global
-- (and every field of a shared table such as ts or math) is read through a
-- read-only view, a step that costs more than the rest of a simple check.
local type, ipairs, tostring = type, ipairs, tostring
local parse_time, math_type = ts.parse_time, math.type

local STATUS = { scheduled = true, in_progress = true, completed = true,
                 cancelled = true, no_show = true }
local MODALITY = { in_person = true, telehealth = true, group = true }

-- Allowed status changes on update (from -> set of to). Staying the same is
-- always allowed. completed and no_show are final; a cancellation can be
-- undone (cancelled -> scheduled) because rebooking the same slot is common.
local TRANSITIONS = {
  scheduled   = { in_progress = true, completed = true, cancelled = true, no_show = true },
  in_progress = { completed = true, cancelled = true },
  cancelled   = { scheduled = true },
  completed   = {},
  no_show     = {},
}

-- Sessions that do not hold the therapist's time.
local NOT_BLOCKING = { cancelled = true, no_show = true }

local MIN_DURATION, MAX_DURATION = 15, 240
local MAX_NOTES = 20000

local function keys(set)
  local out = {}
  for k in pairs(set) do out[#out + 1] = k end
  table.sort(out)
  return table.concat(out, "|")
end

local function nonempty_string(v)
  return type(v) == "string" and v ~= ""
end

-- Adds one error to a rule's list, making the list on the first error, and
-- returns it: `list = add(list, ...)`. Validation runs on every write, so a
-- rule should allocate nothing when the document is fine (no list, no
-- closure made per call).
local function add(list, field, message)
  list = list or {}
  list[#list + 1] = { field = field, message = message }
  return list
end

local REQUIRED_IDS = { "patient_id", "therapist_id" }

local function check_session(doc, ctx)
  local list

  if not nonempty_string(doc.patient_id) then list = add(list, "patient_id", "patient_id is required") end
  if not nonempty_string(doc.therapist_id) then list = add(list, "therapist_id", "therapist_id is required") end

  local start = parse_time(doc.scheduled_at)
  if doc.scheduled_at == nil then
    list = add(list, "scheduled_at", "scheduled_at is required")
  elseif not start then
    list = add(list, "scheduled_at", "scheduled_at must be an RFC 3339 time, e.g. 2026-03-02T09:00:00Z")
  end

  local d = doc.duration_min
  if math_type(d) ~= "integer" or d < MIN_DURATION or d > MAX_DURATION then
    list = add(list, "duration_min", ("duration_min must be a whole number of minutes from %d to %d")
      :format(MIN_DURATION, MAX_DURATION))
  end

  if not STATUS[doc.status] then
    list = add(list, "status", "status must be one of " .. keys(STATUS))
  end
  if not MODALITY[doc.modality] then
    list = add(list, "modality", "modality must be one of " .. keys(MODALITY))
  end
  if doc.room ~= nil and type(doc.room) ~= "string" then
    list = add(list, "room", "room must be text")
  end
  if doc.notes ~= nil and (type(doc.notes) ~= "string" or #doc.notes > MAX_NOTES) then
    list = add(list, "notes", ("notes must be text of at most %d bytes"):format(MAX_NOTES))
  end

  local prev = ctx.previous
  if prev then
    if prev.patient_id ~= nil and doc.patient_id ~= prev.patient_id then
      list = add(list, "patient_id", "patient_id cannot change; cancel and book a new session")
    end
    local allowed = TRANSITIONS[prev.status]
    if STATUS[doc.status] and allowed and doc.status ~= prev.status and not allowed[doc.status] then
      list = add(list, "status", ("status cannot change from %s to %s"):format(prev.status, doc.status))
    end
  end

  -- No overlapping sessions for one therapist, unless either is a group
  -- session; cancelled and no-show sessions do not count.
  if not list and doc.modality ~= "group" and not NOT_BLOCKING[doc.status] then
    local stop = start + d * 60000
    -- Only sessions that start less than MAX_DURATION before this one ends
    -- can overlap it; the time filter keeps the look-up cheap.
    local others = ctx.find("sessions", "therapist_id", doc.therapist_id,
      { time_field = "scheduled_at", from = start - MAX_DURATION * 60000, to = stop })
    for _, o in ipairs(others) do
      local o_start = parse_time(o.scheduled_at)
      if o.id ~= doc.id and o.modality ~= "group" and not NOT_BLOCKING[o.status]
         and o_start and math_type(o.duration_min) == "integer" then
        local o_stop = o_start + o.duration_min * 60000
        if start < o_stop and o_start < stop then
          list = add(list, "scheduled_at", ("therapist %s already has session %s at %s")
            :format(doc.therapist_id, tostring(o.id), o.scheduled_at))
          break
        end
      end
    end
  end

  if list then return false, list end
  return true
end

local CONSULT_STATUS = { draft = true, final = true, amended = true }
local SUMMARY_FIELDS = { "chief_complaint", "assessment", "plan", "recommendations" }

local function check_consultation(doc, ctx)
  local list
  for _, f in ipairs(REQUIRED_IDS) do
    if not nonempty_string(doc[f]) then list = add(list, f, f .. " is required") end
  end
  -- date: a calendar date (2026-03-02) or an RFC 3339 time.
  local date = doc.date
  if type(date) ~= "string" or not (parse_time(date)
      or (date:match("^%d%d%d%d%-%d%d%-%d%d$") and parse_time(date .. "T00:00:00Z"))) then
    list = add(list, "date", "date must be a date (YYYY-MM-DD) or an RFC 3339 time")
  end
  if doc.session_id ~= nil and not nonempty_string(doc.session_id) then
    list = add(list, "session_id", "session_id must be a session id")
  end
  local s = doc.summary
  if type(s) ~= "table" then
    list = add(list, "summary", "summary is required: {chief_complaint, assessment, plan, recommendations}")
  else
    for _, f in ipairs(SUMMARY_FIELDS) do
      if type(s[f]) ~= "string" then list = add(list, "summary." .. f, "summary." .. f .. " must be text") end
    end
  end
  if not CONSULT_STATUS[doc.status] then
    list = add(list, "status", "status must be one of " .. keys(CONSULT_STATUS))
  end
  local prev = ctx.previous
  if prev and prev.patient_id ~= nil and doc.patient_id ~= prev.patient_id then
    list = add(list, "patient_id", "patient_id cannot change")
  end
  if list then return false, list end
  return true
end

return {
  sessions = check_session,
  consultations = check_consultation,
}
