-- Write the last answer again: a new generation of the same answer message, queued.
-- KEYS: 1 chat hash, 2 message list, 3 the answer's hash, 4 chat events, 5 the new
--       generation's heartbeat
-- ARGV: 1 answer id, 2 new generation id, 3 now, 4 queue wait (ms), 5 model label,
--       6 the chat's channel, 7 the publish command (PUBLISH, or SPUBLISH on a Cluster),
--       8 '1' if the answer waits behind its asker's other answers (their cap), else ''
-- Returns {'ok'} | {'missing'} | {'busy', running answer id} | {'not_last'}
local chat, messages, answer, events = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local answer_id, gen = ARGV[1], ARGV[2]
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
redis.call('HSET', answer, 'status', 'queued', 'gen', gen, 'text', '', 'html', '',
  'error', '', 'length', 0, 'model', ARGV[5], 'created', ARGV[3], 'behind_own', ARGV[8],
  'prompt_tokens', 0, 'answer_tokens', 0, 'thinking_html', '')
redis.call('SET', KEYS[5], gen, 'PX', ARGV[4])
redis.call('HSET', chat, 'running', answer_id, 'updated', ARGV[3])
local event = cjson.encode({t = 'answer_started', m = answer_id, g = gen, again = true})
local seq = redis.call('RPUSH', events, event)
redis.call(ARGV[7], ARGV[6], '{"c":' .. seq .. ',"e":[' .. event .. ']}')
return {'ok'}
