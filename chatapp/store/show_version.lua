-- Show another version of a question: the messages from the shown version on become its
-- path again, and the chosen version's path (itself, its answer and whatever followed)
-- ends the chat instead. Every page of the chat is told (a `path_changed` event).
-- KEYS: 1 chat hash, 2 message list, 3 chat events, 4 the shown version's path,
--       5 the chosen version's path
-- ARGV: 1 the shown version's id, 2 the chosen version's id, 3 the prefix of message
--       keys, 4 the chat's channel, 5 the publish command (PUBLISH, or SPUBLISH)
-- Returns {'ok'} | {'missing'} | {'busy', running answer id}
local chat, messages, events = KEYS[1], KEYS[2], KEYS[3]
local shown, chosen = ARGV[1], ARGV[2]
if redis.call('EXISTS', chat) == 0 then
  return {'missing'}
end
local running = redis.call('HGET', chat, 'running')
if running then
  return {'busy', running}
end
local versions = redis.call('HGET', ARGV[3] .. chosen, 'versions')
local at = redis.call('LPOS', messages, shown)
if not versions or not at or not string.find(',' .. versions .. ',', ',' .. shown .. ',', 1, true) then
  return {'missing'}
end
if shown == chosen then
  return {'ok'}
end
redis.call('DEL', KEYS[4])
redis.call('RPUSH', KEYS[4], unpack(redis.call('LRANGE', messages, at, -1)))
if at == 0 then redis.call('DEL', messages) else redis.call('LTRIM', messages, 0, at - 1) end
local path = redis.call('LRANGE', KEYS[5], 0, -1)
if #path == 0 then path = {chosen} end
redis.call('RPUSH', messages, unpack(path))
local event = cjson.encode({t = 'path_changed'})
local seq = redis.call('RPUSH', events, event)
redis.call(ARGV[5], ARGV[4], '{"c":' .. seq .. ',"e":[' .. event .. ']}')
return {'ok'}
