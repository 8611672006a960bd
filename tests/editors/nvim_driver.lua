-- Drives the dllm Neovim plugin inside `nvim --headless` for tests/editors/test_nvim.py.
--
-- Configured by environment variables (set by the pytest side):
--   DLLM_RTP       the plugin folder (editors/nvim)
--   DLLM_CMD       JSON list: the server command
--   DLLM_INIT      JSON object: init_options for the server
--   DLLM_FILE      the file to open;  DLLM_CURSOR  "row,col" (1-based row, 0-based byte col)
--   DLLM_SCENARIO  accept | partial | dismiss | auto | typing | snippet | failure (the server does not start)
--   DLLM_TYPE      typing: the keys typed one at a time, DLLM_GAP_MS (default 100) apart
--   DLLM_SNIPPET   optional: a Lua file (the editor README's configuration) run instead of our
--                  own runtimepath + setup(); it must put the plugin on the runtimepath itself
--   DLLM_RESULT    where to write the JSON result
-- The scenario runs as a coroutine: `wait_for` polls the event loop (LSP messages, timers, typed
-- keys) until a condition holds. Every change of the ghost text is recorded from the plugin's
-- `User DllmSuggestion` event. The pytest side makes all the assertions on the result file.
local snippet = os.getenv("DLLM_SNIPPET")
if snippet then
  dofile(snippet)                            -- as a user's init.lua runs it
else
  vim.opt.runtimepath:prepend(os.getenv("DLLM_RTP"))
end
vim.opt.swapfile = false
vim.opt.shortmess:append("F")

local result = { history = {}, events = {}, errors = {} }
local api = vim.api

local function json_env(name, default)
  local raw = os.getenv(name)
  if not raw or raw == "" then
    return default
  end
  return vim.fn.json_decode(raw)
end

local function lines()
  return api.nvim_buf_get_lines(0, 0, -1, false)
end

local function finish(code)
  result.exit = code
  local file = assert(io.open(os.getenv("DLLM_RESULT"), "w"))
  file:write(vim.fn.json_encode(result))
  file:close()
  vim.cmd(code == 0 and "qa!" or "cq!")
end

local co
local function resume()
  local ok, err = coroutine.resume(co)
  if not ok then
    table.insert(result.errors, tostring(err))
    finish(1)
  end
end

local function sleep(ms)
  vim.defer_fn(resume, ms)
  coroutine.yield()
end

local function wait_for(what, timeout_ms, cond)
  local waited = 0
  while not cond() do
    if waited >= timeout_ms then
      error("timed out waiting for " .. what)
    end
    sleep(20)
    waited = waited + 20
  end
end

local function feed(keys)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), "m", false)
  sleep(50)
end

local auto = os.getenv("DLLM_SCENARIO") == "auto" or os.getenv("DLLM_SCENARIO") == "typing"
local dllm = require("dllm")
local ghost = require("dllm.ghost")
if not snippet then
  dllm.setup({
    cmd = json_env("DLLM_CMD"),
    init_options = json_env("DLLM_INIT", {}),
    auto_trigger = auto,
    debounce_ms = 20,
  })
end

api.nvim_create_autocmd("User", {
  pattern = "DllmSuggestion",
  callback = function()
    local current = dllm.current()
    local drawn = ghost.read(api.nvim_get_current_buf())
    table.insert(result.history, {
      text = current and current.text or vim.NIL,
      final = current and current.final or false,
      ghost = drawn or vim.NIL,
    })
  end,
})

local function attached_client()
  for _, client in pairs(vim.lsp.buf_get_clients(0)) do
    if client.name == "dllm" and client.initialized then
      return client
    end
  end
end

-- enter insert mode, then put the cursor where the test wants it (in insert mode it may sit
-- after the last character of a line, as it does while typing)
local function insert_at_cursor()
  feed("i")
  local row, col = os.getenv("DLLM_CURSOR"):match("(%d+),(%d+)")
  api.nvim_win_set_cursor(0, { tonumber(row), tonumber(col) })
end

local function suggest()
  insert_at_cursor()
  result.mode = api.nvim_get_mode().mode
  result.trigger_ok = dllm.trigger(true)
  wait_for("the final suggestion", 60000, function()
    local current = dllm.current()
    return current ~= nil and current.final
  end)
  result.suggestion = dllm.current().text
  result.ghost = ghost.read(0) or vim.NIL
  result.extmarks = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
end

local scenarios = {}

function scenarios.accept()
  suggest()
  feed("<Tab>")
  result.after = lines()
  result.cursor_after = api.nvim_win_get_cursor(0)
  result.extmarks_after = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
  feed("<Esc>")
end

function scenarios.partial()
  suggest()
  feed("<M-Right>")
  result.after_word = lines()
  result.rest_after_word = dllm.current() and dllm.current().text or vim.NIL
  feed("<M-Down>")
  result.after_line = lines()
  result.rest_after_line = dllm.current() and dllm.current().text or vim.NIL
  if dllm.has_suggestion() then
    feed("<Tab>")
  end
  result.after = lines()
  feed("<Esc>")
end

-- an automatic request's one suggestion, then <M-]> <M-]> <M-[> (the first asks again, invoked)
function scenarios.cycle()
  insert_at_cursor()
  dllm.trigger(false)
  wait_for("the automatic suggestion", 60000, function()
    local current = dllm.current()
    return current ~= nil and current.final
  end)
  result.cycled = { dllm.current().text }
  for _, key in ipairs({ "<M-]>", "<M-]>", "<M-[>" }) do
    local before = #result.history
    feed(key)
    wait_for("the next suggestion", 60000, function()
      local current = dllm.current()
      return #result.history > before and current ~= nil and current.final
    end)
    table.insert(result.cycled, dllm.current().text)
  end
  feed("<Tab>")
  result.after = lines()
  feed("<Esc>")
end

function scenarios.dismiss()
  suggest()
  feed("z")                                  -- typing dismisses
  result.extmarks_after_typing = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
  result.after_typing = lines()
  result.trigger_again = dllm.trigger(true)
  wait_for("the second suggestion", 60000, function()
    return dllm.current() ~= nil and dllm.current().final
  end)
  result.extmarks_before_leave = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
  feed("<Esc>")                              -- leaving insert mode dismisses
  result.extmarks_after_leave = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
  result.after = lines()
end

function scenarios.auto()
  insert_at_cursor()
  feed("x")                                  -- typing asks by itself after the debounce
  wait_for("a suggestion without a trigger", 60000, function()
    return dllm.current() ~= nil and dllm.current().final
  end)
  result.suggestion = dllm.current().text
  result.extmarks = #api.nvim_buf_get_extmarks(0, ghost.ns, 0, -1, {})
  feed("<Esc>")
end

-- a person typing: each key on its own, DLLM_GAP_MS apart (the plugin asks after each by itself,
-- debounced), then a pause until the ghost text shows; records the ms from the last key
function scenarios.typing()
  insert_at_cursor()
  local gap = tonumber(os.getenv("DLLM_GAP_MS") or "100")
  local keys = os.getenv("DLLM_TYPE")
  local last_key = vim.loop.hrtime()
  for i = 1, #keys do
    api.nvim_feedkeys(keys:sub(i, i), "n", false)
    last_key = vim.loop.hrtime()
    sleep(gap)
  end
  result.typed_line = api.nvim_get_current_line()
  wait_for("ghost text after the pause", 120000, function()
    local current = dllm.current()
    return current ~= nil and current.final and current.text ~= "" and ghost.read(0) ~= nil
  end)
  result.pause_ms = (vim.loop.hrtime() - last_key) / 1e6
  result.suggestion = dllm.current().text
  result.ghost = ghost.read(0) or vim.NIL
  feed("<Esc>")
end

-- a person moving the cursor before typing: in normal mode, then into insert mode
function scenarios.cursor()
  local row, col = os.getenv("DLLM_CURSOR"):match("(%d+),(%d+)")
  feed("gg")
  api.nvim_win_set_cursor(0, { tonumber(row), tonumber(col) })
  feed("l")
  feed("i")
  sleep(200)
  feed("<Esc>")
end

function scenarios.snippet()
  local client = attached_client()
  local cmd = client.config.cmd
  if cmd[1] == "sh" and cmd[4] == "dllm-lsp" then       -- the plugin's stderr-capturing wrapper: what it runs
    cmd = vim.list_slice(cmd, 6)
  end
  result.client = { cmd = cmd, init_options = client.config.init_options }
  result.rtp_has_plugin = #vim.api.nvim_get_runtime_file("lua/dllm/init.lua", false) == 1
  result.server_status = dllm.server_status()
  if result.server_status.state == "ready" then
    suggest()
    feed("<Esc>")
  end
end

-- DLLM_SCENARIO=failure: the server cannot start or dies; record what the user is told
local function failure()
  local notes = {}
  vim.notify = function(msg, level)
    table.insert(notes, { msg = tostring(msg), level = level or vim.NIL })
  end
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DLLM_FILE")))
  wait_for("the status to turn error", 30000, function()
    return dllm.server_status().state == "error"
  end)
  sleep(300)                                 -- a second BufEnter must not repeat the message
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DLLM_FILE")))
  sleep(300)
  result.server_status = dllm.server_status()
  result.status = dllm.status()
  result.notes = notes
  result.command_output = api.nvim_exec("DllmStatus", true)
  finish(0)
end

co = coroutine.create(function()
  if os.getenv("DLLM_SCENARIO") == "failure" then
    return failure()
  end
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("DLLM_FILE")))
  wait_for("the dllm client to start", 60000, attached_client)
  wait_for("the server to be ready", 120000, function()
    local st = dllm.server_status().state
    return st == "ready" or (snippet ~= nil and st == "error")   -- a snippet may name a model not pulled here
  end)
  result.status = dllm.status()
  result.before = lines()
  scenarios[os.getenv("DLLM_SCENARIO")]()
  sleep(200)                                 -- let the last notifications go out
  local client = attached_client()
  if client then
    client.stop()
    wait_for("the server to exit", 10000, function()
      return client.is_stopped()
    end)
  end
  finish(0)
end)
vim.schedule(resume)
