-- conflict.lua — what to do when a local change meets a newer server version.
--
-- One function per collection: resolve(base, mine, theirs, ctx) returns
-- "theirs", "mine", {merge = doc} or {reject = "reason"}. base is the last
-- synced version the local change was made on (nil if it was created
-- locally). A collection with no entry gets the default merge: field by
-- field, a side that did not change a field yields to the side that did, and
-- where both changed it the server (theirs) wins. ctx.merge(base, mine,
-- theirs) gives that default merge as a table to adjust. See docs/POLICIES.md.

local DEFAULT_SEPARATOR = "\n\n--- edited on another device ---\n\n"

local function changed(base, doc, field)
  return doc[field] ~= (base and base[field])
end

local function sessions(base, mine, theirs, ctx)
  local merged = ctx.merge(base, mine, theirs)

  -- A cancellation wins over any other status change, whichever side made it.
  if (mine.status == "cancelled" and changed(base, mine, "status"))
     or (theirs.status == "cancelled" and changed(base, theirs, "status")) then
    merged.status = "cancelled"
  end

  -- Notes edited on both sides: keep both, the server's first.
  if type(mine.notes) == "string" and type(theirs.notes) == "string"
     and changed(base, mine, "notes") and changed(base, theirs, "notes")
     and mine.notes ~= theirs.notes then
    local sep = ctx.config.notes_separator or DEFAULT_SEPARATOR
    merged.notes = theirs.notes .. sep .. mine.notes
  end

  return { merge = merged }
end

return {
  sessions = sessions,
}
