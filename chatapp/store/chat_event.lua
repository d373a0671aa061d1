-- Change a chat's fields and record why, as one chat event: logged and published together
-- (entry n of the events log has sequence n), so every page of the chat learns of it once.
-- KEYS: 1 chat hash, 2 chat events
-- ARGV: 1 the chat's channel, 2 the event (JSON), 3 the title the chat must still have
--       ('' = any), 4 the publish command (PUBLISH, or SPUBLISH on a Cluster),
--       5.. field, value pairs to set on the chat
-- Returns the event's sequence number, or 0 if the chat does not exist (or has another title).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'title') ~= ARGV[3] then
  return 0
end
if #ARGV > 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 5))
end
local seq = redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call(ARGV[4], ARGV[1], '{"c":' .. seq .. ',"e":[' .. ARGV[2] .. ']}')
return seq
