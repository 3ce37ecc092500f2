// SPDX-License-Identifier: MIT
// Scores one run of the HTTP caching test suite as cache-tests.fyi does,
// with the suite's own scoring (test-engine/lib/results.mjs: a test whose
// dependencies did not pass is "not assessed"), so that the counts agree
// with the published tables.  Usage: node score.mjs SUITE_DIR RESULTS.json
// Prints one JSON object: per kind (required, optimal, check) the count of
// each outcome, the number of tests run for a reverse proxy, and the
// required tests that did not pass with their outcome and the suite's
// message, and the tests (often optimal ones) that those marked
// dependency_fail wait on, with how many required tests each holds back.
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, resultsFile] = process.argv.slice(2)
const load = rel => import(pathToFileURL(path.resolve(suiteDir, rel)).href)
const suites = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const results = JSON.parse(fs.readFileSync(resultsFile, 'utf8'))

const outcomeName = new Map(Object.entries(resultTypes).map(([name, type]) => [type, name]))
const outcomeOf = id => outcomeName.get(determineTestResult(suites, id, results, true))
const passes = outcome => outcome === 'pass' || outcome === 'yes'
const testById = new Map(suites.flatMap(suite => suite.tests.map(test => [test.id, test])))
const messageOf = id => Array.isArray(results[id]) ? results[id].join(': ') : ''

// The first tests down a dependency chain that did not pass on their own:
// where a required test marked dependency_fail is really held back.
function roots (id, seen = new Set()) {
  const found = []
  for (const dep of testById.get(id).depends_on || []) {
    if (seen.has(dep)) continue
    seen.add(dep)
    const outcome = outcomeOf(dep)
    if (passes(outcome)) continue
    if (outcome === 'dependency_fail') found.push(...roots(dep, seen))
    else found.push(dep)
  }
  return found
}
const counts = { required: {}, optimal: {}, check: {} }
const failingRequired = []
const blocking = new Map()
let tests = 0
for (const suite of suites) {
  for (const test of suite.tests) {
    // The CLI runs as a reverse proxy's client: what runner.mjs skips is not scored.
    if (test.browser_only === true) continue
    tests++
    const kind = test.kind || 'required'
    const outcome = outcomeOf(test.id)
    counts[kind][outcome] = (counts[kind][outcome] || 0) + 1
    if (kind === 'required' && outcome !== 'pass') {
      failingRequired.push({ id: test.id, outcome, name: test.name, message: messageOf(test.id) })
      if (outcome === 'dependency_fail') {
        for (const root of roots(test.id)) {
          if (!blocking.has(root)) {
            const dep = testById.get(root)
            blocking.set(root, {
              id: root,
              kind: dep.kind || 'required',
              outcome: outcomeOf(root),
              name: dep.name,
              message: messageOf(root),
              blocks: 0
            })
          }
          blocking.get(root).blocks++
        }
      }
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
  failing_required: failingRequired,
  blocking_dependencies: [...blocking.values()].sort((a, b) => b.blocks - a.blocks)
}, null, 2))
