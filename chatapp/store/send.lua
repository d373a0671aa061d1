-- Store a user message and its (queued) answer, once per client message id; or, editing a
-- question, a new version of it: the messages from the old version on are kept as its path
-- (where switching back to it leads), and the new version and its answer end the chat.
-- KEYS: 1 chat hash, 2 message list, 3 claim, 4 user message hash, 5 answer hash, 6 chat events,
--       7 the answer's heartbeat, 8 every message of the chat (a set),
--       9 the edited question's path ('' when not editing)
-- ARGV: 1 user message id, 2 answer id, 3 generation id, 4 text, 5 html, 6 now,
--       7 claim ttl s, 8 model label, 9 title for a chat that has none yet,
--       10 how long the answer may wait for a worker (ms) before it counts as dead,
--       11 the most messages a chat may hold, 12 the chat's pub/sub channel,
--       13 the publish command (PUBLISH, or SPUBLISH on a Cluster),
--       14 '1' if the answer waits behind its asker's other answers (their cap), else '',
--       15 the id of the question this one is a new version of, or '',
--       16 the prefix of message keys (followed by a message id)
-- Returns {'ok'} | {'missing'} | {'busy', running answer id} | {'duplicate', user id, answer id}
--         | {'full'}
local chat, messages, claim, user, answer, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local user_id, answer_id, gen, now = ARGV[1], ARGV[2], ARGV[3], ARGV[6]

if redis.call('EXISTS', chat) == 0 then
  return {'missing'}
end
local claimed = redis.call('GET', claim)
if claimed then
  local sep = string.find(claimed, ' ', 1, true)
  return {'duplicate', string.sub(claimed, 1, sep - 1), string.sub(claimed, sep + 1)}
end
local running = redis.call('HGET', chat, 'running')
if running then
  return {'busy', running}
end
local replaced, kept = ARGV[15], redis.call('LLEN', messages)
if replaced ~= '' then
  kept = redis.call('LPOS', messages, replaced)
  if not kept or redis.call('HGET', ARGV[16] .. replaced, 'role') ~= 'user' then
    return {'missing'}
  end
end
if kept + 2 > tonumber(ARGV[11]) then
  return {'full'}
end

local new_events = {}
if replaced ~= '' then
  -- The old version keeps its path; every version learns the new list of versions.
  local old = ARGV[16] .. replaced
  local origin = redis.call('HGET', old, 'origin') or replaced
  local versions = (redis.call('HGET', old, 'versions') or replaced) .. ',' .. user_id
  redis.call('DEL', KEYS[9])
  redis.call('RPUSH', KEYS[9], unpack(redis.call('LRANGE', messages, kept, -1)))
  if kept == 0 then redis.call('DEL', messages) else redis.call('LTRIM', messages, 0, kept - 1) end
  for id in string.gmatch(versions, '[^,]+') do
    redis.call('HSET', ARGV[16] .. id, 'origin', origin, 'versions', versions)
  end
  new_events[#new_events + 1] = cjson.encode({t = 'path_changed'})
end
redis.call('SET', claim, user_id .. ' ' .. answer_id, 'EX', ARGV[7])
redis.call('HSET', user, 'id', user_id, 'role', 'user', 'status', 'done',
  'text', ARGV[4], 'html', ARGV[5], 'created', now)
redis.call('HSET', answer, 'id', answer_id, 'role', 'assistant', 'status', 'queued',
  'gen', gen, 'text', '', 'html', '', 'model', ARGV[8], 'created', now, 'behind_own', ARGV[14])
redis.call('SET', KEYS[7], gen, 'PX', ARGV[10])
redis.call('RPUSH', messages, user_id, answer_id)
redis.call('SADD', KEYS[8], user_id, answer_id)
redis.call('HSET', chat, 'running', answer_id, 'updated', now)
-- The chat's events, logged and published together (entry n of the log has sequence n).
if redis.call('HSETNX', chat, 'titled', '1') == 1 then
  redis.call('HSET', chat, 'title', ARGV[9])
  new_events[#new_events + 1] = cjson.encode({t = 'title_changed', title = ARGV[9]})
end
new_events[#new_events + 1] = cjson.encode({t = 'message_added', m = user_id})
new_events[#new_events + 1] = cjson.encode({t = 'answer_started', m = answer_id, g = gen})
local length = redis.call('RPUSH', events, unpack(new_events))
redis.call(ARGV[13], ARGV[12], '{"c":' .. (length - #new_events + 1) .. ',"e":[' ..
  table.concat(new_events, ',') .. ']}')
return {'ok'}
