-- tests/fuzz/fuzz_lua.c: the validator refuses every document with the
-- table it was given, written out in one canonical line (keys sorted,
-- each number with its Lua subtype), so that the harness can compare the
-- tables made of the same document from its text and from its tree.
local function dump(v)
  local t = type(v)
  if t == "table" then
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b)
      if type(a) ~= type(b) then return type(a) < type(b) end
      return a < b
    end)
    local out = {}
    for i, k in ipairs(keys) do out[i] = dump(k) .. "=" .. dump(v[k]) end
    return "{" .. table.concat(out, ",") .. "}"
  elseif t == "number" then
    if math.type(v) == "integer" then return "integer:" .. string.format("%d", v) end
    return "float:" .. string.format("%.17g", v)
  elseif t == "string" then
    return string.format("%q", v)
  end
  return tostring(v)
end

return {
  fuzz = function(doc) return false, { { field = "doc", message = dump(doc) } } end,
}
