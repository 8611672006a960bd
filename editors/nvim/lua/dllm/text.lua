--- Pure text helpers of the dllm plugin: splitting a suggestion for partial accepts, and merging
--- streamed updates. No editor state is touched here, so these are unit-tested on their own.
---
--- A suggestion belongs to one request (uri, version, position). The server streams
--- `dllm/inlineCompletionUpdate` whose `stable` text only grows; the response carries the final,
--- post-processed text. The shown text is the final text once it is there, else the longest
--- `stable` seen: an update counts only if it is for the same request and strictly extends it.
local M = {}

--- "a\nb\n" -> { "a", "b", "" }
function M.split_lines(text)
  local lines = {}
  local start = 1
  while true do
    local nl = string.find(text, "\n", start, true)
    if not nl then
      table.insert(lines, string.sub(text, start))
      return lines
    end
    table.insert(lines, string.sub(text, start, nl - 1))
    start = nl + 1
  end
end

local WORD = "[%w_\128-\255]+"   -- identifier characters; bytes >= 0x80 keep UTF-8 sequences whole
local SYMBOLS = "[^%w_%s\128-\255]+"

--- The part of `text` that "accept next word" takes: leading blanks plus one word (or one run of
--- symbols); at a line break, the break plus the next line's indentation.
function M.next_word(text)
  if text == "" then
    return ""
  end
  local chunk = string.match(text, "^\r?\n[ \t]*")
    or string.match(text, "^[ \t]*" .. WORD)
    or string.match(text, "^[ \t]*" .. SYMBOLS)
    or string.match(text, "^[ \t]+")
  return chunk or string.sub(text, 1, 1)
end

--- The part that "accept next line" takes: the rest of the current line; if the suggestion starts
--- with a line break, the break and the whole next line.
function M.next_line(text)
  local rest = string.match(text, "^\n([^\n]*)")
  if rest then
    return "\n" .. rest
  end
  return string.match(text, "^[^\n]*")
end

--- Do two request keys {uri, version, position} name the same request? A missing version matches.
function M.same_key(a, b)
  return a.uri == b.uri
    and a.position.line == b.position.line
    and a.position.character == b.position.character
    and (a.version == nil or b.version == nil or a.version == b.version)
end

--- Fold an update into `stable` (the longest stable text seen). Returns the new stable text, or
--- nil when the update changes nothing shown (other request, not longer, or not an extension).
function M.merge_stable(stable, key, update)
  if type(update) ~= "table" or type(update.stable) ~= "string" or type(update.position) ~= "table" then
    return nil
  end
  if not M.same_key(key, update) then
    return nil
  end
  if #update.stable > #stable and string.sub(update.stable, 1, #stable) == stable then
    return update.stable
  end
  return nil
end

--- The items of a `textDocument/inlineCompletion` result (InlineCompletionItem[] or
--- InlineCompletionList): a list of { text = string, range = Range|nil }, empty texts dropped.
function M.items(result)
  local out = {}
  if type(result) ~= "table" then
    return out
  end
  local list = result.items or result
  for _, item in ipairs(list) do
    local insert = item.insertText
    local text = type(insert) == "table" and insert.value or insert
    if type(text) == "string" and text ~= "" then
      local range = item.range
      if range == vim.NIL then
        range = nil
      end
      table.insert(out, { text = text, range = range })
    end
  end
  return out
end

--- The first item of a result, or nil when there is none.
function M.first_item(result)
  return M.items(result)[1]
end

--- Number of code points in a UTF-8 string (what the server counts as acceptedLength).
function M.char_count(text)
  local _, count = string.gsub(text, "[^\128-\191]", "")
  return count
end

return M
