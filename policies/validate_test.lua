-- validate_test.lua — every rule in validate.lua, accepted and refused.
-- Run: therasync policy test policies/
local f = require("fixtures")
local session, consultation, NIL = f.session, f.consultation, f.NIL

-- sessions: required fields and shapes
test("a complete session is valid", function()
  expect_valid("sessions", session())
end)
test("patient_id and therapist_id are required", function()
  expect_invalid("sessions", session{ patient_id = NIL }, "patient_id")
  expect_invalid("sessions", session{ therapist_id = "" }, "therapist_id")
  expect_invalid("sessions", session{ therapist_id = 7 }, "therapist_id")
end)
test("scheduled_at must be RFC 3339", function()
  expect_invalid("sessions", session{ scheduled_at = NIL }, "scheduled_at")
  expect_invalid("sessions", session{ scheduled_at = "2026-03-02 9am" }, "scheduled_at")
  expect_invalid("sessions", session{ scheduled_at = "2026-13-02T09:00:00Z" }, "scheduled_at")
  expect_valid("sessions", session{ scheduled_at = "2026-03-02T09:00:00+01:00" })
end)
test("duration_min is a whole number from 15 to 240", function()
  expect_valid("sessions", session{ duration_min = 15 })
  expect_valid("sessions", session{ duration_min = 240 })
  expect_invalid("sessions", session{ duration_min = 14 }, "duration_min")
  expect_invalid("sessions", session{ duration_min = 241 }, "duration_min")
  expect_invalid("sessions", session{ duration_min = 50.5 }, "duration_min")
  expect_invalid("sessions", session{ duration_min = "50" }, "duration_min")
  expect_invalid("sessions", session{ duration_min = NIL }, "duration_min")
end)
test("status and modality are enums", function()
  for _, s in ipairs({ "scheduled", "in_progress", "completed", "cancelled", "no_show" }) do
    expect_valid("sessions", session{ status = s })
  end
  expect_invalid("sessions", session{ status = "done" }, "status")
  expect_invalid("sessions", session{ status = NIL }, "status")
  for _, m in ipairs({ "in_person", "telehealth", "group" }) do
    expect_valid("sessions", session{ modality = m })
  end
  expect_invalid("sessions", session{ modality = "phone" }, "modality")
end)
test("room and notes are text", function()
  expect_invalid("sessions", session{ room = 12 }, "room")
  expect_invalid("sessions", session{ notes = { "x" } }, "notes")
  expect_invalid("sessions", session{ notes = string.rep("x", 20001) }, "notes")
  expect_valid("sessions", session{ room = NIL, notes = NIL })
end)

-- sessions: status transitions on update (previous is the stored document)
test("allowed status transitions", function()
  local ok = {
    { "scheduled", "in_progress" }, { "scheduled", "completed" }, { "scheduled", "cancelled" },
    { "scheduled", "no_show" }, { "in_progress", "completed" }, { "in_progress", "cancelled" },
    { "cancelled", "scheduled" }, { "completed", "completed" },
  }
  for _, t in ipairs(ok) do
    expect_valid("sessions", session{ status = t[2] }, {}, session{ status = t[1] })
  end
end)
test("refused status transitions", function()
  local bad = {
    { "completed", "scheduled" }, { "completed", "cancelled" }, { "no_show", "scheduled" },
    { "in_progress", "scheduled" }, { "cancelled", "completed" }, { "no_show", "completed" },
  }
  for _, t in ipairs(bad) do
    expect_invalid("sessions", session{ status = t[2] }, "status", {}, session{ status = t[1] })
  end
end)
test("patient_id cannot change on update", function()
  expect_invalid("sessions", session{ patient_id = "pat-0002" }, "patient_id", {}, session())
  expect_valid("sessions", session{ therapist_id = "thr-002" }, {}, session())
end)

-- sessions: no overlapping sessions for one therapist
local other = session{ id = "s-2", scheduled_at = "2026-03-02T09:30:00Z", duration_min = 60 }
test("an overlapping session of the same therapist is refused", function()
  expect_invalid("sessions", session(), "scheduled_at", { other })
  -- ends exactly when the other starts: fine
  expect_valid("sessions", session{ scheduled_at = "2026-03-02T08:40:00Z" }, { other })
  -- starts exactly when the other ends: fine
  expect_valid("sessions", session{ scheduled_at = "2026-03-02T10:30:00Z" }, { other })
  -- a long session that started earlier still blocks
  local long = session{ id = "s-3", scheduled_at = "2026-03-02T06:00:00Z", duration_min = 240 }
  expect_invalid("sessions", session{ scheduled_at = "2026-03-02T09:59:00Z" }, "scheduled_at", { long })
end)
test("group sessions may overlap", function()
  expect_valid("sessions", session{ modality = "group" }, { other })
  expect_valid("sessions", session(), { session{ id = "s-2", modality = "group" } })
end)
test("cancelled and no-show sessions do not block", function()
  expect_valid("sessions", session(), { session{ id = "s-2", status = "cancelled" } })
  expect_valid("sessions", session(), { session{ id = "s-2", status = "no_show" } })
  expect_valid("sessions", session{ status = "cancelled" }, { other })
end)
test("a session does not overlap itself (updates)", function()
  expect_valid("sessions", session{ room = "B2" }, { session() }, session())
end)
test("other therapists' sessions do not count", function()
  expect_valid("sessions", session(), { session{ id = "s-2", therapist_id = "thr-002" } })
end)

-- consultations
test("a complete consultation is valid", function()
  expect_valid("consultations", consultation())
  expect_valid("consultations", consultation{ date = "2026-03-02T10:00:00Z", session_id = NIL })
end)
test("consultation required fields", function()
  expect_invalid("consultations", consultation{ patient_id = NIL }, "patient_id")
  expect_invalid("consultations", consultation{ therapist_id = NIL }, "therapist_id")
  expect_invalid("consultations", consultation{ date = "March 2nd" }, "date")
  expect_invalid("consultations", consultation{ date = "2026-02-30x" }, "date")
  expect_invalid("consultations", consultation{ status = "signed?" }, "status")
  expect_invalid("consultations", consultation{ session_id = 5 }, "session_id")
end)
test("consultation summary shape", function()
  expect_invalid("consultations", consultation{ summary = NIL }, "summary")
  expect_invalid("consultations", consultation{ summary = "fine" }, "summary")
  local s = consultation().summary
  s.plan = nil
  expect_invalid("consultations", consultation{ summary = s }, "summary.plan")
end)
test("consultation patient_id cannot change", function()
  expect_invalid("consultations", consultation{ patient_id = "pat-9" }, "patient_id", {}, consultation())
end)
