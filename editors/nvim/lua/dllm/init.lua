--- dllm.nvim: inline suggestions from dllm-lsp (a diffusion language model) that grow in place.
---
--- Design. One built-in LSP client runs `dllm-lsp --stdio` for every file buffer. A suggestion is
--- one `textDocument/inlineCompletion` request at the cursor; while the model refines it the server
--- sends `dllm/inlineCompletionUpdate` notifications and the ghost text (ghost.lua) is redrawn with
--- the longer `stable` text; the response replaces it with the final text. Typing, moving away or
--- leaving insert mode dismisses it (and typing asks again, debounced). Accept all / next word /
--- next line insert text with nvim_buf_set_text, so auto-indent never touches it; after a partial
--- accept the rest stays shown. When a suggestion ends, `dllm/didShowCompletion` and
--- `dllm/didAcceptCompletion` tell the server (which only keeps local counts). A cursor moved in
--- normal mode, or insert mode entered, sends `dllm/cursor`, so the server computes the context
--- there while the user reads (it waits for the cursor to rest), before the first key.
---
--- When the server cannot start (the command is not on PATH, it exits with code N), the status
--- turns "error" with the reason and the last line of the server's stderr, `:DllmStatus` prints
--- it and vim.notify says it once, instead of "starting" forever.
---
--- Works on Neovim 0.7.2 and later (no newer API without a feature check). With
--- `builtin = true` on Neovim >= 0.12, `vim.lsp.inline_completion` draws instead (no streaming).
local ghost = require("dllm.ghost")
local text = require("dllm.text")

local api = vim.api
local M = {}

local defaults = {
  cmd = { "dllm-lsp", "--stdio" },
  init_options = {},          -- server settings, camelCase: { model = "default", threshold = 0.9, ... }
  filetypes = nil,            -- nil: every file buffer; or a list of filetypes
  root_dir = nil,             -- nil: the current directory
  auto_trigger = true,        -- ask after typing in insert mode (else only on keys.trigger)
  debounce_ms = 30,
  hl_group = "DllmGhost",     -- linked to Comment unless you define it
  keys = {                    -- insert-mode keys; false disables one
    accept = "<Tab>",
    accept_word = "<M-Right>",
    accept_line = "<M-Down>",
    dismiss = "<C-]>",
    trigger = "<M-\\>",
    next = "<M-]>",           -- the next of the suggestions (asks the server for its alternatives first)
    prev = "<M-[>",
  },
  builtin = false,            -- Neovim >= 0.12: use vim.lsp.inline_completion instead of our ghost text
  capture_stderr = true,      -- keep the server's stderr in a temp file, to show its last line if it exits
}

M.config = vim.deepcopy(defaults)

-- plugin state: one client, at most one suggestion (there is one cursor)
local state = {
  client_id = nil,
  status = { state = "starting", message = "" },
  suggestion = nil,   -- see new_suggestion()
  own_tick = nil,     -- changedtick after our own edit (an accept), which must not dismiss
  timer = nil,
}

local has_011 = vim.fn.has("nvim-0.11") == 1

-- client.request / client:request (the method form is the only one from 0.11 on)
local function client_call(client, name, ...)
  if has_011 then
    return client[name](client, ...)
  end
  return client[name](...)
end

local function get_client()
  if not state.client_id then
    return nil
  end
  local client = vim.lsp.get_client_by_id(state.client_id)
  if client and client_call(client, "is_stopped") then
    return nil
  end
  return client
end

local function notify_server(method, params)
  local client = get_client()
  if client then
    client_call(client, "notify", method, params)
  end
end

local function fire(pattern)
  api.nvim_exec_autocmds("User", { pattern = pattern, modeline = false })
end

local function buf_version(bufnr)
  local versions = vim.lsp.util.buf_versions
  return (versions and versions[bufnr]) or api.nvim_buf_get_changedtick(bufnr)
end

local function language_enabled(filetype)
  local table_ = M.config.init_options.enabledLanguages
  if type(table_) ~= "table" then
    return true
  end
  if type(table_[filetype]) == "boolean" then
    return table_[filetype]
  end
  if type(table_["*"]) == "boolean" then
    return table_["*"]
  end
  return true
end

local function in_insert_mode()
  return api.nvim_get_mode().mode:sub(1, 1) == "i"
end

-- ---------------------------------------------------------------- suggestions

--- What is shown: the final text once the answer is in, else the longest stable text.
local function shown_text(s)
  return s.final or s.stable
end

--- Tell the server that a suggestion was shown (the longest text drawn) and how much was accepted.
local function report(s)
  if s.reported then
    return
  end
  s.reported = true
  if s.shown ~= "" then
    notify_server("dllm/didShowCompletion", { uri = s.key.uri, position = s.key.position, text = s.shown })
  end
  if s.accepted > 0 then
    notify_server("dllm/didAcceptCompletion", { uri = s.key.uri, position = s.key.position, acceptedLength = s.accepted })
  end
end

local function cancel_request(s)
  local client = get_client()
  if s.request_id and client then
    client_call(client, "cancel_request", s.request_id)
  end
  s.request_id = nil
end

--- Drop the current suggestion (if any): cancel its request, clear the ghost text, report it.
function M.dismiss()
  local s = state.suggestion
  if not s then
    return
  end
  state.suggestion = nil
  cancel_request(s)
  ghost.clear(s.bufnr)
  report(s)
  fire("DllmSuggestion")
end

local function cursor_at(s)
  if api.nvim_get_current_buf() ~= s.bufnr then
    return false
  end
  local cursor = api.nvim_win_get_cursor(0)
  return cursor[1] - 1 == s.row and cursor[2] == s.col
end

local function render(s)
  if state.suggestion ~= s then
    return
  end
  if not cursor_at(s) then
    M.dismiss()
    return
  end
  local shown = shown_text(s)
  ghost.draw(s.bufnr, s.row, s.col, shown, M.config.hl_group)
  if not s.frozen and #shown > #s.shown then
    s.shown = shown
  end
  fire("DllmSuggestion")
end

local function on_update(_, params)
  vim.schedule(function()
    local s = state.suggestion
    if not s or s.final or s.frozen then
      return
    end
    local stable = text.merge_stable(s.stable, s.key, params)
    if stable then
      s.stable = stable
      render(s)
    end
  end)
end

--- The answer's item may carry a range that starts before the cursor (the text is then the whole
--- replacement) or ends after it on the same line (the rest is replaced on accept).
local function apply_range(s, item)
  local suggestion = item.text
  local range = item.range
  if not range then
    return suggestion
  end
  local line = api.nvim_buf_get_lines(s.bufnr, s.row, s.row + 1, false)[1] or ""
  if range.start.line == s.row and range.start.character < s.key.position.character then
    local start_col = vim.str_byteindex(line, range.start.character, true)
    local typed = string.sub(line, start_col + 1, s.col)
    if string.sub(suggestion, 1, #typed) ~= typed then
      return ""          -- it would change text before the cursor: not an inline suggestion
    end
    suggestion = string.sub(suggestion, #typed + 1)
  end
  if range["end"].line == s.row and range["end"].character > s.key.position.character then
    s.replace_end = vim.str_byteindex(line, math.min(range["end"].character, select(2, vim.str_utfindex(line))), true)
  end
  return suggestion
end

local function on_response(s, err, result)
  if state.suggestion ~= s then
    return
  end
  s.request_id = nil
  if err then
    if err.code ~= -32800 then   -- RequestCancelled
      vim.notify("dllm: " .. tostring(err.message or vim.inspect(err)), vim.log.levels.WARN)
    end
    s.final = s.stable
  else
    s.items = {}
    for _, item in ipairs(text.items(result)) do
      local suggestion = apply_range(s, item)
      if suggestion ~= "" then
        table.insert(s.items, suggestion)
      end
    end
    s.index = #s.items > 0 and (s.cycle_to or 0) % #s.items + 1 or 1
    s.final = s.items[s.index] or ""
  end
  render(s)
end

--- Show the next (step = 1) or previous (-1) suggestion. An answer carries one suggestion unless
--- the server was asked twice at the same place; so the first cycle asks again, explicitly (the
--- server then adds its alternatives), once, and shows the next.
function M.cycle(step)
  local s = state.suggestion
  if not s or not M.has_suggestion() or not s.final then
    return false
  end
  if #s.items < 2 then
    if s.asked_again then
      return false
    end
    local ok = M.trigger(true)
    if ok then
      state.suggestion.cycle_to = step
      state.suggestion.asked_again = true
    end
    return ok
  end
  s.index = (s.index - 1 + step) % #s.items + 1
  s.final, s.shown = s.items[s.index], s.items[s.index]
  render(s)
  return true
end

-- the cursor as (0-based row, byte col, LSP position in UTF-16 code units)
local function cursor_position(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local row, col = cursor[1] - 1, cursor[2]
  local line = api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local _, character = vim.str_utfindex(line, math.min(col, #line))
  return row, col, { line = row, character = character }
end

--- Ask for a suggestion at the cursor now (manual = true: outside insert mode too).
function M.trigger(manual)
  M.dismiss()
  local bufnr = api.nvim_get_current_buf()
  local client = get_client()
  if not client or not client.initialized or M.enabled == false then
    return false
  end
  if not manual and not in_insert_mode() then
    return false
  end
  if not language_enabled(vim.bo[bufnr].filetype) or not vim.lsp.buf_is_attached(bufnr, state.client_id) then
    return false
  end
  local row, col, position = cursor_position(bufnr)
  local s = {
    bufnr = bufnr, row = row, col = col,
    key = { uri = vim.uri_from_bufnr(bufnr), version = buf_version(bufnr), position = position },
    stable = "", final = nil, shown = "", accepted = 0, frozen = false, reported = false,
    items = {}, index = 1,
  }
  state.suggestion = s
  local params = {
    textDocument = { uri = s.key.uri },
    position = s.key.position,
    context = { triggerKind = manual and 1 or 2 },
  }
  local ok, request_id = client_call(client, "request", "textDocument/inlineCompletion", params, function(err, result)
    on_response(s, err, result)
  end, bufnr)
  s.key.version = buf_version(bufnr)   -- the request flushed pending changes: this is the server's version
  if ok then
    s.request_id = request_id
  else
    state.suggestion = nil
  end
  return ok
end

--- Is a suggestion drawn right now?
function M.has_suggestion()
  local s = state.suggestion
  return s ~= nil and shown_text(s) ~= "" and cursor_at(s)
end

--- The current suggestion: { text, final = answer arrived?, row, col } (0-based row, byte col), or nil.
function M.current()
  local s = state.suggestion
  if not s then
    return nil
  end
  return { text = shown_text(s), final = s.final ~= nil, row = s.row, col = s.col }
end

--- Insert all of the suggestion, or its next word / next line (kind = "all" | "word" | "line").
function M.accept(kind)
  kind = kind or "all"
  local s = state.suggestion
  if not s or not M.has_suggestion() then
    return false
  end
  local suggestion = shown_text(s)
  local chunk = kind == "word" and text.next_word(suggestion) or kind == "line" and text.next_line(suggestion) or suggestion
  if chunk == "" then
    chunk = suggestion
  end
  local lines = text.split_lines(chunk)
  local end_col = (chunk == suggestion and s.replace_end) or s.col
  api.nvim_buf_set_text(s.bufnr, s.row, s.col, s.row, end_col, lines)
  local row = s.row + #lines - 1
  local col = #lines == 1 and s.col + #lines[1] or #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  state.own_tick = api.nvim_buf_get_changedtick(s.bufnr)
  s.accepted = s.accepted + text.char_count(chunk)
  local rest = string.sub(suggestion, #chunk + 1)
  if rest == "" then
    M.dismiss()
  else
    -- keep showing the rest at the new cursor; the server's answer is for the old position
    cancel_request(s)
    s.frozen, s.final, s.row, s.col, s.replace_end = true, rest, row, col, nil
    render(s)
  end
  return true
end

-- ------------------------------------------------------------------ events

local function schedule_trigger()
  if not M.config.auto_trigger then
    return
  end
  if state.timer then
    state.timer:stop()
  else
    state.timer = vim.loop.new_timer()
  end
  state.timer:start(M.config.debounce_ms, 0, vim.schedule_wrap(function()
    if in_insert_mode() then
      M.trigger(false)
    end
  end))
end

local function on_text_changed(bufnr)
  if state.own_tick and api.nvim_buf_get_changedtick(bufnr) == state.own_tick then
    if state.suggestion then
      return        -- a partial accept: the rest stays
    end
  else
    M.dismiss()
  end
  schedule_trigger()
end

local function on_cursor_moved()
  local s = state.suggestion
  if s and not cursor_at(s) then
    M.dismiss()
  end
end

-- the cursor moved in normal mode or insert mode began: tell the server where typing may start
local function on_cursor_rest()
  local bufnr = api.nvim_get_current_buf()
  local client = get_client()
  if not client or not client.initialized or M.enabled == false or not vim.lsp.buf_is_attached(bufnr, state.client_id)
      or not language_enabled(vim.bo[bufnr].filetype) then
    return
  end
  local _, _, position = cursor_position(bufnr)
  client_call(client, "notify", "dllm/cursor", { uri = vim.uri_from_bufnr(bufnr), position = position })
end

local function on_status(_, params)
  if type(params) == "table" then
    state.status = params
  end
  vim.schedule(function()
    fire("DllmStatus")
  end)
end

--- Short status for a statusline: "dLLM loading", "dLLM 42ms", "dLLM error", "dLLM off".
function M.status()
  if M.enabled == false then
    return "dLLM off"
  end
  local st = state.status
  if st.state == "error" and st.message and st.message ~= "" then
    return "dLLM error: " .. st.message
  end
  if st.state == "ready" then
    local ms = tonumber(st.lastLatencyMs)
    return ms and string.format("dLLM %dms", math.floor(ms + 0.5)) or "dLLM ready"
  end
  return "dLLM " .. tostring(st.state)
end

--- The last `dllm/status` payload.
function M.server_status()
  return state.status
end

-- Why the server did not start or stopped, shown once per failure (not on every BufEnter):
-- the status turns "error" with the reason, :DllmStatus shows it, vim.notify says it once.
local function fail(message)
  state.status = { state = "error", message = message }
  if state.failed ~= message then
    state.failed = message
    vim.schedule(function()
      vim.notify("dllm: " .. message, vim.log.levels.ERROR)
    end)
  end
  vim.schedule(function()
    fire("DllmStatus")
  end)
end

-- The last non-empty line of the server's stderr (captured into a file, see server_cmd).
local function last_stderr_line()
  local path = state.stderr_file
  if not path or vim.fn.filereadable(path) ~= 1 then
    return nil
  end
  local lines = vim.fn.readfile(path, "", -20)
  for i = #lines, 1, -1 do
    if lines[i]:match("%S") then
      return vim.trim(lines[i])
    end
  end
  return nil
end

-- The command to spawn: the configured one, wrapped (where `sh` exists) so that the server's
-- stderr also lands in a file whose last line can be shown when the server exits.
local function server_cmd(cmd)
  if M.config.capture_stderr == false or vim.fn.has("win32") == 1 or vim.fn.executable("sh") ~= 1 then
    state.stderr_file = nil
    return cmd
  end
  state.stderr_file = vim.fn.tempname() .. "-dllm-lsp.stderr"
  return vim.list_extend({ "sh", "-c", 'f=$1; shift; exec "$@" 2>"$f"', "dllm-lsp", state.stderr_file }, cmd)
end

local function start_client()
  local client = get_client()
  if client then
    return state.client_id
  end
  local config = M.config
  local cmd = config.cmd
  if type(cmd) ~= "table" or type(cmd[1]) ~= "string" or vim.fn.executable(cmd[1]) ~= 1 then
    local name = type(cmd) == "table" and tostring(cmd[1]) or tostring(cmd)
    fail(string.format("server not found: `%s` is not an executable on PATH (install dllm-lsp, or set "
      .. "cmd in require('dllm').setup{})", name))
    return nil
  end
  state.client_id = vim.lsp.start_client({
    name = "dllm",
    cmd = server_cmd(cmd),
    root_dir = config.root_dir or vim.loop.cwd(),
    init_options = config.init_options,
    settings = { dllm = config.init_options },
    handlers = {
      ["dllm/inlineCompletionUpdate"] = on_update,
      ["dllm/status"] = on_status,
    },
    on_exit = function(code, signal)
      -- a luv callback: Vimscript functions (readfile) only after vim.schedule
      vim.schedule(function()
        state.client_id = nil
        if code == 0 and state.status.state ~= "starting" then
          state.status = { state = "stopped", message = "dllm-lsp stopped" }
          fire("DllmStatus")
          return
        end
        local why = code ~= 0 and ("exited with code " .. tostring(code))
          or ("exited before it was ready" .. ((signal or 0) ~= 0 and (" (signal " .. signal .. ")") or ""))
        local line = last_stderr_line()
        fail("dllm-lsp " .. why .. (line and (": " .. line) or ""))
      end)
    end,
  })
  if not state.client_id then
    fail(string.format("could not start `%s` (see :messages)", table.concat(cmd, " ")))
  end
  return state.client_id
end

--- Attach the client to `bufnr` if it is a file buffer of an enabled filetype.
function M.attach(bufnr)
  bufnr = bufnr or api.nvim_get_current_buf()
  if vim.bo[bufnr].buftype ~= "" or not api.nvim_buf_is_loaded(bufnr) then
    return false
  end
  local filetypes = M.config.filetypes
  if filetypes and not vim.tbl_contains(filetypes, vim.bo[bufnr].filetype) then
    return false
  end
  local id = start_client()
  if not id then
    return false
  end
  vim.lsp.buf_attach_client(bufnr, id)
  if M.config.builtin and vim.lsp.inline_completion then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  end
  return true
end

--- Send new server settings (workspace/didChangeConfiguration, section dllm).
function M.set_settings(settings)
  M.config.init_options = vim.tbl_extend("force", M.config.init_options, settings)
  notify_server("workspace/didChangeConfiguration", { settings = { dllm = M.config.init_options } })
end

function M.toggle()
  M.enabled = M.enabled == false
  if not M.enabled then
    M.dismiss()
  end
  fire("DllmStatus")
end

local function map_keys(keys)
  local function expr_map(lhs, action)
    if not lhs then
      return
    end
    vim.keymap.set("i", lhs, function()
      if M.has_suggestion() then
        return "<Cmd>lua require('dllm')." .. action .. "<CR>"
      end
      return lhs
    end, { expr = true, silent = true, desc = "dllm: " .. action })
  end
  if M.config.builtin and vim.lsp.inline_completion then
    if keys.accept then
      vim.keymap.set("i", keys.accept, function()
        if not vim.lsp.inline_completion.get() then
          return keys.accept
        end
      end, { expr = true, silent = true, desc = "dllm: accept (built-in inline completion)" })
    end
    return
  end
  expr_map(keys.accept, "accept('all')")
  expr_map(keys.accept_word, "accept('word')")
  expr_map(keys.accept_line, "accept('line')")
  expr_map(keys.dismiss, "dismiss()")
  if keys.trigger then
    vim.keymap.set("i", keys.trigger, function()
      M.trigger(true)
    end, { silent = true, desc = "dllm: trigger" })
  end
  expr_map(keys.next, "cycle(1)")
  expr_map(keys.prev, "cycle(-1)")
end

function M.setup(opts)
  M.config = vim.tbl_deep_extend("force", vim.deepcopy(defaults), opts or {})
  if opts and opts.init_options then
    M.config.init_options = opts.init_options   -- not merged: the server's own defaults apply
  end
  vim.cmd("highlight default link DllmGhost Comment")
  local group = api.nvim_create_augroup("dllm", { clear = true })
  api.nvim_create_autocmd({ "FileType", "BufEnter" }, {
    group = group,
    callback = function(args)
      if not vim.lsp.buf_is_attached(args.buf, state.client_id or -1) then
        M.attach(args.buf)
      end
    end,
  })
  if not (M.config.builtin and vim.lsp.inline_completion) then
    api.nvim_create_autocmd({ "InsertLeave", "BufLeave" }, { group = group, callback = function() M.dismiss() end })
    api.nvim_create_autocmd("TextChangedI", { group = group, callback = function(args) on_text_changed(args.buf) end })
    api.nvim_create_autocmd("CursorMovedI", { group = group, callback = on_cursor_moved })
  end
  api.nvim_create_autocmd({ "CursorMoved", "InsertEnter" }, { group = group, callback = on_cursor_rest })
  map_keys(M.config.keys)
  api.nvim_create_user_command("DllmTrigger", function() M.trigger(true) end, { desc = "dllm: suggest at the cursor" })
  api.nvim_create_user_command("DllmToggle", M.toggle, { desc = "dllm: turn suggestions on/off" })
  api.nvim_create_user_command("DllmStatus", function() print(M.status()) end, { desc = "dllm: server status" })
  -- buffers opened before setup
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= "" then
      M.attach(bufnr)
    end
  end
end

return M
