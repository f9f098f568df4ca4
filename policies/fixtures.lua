-- fixtures.lua — sample documents for the *_test.lua files.
-- session{...} / consultation{...} return a fresh valid document with the
-- given fields replaced (use fixtures.NIL to remove a field).
local M = {}

M.NIL = {}

local function with(defaults, overrides)
  local doc = {}
  for k, v in pairs(defaults) do doc[k] = v end
  for k, v in pairs(overrides or {}) do
    if v == M.NIL then doc[k] = nil else doc[k] = v end
  end
  return doc
end

function M.session(overrides)
  return with({
    id = "s-1",
    patient_id = "pat-0001",
    therapist_id = "thr-001",
    scheduled_at = "2026-03-02T09:00:00.000Z",
    duration_min = 50,
    status = "scheduled",
    modality = "in_person",
    room = "A1",
    notes = "",
  }, overrides)
end

function M.consultation(overrides)
  return with({
    id = "c-1",
    patient_id = "pat-0001",
    therapist_id = "thr-001",
    session_id = "s-1",
    date = "2026-03-02",
    summary = {
      chief_complaint = "poor sleep",
      assessment = "mild insomnia",
      plan = "sleep hygiene, review in 2 weeks",
      recommendations = "keep a sleep diary",
    },
    status = "draft",
  }, overrides)
end

return M
