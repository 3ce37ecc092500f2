// Scores one run of the HTTP caching test suite as cache-tests.fyi does,
// with the suite's own scoring (test-engine/lib/results.mjs: a test whose
// dependencies did not pass is "not assessed"), so that the counts agree
// with the published tables.  Usage: node score.mjs SUITE_DIR RESULTS.json
// Prints one JSON object: per kind (required, optimal, check) the count of
// each outcome, the number of tests run for a reverse proxy, and the
// required tests that did not pass with their outcome and the suite's
// message.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile] = process.argv.slice(2)
const load = rel => import(pathToFileURL(path.resolve(suiteDir, rel)).href)
const suites = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const outcomeName = new Map(Object.entries(resultTypes).map(([name, type]) => [type, name]))
const counts = { required: {}, optimal: {}, check: {} }
const failingRequired = []
let tests = 0
for (const suite of suites) {
  for (const test of suite.tests) {
    // The CLI runs as a reverse proxy's client: what runner.mjs skips is not scored.
    if (test.browser_only === true) continue
    tests++
    const kind = test.kind || 'required'
    const outcome = outcomeName.get(determineTestResult(suites, test.id, results, true))
    counts[kind][outcome] = (counts[kind][outcome] || 0) + 1
    if (kind === 'required' && outcome !== 'pass') {
      const raw = results[test.id]
      const message = Array.isArray(raw) ? raw.join(': ') : ''
      failingRequired.push({ id: test.id, outcome, name: test.name, message })
    }
  }
}
const passed = kind => (counts[kind].pass || 0) + (counts[kind].yes || 0)
const totals = {}
for (const kind of Object.keys(counts)) {
  totals[kind] = Object.values(counts[kind]).reduce((a, b) => a + b, 0)
}
console.log(JSON.stringify({
  tests,
  results: Object.keys(results).length,
  passed: { required: passed('required'), optimal: passed('optimal'), check: passed('check') },
  totals,
  counts,
  failing_required: failingRequired
}, null, 2))
