-- The fenced append: the only way anything is written to a generation's log.
-- One round trip per flush; atomic, so whoever races (job, stop button, watchdog,
-- failure callback) exactly one terminal entry wins and history never disagrees with the log.
--
-- KEYS: 1 message hash, 2 generation log, 3 heartbeat, 4 chat hash, 5 chat events
-- ARGV: 1 generation id, 2 expected log length ('' = any), 3 channel, 4 message id,
--       5 heartbeat ms, 6 retention s, 7 terminal kind ('' | done | error | stopped),
--       8 error message, 9 final text, 10 final html (done; error: optional),
--       11 mode ('' | 'if-dead': only if the heartbeat has expired),
--       12 the publish command (PUBLISH, or SPUBLISH on a Cluster),
--       13 fields kept with an ended answer (JSON object of strings: the tokens the model
--          server counted, the model's reasoning; '' = none),
--       14 '1' if the log's blocks, these entries' included, are the final html (a page
--          that followed the log holds it all already), 15.. delta entries (JSON)
-- Delta entries: {"t": "delta", "text", "blocks", "tail"?, "more"?, "think"?} (render.py,
-- producer.py); the terminal entry: {"t": kind, "html", "message", "model", "whole"?}.
-- The log is append-only: an entry is never changed, so a position holds the same bytes
-- for everyone.
-- Returns {status, log length}, and after a terminal entry the chat's owner (whose chat
-- list shows the answer ended); status: ok | stale (not the current generation) |
--         ended (already has its terminal entry) | seq (expected length did not match) |
--         alive (mode 'if-dead' and the producer's heartbeat is still there).
local msg, log, hb, chat, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local gen, expected, channel, mid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local kind, publish = ARGV[7], ARGV[12]

if redis.call('HGET', msg, 'gen') ~= gen then
  return {'stale', 0}
end
local status = redis.call('HGET', msg, 'status')
local length = redis.call('LLEN', log)
if status == 'done' or status == 'error' or status == 'stopped' then
  return {'ended', length}
end
if expected ~= '' and tonumber(expected) ~= length then
  return {'seq', length}
end
if ARGV[11] == 'if-dead' and redis.call('EXISTS', hb) == 1 then
  return {'alive', length}
end

local chat_event, chat_event_seq = nil, 0  -- the chat-level event of a terminal entry
local entries = {}
for i = 15, #ARGV do
  entries[#entries + 1] = ARGV[i]
end

if kind ~= '' then
  local text, html, whole = ARGV[9], ARGV[10], ARGV[14] == '1'
  if kind ~= 'done' and html == '' then
    -- Stopped (or failed with no render given): the answer is what the log holds so far:
    -- its blocks, the open block's last render, and the text that came after that render.
    local texts, blocks, tail, more, thinking = {}, {}, '', {}, {}
    local function take(raw)
      local entry = cjson.decode(raw)
      texts[#texts + 1] = entry.text or ''
      blocks[#blocks + 1] = entry.blocks or ''
      if entry.tail ~= nil then tail, more = entry.tail, {} end
      if entry.more ~= nil then more[#more + 1] = entry.more end
      if entry.think ~= nil then thinking[#thinking + 1] = entry.think end
    end
    for _, raw in ipairs(redis.call('LRANGE', log, 0, -1)) do take(raw) end
    for _, raw in ipairs(entries) do take(raw) end
    text = table.concat(texts)
    local after = table.concat(more)
    if after ~= '' then after = '<p>' .. after .. '</p>\n' end
    html = table.concat(blocks) .. tail .. after
    whole = tail == '' and after == ''
    if #thinking > 0 then  -- the model's reasoning so far, kept with the answer
      redis.call('HSET', msg, 'thinking_html', table.concat(thinking))
    end
  end
  if ARGV[13] ~= '' then
    for name, value in pairs(cjson.decode(ARGV[13])) do
      redis.call('HSET', msg, name, value)
    end
  end
  local model = redis.call('HGET', msg, 'model') or ''
  entries[#entries + 1] = cjson.encode(
    {t = kind, html = html, message = ARGV[8], model = model, whole = whole or nil})
  redis.call('HSET', msg, 'status', kind, 'text', text, 'html', html, 'error', ARGV[8],
    'length', length + #entries)
  if redis.call('HGET', chat, 'running') == mid then
    redis.call('HDEL', chat, 'running')
  end
  chat_event = cjson.encode({t = 'answer_ended', m = mid, g = gen, status = kind})
  chat_event_seq = redis.call('RPUSH', events, chat_event)
elseif status == 'queued' then
  redis.call('HSET', msg, 'status', 'streaming')
end

if #entries == 0 then
  redis.call('SET', hb, gen, 'PX', ARGV[5])
  return {'ok', length}
end

local new_length = redis.call('RPUSH', log, unpack(entries))
local first = new_length - #entries + 1
-- "at": Redis's clock (ms) as it appends, for the viewers' delivery latency (metrics.py).
local now = redis.call('TIME')
local at = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call(publish, channel, '{"m":"' .. mid .. '","g":"' .. gen .. '","s":' .. first ..
  ',"at":' .. string.format('%d', at) .. ',"e":[' .. table.concat(entries, ',') .. ']}')
if kind ~= '' then
  redis.call('EXPIRE', log, ARGV[6])
  redis.call('DEL', hb)
  -- After the terminal entry, on the same channel: a chat viewer sees the end first.
  redis.call(publish, channel, '{"c":' .. chat_event_seq .. ',"e":[' .. chat_event .. ']}')
  return {'ok', new_length, redis.call('HGET', chat, 'owner') or ''}
else
  redis.call('SET', hb, gen, 'PX', ARGV[5])
end
return {'ok', new_length}
