-- Write the last answer again, as a new version of it, queued; the old one stays, one
-- click away (its versions, as a question's after an edit).
-- KEYS: 1 chat hash, 2 message list, 3 the answer's hash, 4 chat events, 5 the new
--       generation's heartbeat, 6 the new answer's hash, 7 every message of the chat (a
--       set), 8 the old answer's path
-- ARGV: 1 answer id, 2 new generation id, 3 now, 4 queue wait (ms), 5 model label,
--       6 the chat's channel, 7 the publish command (PUBLISH, or SPUBLISH on a Cluster),
--       8 '1' if the answer waits behind its asker's other answers (their cap), else '',
--       9 the new answer's id, 10 the prefix of message keys (followed by a message id)
-- Returns {'ok'} | {'missing'} | {'busy', running answer id} | {'not_last'}
local chat, messages, answer, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local answer_id, gen, new_id = ARGV[1], ARGV[2], ARGV[9]
if redis.call('EXISTS', chat) == 0 or redis.call('HGET', answer, 'role') ~= 'assistant' then
  return {'missing'}
end
local running = redis.call('HGET', chat, 'running')
if running then
  return {'busy', running}
end
if redis.call('LINDEX', messages, -1) ~= answer_id then
  return {'not_last'}
end
-- The old answer is a version now, its path itself; every version learns the new list.
local origin = redis.call('HGET', answer, 'origin') or answer_id
local versions = (redis.call('HGET', answer, 'versions') or answer_id) .. ',' .. new_id
redis.call('DEL', KEYS[8])
redis.call('RPUSH', KEYS[8], answer_id)
for id in string.gmatch(versions, '[^,]+') do
  redis.call('HSET', ARGV[10] .. id, 'origin', origin, 'versions', versions)
end
redis.call('HSET', KEYS[6], 'id', new_id, 'role', 'assistant', 'status', 'queued', 'gen', gen,
  'text', '', 'html', '', 'model', ARGV[5], 'created', ARGV[3], 'behind_own', ARGV[8])
redis.call('RPOP', messages)
redis.call('RPUSH', messages, new_id)
redis.call('SADD', KEYS[7], answer_id, new_id)
redis.call('SET', KEYS[5], gen, 'PX', ARGV[4])
redis.call('HSET', chat, 'running', new_id, 'updated', ARGV[3])
local new_events = {
  cjson.encode({t = 'path_changed'}),
  cjson.encode({t = 'answer_started', m = new_id, g = gen}),
}
local length = redis.call('RPUSH', events, unpack(new_events))
redis.call(ARGV[7], ARGV[6], '{"c":' .. (length - 1) .. ',"e":[' ..
  table.concat(new_events, ',') .. ']}')
return {'ok'}
