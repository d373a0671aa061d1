-- Make a user's search index (chatapp/search.py) hold one chat's words, in one step.
-- KEYS[1] the user's sorted set of every word, KEYS[2] the set of the chat's words,
-- KEYS[3] the hash of chat id -> version indexed.
-- ARGV[1] the prefix of a word's key (its set of chats: prefix .. word), ARGV[2] the chat
-- id, ARGV[3] its version ("": the chat is gone), ARGV[4..] its words now, each once.
-- Every key carries the user's hash tag: one Cluster slot, so the word keys, which
-- cannot be listed in advance, are on this node too.
local prefix, chat_id, version = ARGV[1], ARGV[2], ARGV[3]
local now = {}
for i = 4, #ARGV do now[ARGV[i]] = true end
for _, word in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if now[word] then
    now[word] = nil -- held before and now: nothing to do
  else
    redis.call('SREM', prefix .. word, chat_id)
    if redis.call('SCARD', prefix .. word) == 0 then redis.call('ZREM', KEYS[1], word) end
  end
end
for word in pairs(now) do
  redis.call('SADD', prefix .. word, chat_id)
  redis.call('ZADD', KEYS[1], 0, word)
end
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 5000 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 4999, #ARGV)))
end
if version == '' then
  redis.call('HDEL', KEYS[3], chat_id)
else
  redis.call('HSET', KEYS[3], chat_id, version)
end
return 0
