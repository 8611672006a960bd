-- Unit tests of editors/nvim/lua/dllm/text.lua (pure helpers), run by test_nvim.py in nvim --headless.
local text = require("dllm.text")
local failures = 0

local function eq(got, want, what)
  if not vim.deep_equal(got, want) then
    failures = failures + 1
    io.stderr:write(string.format("FAIL %s: got %s, want %s\n", what, vim.inspect(got), vim.inspect(want)))
  end
end

eq(text.split_lines("a\nb\n"), { "a", "b", "" }, "split_lines keeps the empty tail")
eq(text.split_lines("one"), { "one" }, "split_lines single")

eq(text.next_word("total = 1"), "total", "word")
eq(text.next_word(" = add(a)"), " =", "blank + symbols")
eq(text.next_word("(a, b)"), "(", "one symbol run")
eq(text.next_word("\n    return x"), "\n    ", "line break + indentation")
eq(text.next_word("  "), "  ", "only blanks")
eq(text.next_word("café_x + 1"), "café_x", "UTF-8 stays whole inside a word")
eq(text.next_word(""), "", "empty")

eq(text.next_line("x = 1\n    y"), "x = 1", "rest of the line")
eq(text.next_line("\n    return y\nz"), "\n    return y", "break + next line")
eq(text.next_line("no newline"), "no newline", "whole single line")

local key = { uri = "file:///a.py", version = 3, position = { line = 1, character = 4 } }
local function upd(stable, over)
  return vim.tbl_extend("force", { uri = key.uri, version = 3, position = key.position, stable = stable,
                                   draft = stable, done = false }, over or {})
end
eq(text.merge_stable("", key, upd("ret")), "ret", "first stable text")
eq(text.merge_stable("ret", key, upd("return")), "return", "grows")
eq(text.merge_stable("return", key, upd("ret")), nil, "a shorter (reordered) update is ignored")
eq(text.merge_stable("return", key, upd("return")), nil, "the same text changes nothing")
eq(text.merge_stable("return", key, upd("yield xx")), nil, "a diverging update is ignored")
eq(text.merge_stable("", key, upd("x", { version = 2 })), nil, "other version")
eq(text.merge_stable("", key, upd("x", { position = { line = 1, character = 5 } })), nil, "other position")
eq(text.merge_stable("", key, upd("x", { uri = "file:///b.py" })), nil, "other document")
eq(text.merge_stable("", key, vim.NIL), nil, "garbage params")

eq(text.first_item({ items = { { insertText = "" }, { insertText = "a" } } }), { text = "a" }, "list, empty skipped")
eq(text.first_item({ { insertText = { kind = "snippet", value = "b" }, range = vim.NIL } }), { text = "b" }, "array, StringValue")
eq(text.first_item(vim.NIL), nil, "null result")
eq(text.first_item({ items = {} }), nil, "no items")

eq(text.char_count("a🎉é"), 3, "code points")

if failures > 0 then
  io.stderr:write(failures .. " failures\n")
  vim.cmd("cq")
else
  io.stderr:write("text helpers: all passed\n")
  vim.cmd("qa!")
end
