// Reads one Durable Stream to its end with @durable-streams/client (SSE), as an outside
// app would, resuming from the last offset it was given whenever its connection breaks,
// and prints what it got as JSON: {"texts": [each batch as sent], "offset", "resumed"}.
// Usage: node read_answer.mjs <stream url> <access token>
import { stream } from "@durable-streams/client"

const [url, token] = process.argv.slice(2)
const texts = []
let offset = "-1"
let resumed = 0

// One connection: each batch (a JSON array, as the server sent it) comes with the offset
// after it; true once the stream closed.
async function readFrom(start) {
  const res = await stream({
    url,
    offset: start,
    headers: { Authorization: `Bearer ${token}` },
    live: "sse",
  })
  return await new Promise((resolve, reject) => {
    res.subscribeText(async (batch) => {
      texts.push(batch.text)
      offset = batch.offset
      if (batch.streamClosed) resolve(true)
    })
    res.closed.then(() => resolve(false), reject)
  })
}

for (;;) {
  try {
    if (await readFrom(offset)) break
  } catch (error) {
    resumed += 1 // the connection broke: go on from the last offset
    if (resumed > 100) throw error
  }
}
process.stdout.write(JSON.stringify({ texts, offset, resumed }))
process.exit(0)
