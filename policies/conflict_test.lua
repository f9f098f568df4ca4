-- conflict_test.lua — conflict.lua and the default merge.
local f = require("fixtures")
local session, consultation = f.session, f.consultation

local SEP = "\n\n--- edited on another device ---\n\n"

test("disjoint edits are merged", function()
  local base = session()
  expect_conflict("sessions", base, session{ room = "B2" }, session{ duration_min = 60 },
    { merge = session{ room = "B2", duration_min = 60 } })
end)
test("both changed a field: the server wins", function()
  expect_conflict("sessions", session(), session{ room = "B2" }, session{ room = "C3" },
    { merge = session{ room = "C3" } })
end)
test("a local cancellation wins over a server status change", function()
  expect_conflict("sessions", session(), session{ status = "cancelled" },
    session{ status = "completed", room = "B2" },
    { merge = session{ status = "cancelled", room = "B2" } })
end)
test("a server cancellation wins over a local status change", function()
  expect_conflict("sessions", session(), session{ status = "in_progress" },
    session{ status = "cancelled" }, { merge = session{ status = "cancelled" } })
end)
test("notes edited on both sides are both kept", function()
  expect_conflict("sessions", session{ notes = "start" }, session{ notes = "mine" },
    session{ notes = "theirs" }, { merge = session{ notes = "theirs" .. SEP .. "mine" } })
end)
test("notes edited on one side only are taken from that side", function()
  expect_conflict("sessions", session{ notes = "start" }, session{ notes = "mine" },
    session{ notes = "start", room = "B2" }, { merge = session{ notes = "mine", room = "B2" } })
end)
test("identical edits are not duplicated", function()
  expect_conflict("sessions", session{ notes = "start" }, session{ notes = "same" },
    session{ notes = "same" }, { merge = session{ notes = "same" } })
end)
test("created locally (no base): the server wins on every field", function()
  expect_conflict("sessions", nil, session{ room = "B2" }, session{ room = "C3" },
    { merge = session{ room = "C3" } })
end)
test("consultations use the default merge, field by field inside summary", function()
  local base = consultation()
  local mine = consultation()
  mine.summary.plan = "new plan"
  local theirs = consultation{ status = "final" }
  theirs.summary.assessment = "moderate insomnia"
  local want = consultation{ status = "final" }
  want.summary.plan = "new plan"
  want.summary.assessment = "moderate insomnia"
  expect_conflict("consultations", base, mine, theirs, { merge = want })
end)
