--- Ghost text: draws a suggestion with extmarks, without changing the buffer.
---
--- The first line goes at the cursor: inline virtual text on Neovim >= 0.10; on older versions
--- (0.7 .. 0.9 have no inline virtual text) an overlay placed at the cursor's screen column that
--- shows the suggestion followed by the rest of the real line, so it reads as an insertion.
--- Further lines are virtual lines below the cursor line. One extmark per buffer, in our namespace.
local text = require("dllm.text")

local M = {}

M.ns = vim.api.nvim_create_namespace("dllm_ghost")
local has_inline = vim.fn.has("nvim-0.10") == 1

--- Draw `suggestion` at (row, col) (0-based row, byte column) in `bufnr`, replacing any ghost text.
--- `hl` is the highlight group of the suggestion.
function M.draw(bufnr, row, col, suggestion, hl)
  M.clear(bufnr)
  if suggestion == "" then
    return
  end
  local lines = text.split_lines(suggestion)
  local opts = { hl_mode = "combine", priority = 200 }
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, { { lines[i], hl } })
    end
  end
  if lines[1] ~= "" then
    if has_inline then
      opts.virt_text = { { lines[1], hl } }
      opts.virt_text_pos = "inline"
    else
      local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
      local after = string.sub(line, col + 1)
      local win = vim.fn.bufwinid(bufnr)
      local screen_col = vim.fn.strdisplaywidth(string.sub(line, 1, col))
      if win ~= -1 then
        local view = vim.api.nvim_win_call(win, vim.fn.winsaveview)
        screen_col = screen_col - (view.leftcol or 0)
      end
      opts.virt_text = { { lines[1], hl }, { after, "Normal" } }
      opts.virt_text_win_col = math.max(screen_col, 0)
    end
  end
  if opts.virt_text or opts.virt_lines then
    vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
  end
end

function M.clear(bufnr)
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- The ghost text currently drawn in `bufnr`, rebuilt from its extmarks (for tests and statuslines):
--- { row, col, first = string, more = { string, ... } } or nil.
function M.read(bufnr)
  local marks = vim.api.nvim_buf_get_extmarks(bufnr, M.ns, 0, -1, { details = true })
  local mark = marks[1]
  if not mark then
    return nil
  end
  local details = mark[4]
  local first = details.virt_text and details.virt_text[1][1] or ""
  local more = {}
  for _, chunks in ipairs(details.virt_lines or {}) do
    table.insert(more, chunks[1][1])
  end
  return { row = mark[2], col = mark[3], first = first, more = more }
end

return M
