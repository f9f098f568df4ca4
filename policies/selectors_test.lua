-- selectors_test.lua — every selector in selectors.lua.
local f = require("fixtures")
local session, consultation = f.session, f.consultation

local docs = {
  session{ id = "past", scheduled_at = "2026-03-01T09:00:00Z" },
  session{ id = "a", scheduled_at = "2026-03-02T09:00:00Z" },
  session{ id = "b", scheduled_at = "2026-03-02T11:00:00Z" },
  session{ id = "c", scheduled_at = "2026-03-03T09:00:00Z" },
  session{ id = "cancelled", scheduled_at = "2026-03-02T13:00:00Z", status = "cancelled" },
  session{ id = "other-thr", therapist_id = "thr-002", scheduled_at = "2026-03-02T10:00:00Z" },
  session{ id = "done", scheduled_at = "2026-02-20T09:00:00Z", status = "completed", notes = "" },
  session{ id = "done-notes", scheduled_at = "2026-02-21T09:00:00Z", status = "completed",
           notes = "went well" },
  session{ id = "done-2", therapist_id = "thr-002", scheduled_at = "2026-02-19T09:00:00Z",
           status = "completed", notes = "  " },
  session{ id = "other-pat", patient_id = "pat-0002", scheduled_at = "2026-03-05T09:00:00Z" },
}

test("upcoming: scheduled, from now on, soonest first", function()
  expect_select("upcoming", { therapist_id = "thr-001", now = "2026-03-02T00:00:00.000Z" },
    docs, { "a", "b", "c", "other-pat" })
end)
test("upcoming: params.limit lowers the limit", function()
  expect_select("upcoming", { therapist_id = "thr-001", now = "2026-03-02T00:00:00.000Z", limit = 2 },
    docs, { "a", "b" })
end)
test("upcoming: now defaults to the current time", function()
  set_now("2026-03-02T10:00:00Z")
  expect_select("upcoming", { therapist_id = "thr-001" }, docs, { "b", "c", "other-pat" })
end)
test("today: the therapist's sessions on now's day", function()
  expect_select("today", { therapist_id = "thr-001", now = "2026-03-02T07:00:00Z" },
    docs, { "a", "b", "cancelled" })
  set_now("2026-03-03T12:00:00Z")
  expect_select("today", { therapist_id = "thr-001" }, docs, { "c" })
end)
test("by_patient: newest first", function()
  expect_select("by_patient", { patient_id = "pat-0002" }, docs, { "other-pat" })
  expect_select("by_patient", { patient_id = "pat-0001", limit = 3 }, docs,
    { "c", "cancelled", "b" })
end)
test("needs_notes: completed without notes", function()
  expect_select("needs_notes", {}, docs, { "done-2", "done" })
  expect_select("needs_notes", { therapist_id = "thr-001" }, docs, { "done" })
end)
test("consultations_for_patient: newest first", function()
  local cs = {
    consultation{ id = "c1", date = "2026-01-10" },
    consultation{ id = "c2", date = "2026-02-10" },
    consultation{ id = "c3", patient_id = "pat-0009", date = "2026-02-11" },
  }
  expect_select("consultations_for_patient", { patient_id = "pat-0001" }, cs, { "c2", "c1" })
end)
