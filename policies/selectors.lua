-- selectors.lua — named views served by `query`.
--
-- name = { collection = ..., where = function(doc, params, ctx) ... end,
--          order_by = {field, "asc"|"desc"}, limit = N, index = "field",
--          from = function(params, ctx) ... end, lower_bound = "param" }
-- With index = "f", the engine keeps an index on f and only shows `where` the
-- documents whose f equals params.f. params.now defaults to the current time;
-- params.limit may lower the limit. See docs/POLICIES.md.

-- Globals read once, at load (each read inside the sandbox costs a step
-- through a read-only view; where() runs for every candidate).
local type, parse_time, format_time = type, ts.parse_time, ts.format_time

local function day_of(time)
  -- The UTC calendar day of an RFC 3339 time, as "YYYY-MM-DD".
  local ms = parse_time(time)
  return ms and format_time(ms):sub(1, 10)
end

return {
  -- The therapist's next scheduled sessions: {therapist_id, now, limit}.
  upcoming = {
    collection = "sessions",
    index = "therapist_id",
    where = function(doc, params)
      return doc.status == "scheduled" and type(doc.scheduled_at) == "string"
        and doc.scheduled_at >= params.now
    end,
    order_by = { "scheduled_at", "asc" },
    -- Where to start in order_by order: nothing before params.now can match,
    -- so the engine starts its ordered walk there (see docs/POLICIES.md).
    from = function(params) return params.now end,
    -- where() only compares params.now as a lower bound on order_by, so
    -- one cached answer serves every now up to its first row's time
    -- (docs/CACHE.md).
    lower_bound = "now",
    limit = 20,
  },

  -- Every session of the therapist on the (UTC) day of params.now:
  -- {therapist_id, now?}.
  today = {
    collection = "sessions",
    index = "therapist_id",
    where = function(doc, params)
      return day_of(doc.scheduled_at) == day_of(params.now)
    end,
    order_by = { "scheduled_at", "asc" },
    limit = 100,
  },

  -- A patient's sessions, newest first: {patient_id}.
  by_patient = {
    collection = "sessions",
    index = "patient_id",
    order_by = { "scheduled_at", "desc" },
    limit = 100,
  },

  -- Completed sessions still waiting for notes (optionally one therapist's:
  -- {therapist_id?}).
  needs_notes = {
    collection = "sessions",
    where = function(doc, params)
      return doc.status == "completed"
        and (doc.notes == nil or not doc.notes:find("%S"))
        and (params.therapist_id == nil or doc.therapist_id == params.therapist_id)
    end,
    order_by = { "scheduled_at", "asc" },
    limit = 100,
  },

  -- A patient's consultations, newest first: {patient_id}.
  consultations_for_patient = {
    collection = "consultations",
    index = "patient_id",
    order_by = { "date", "desc" },
    limit = 50,
  },

  -- Patients with this phone number (patients may be read on demand:
  -- the engine then asks the Clinic API for phone = params.phone):
  -- {phone}.
  patients_by_phone = {
    collection = "patients",
    index = "phone",
    order_by = { "name", "asc" },
    limit = 10,
  },
}
