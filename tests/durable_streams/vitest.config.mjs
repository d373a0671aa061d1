import { defineConfig } from "vitest/config"

// The suite's own CLI finds no test file when the package is installed as a dependency
// (durable-streams issue 284): vitest excludes node_modules by default. Include its runner.
export default defineConfig({
  test: {
    include: ["node_modules/@durable-streams/server-conformance-tests/dist/test-runner.js"],
    exclude: [],
  },
})
