-- Delete a chat: tell its pages (a last chat event, published), then remove its records.
-- Answer logs are left to expire (every finished log has its retention TTL; a running
-- answer is stopped before this runs), and so are client message claims.
-- KEYS: 1 chat hash, 2 message list, 3 chat events, 4 every message of the chat (a set)
-- ARGV: 1 the chat's channel, 2 the prefix of message keys (followed by the message id),
--       3 the publish command (PUBLISH, or SPUBLISH on a Cluster), 4 the prefix of the
--       keys of versions' paths (followed by the message id)
-- Returns 1, or 0 if the chat does not exist.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local event = cjson.encode({t = 'chat_deleted'})
local seq = redis.call('RPUSH', KEYS[3], event)
redis.call(ARGV[3], ARGV[1], '{"c":' .. seq .. ',"e":[' .. event .. ']}')
-- The shown messages, and those of other versions' paths (a chat stored before versions
-- has no set: its list is all).
for _, message_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  redis.call('DEL', ARGV[2] .. message_id, ARGV[4] .. message_id)
end
for _, message_id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  redis.call('DEL', ARGV[2] .. message_id, ARGV[4] .. message_id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
