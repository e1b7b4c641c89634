#!/usr/bin/env node
// Times the ONNX export of torch.nn.RNN, GRU or LSTM (bench/export_onnx.py) in ONNX Runtime's CPU build through
// onnxruntime-node, single-threaded, for compare_torch.py.
//
//   node bench/onnx_bench.js SPEC.json     (or the spec on stdin)
//   spec: {"min_time": 0.1, "repetitions": 1, "clock": "wall" (or "cpu": process CPU time),
//          "shapes": [{"model": "build-bench/onnx/rnn_h256_l2.onnx", "H": 256, "L": 2, "N": 1, "T": 10,
//                      "repetitions": 1 (optional: this shape's windows)}]}
//          "floor_model": "build-bench/onnx/floor.onnx" (optional: a one-element model)}
// Prints one JSON object: {"ort_version", "floor_us" (the floor model's time per call),
// "results": [{...shape, "us_per_call", "iterations"}]}.
// Per shape: one warm-up run, then runs until min_time seconds have passed; the mean per call,
// best of `repetitions` such windows. The time includes the N-API call (a few microseconds).
'use strict';
const fs = require('fs');
const path = require('path');

function loadOrt() {
  try {
    return require('onnxruntime-node');
  } catch (e) {
    // Installed by scripts/install-deps.sh into tools/node, outside node's search path from here.
    return require(path.join(__dirname, '..', 'tools', 'node', 'node_modules', 'onnxruntime-node'));
  }
}

function randomInput(ort, h, n, t) {
  const values = new Float32Array(t * n * h);
  for (let i = 0; i < values.length; ++i) values[i] = Math.random() * 2 - 1;
  return new ort.Tensor('float32', values, [t, n, h]);
}

// Seconds of process CPU time (user + system, every thread).
function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) * 1e-6;
}

// The window runs for minTime of wall-clock time; `clock` ('wall' or 'cpu') measures it.
async function meanSecondsPerCall(session, feeds, minTime, clock) {
  const start = process.hrtime.bigint();
  const cpuStart = cpuSeconds();
  let iterations = 0;
  let elapsed = 0;
  do {
    await session.run(feeds);
    ++iterations;
    elapsed = Number(process.hrtime.bigint() - start) * 1e-9;
  } while (elapsed < minTime);
  const measured = clock === 'cpu' ? cpuSeconds() - cpuStart : elapsed;
  return {seconds: measured / iterations, iterations};
}

async function main() {
  const specText = process.argv[2] ? fs.readFileSync(process.argv[2], 'utf8')
                                   : fs.readFileSync(0, 'utf8');
  const spec = JSON.parse(specText);
  const minTime = spec.min_time ?? 0.1;
  const repetitions = spec.repetitions ?? 1;
  const clock = spec.clock ?? 'wall';
  const ort = loadOrt();
  const options = {intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential',
                   graphOptimizationLevel: 'all'};
  const sessions = new Map();
  const results = [];
  for (const shape of spec.shapes) {
    if (!sessions.has(shape.model)) {
      sessions.set(shape.model, await ort.InferenceSession.create(shape.model, options));
    }
    const session = sessions.get(shape.model);
    const feeds = {input: randomInput(ort, shape.H, shape.N, shape.T)};
    await session.run(feeds);  // warm-up
    let best = null;
    // A shape may ask for fewer windows (compare_torch.py: one for long calls).
    for (let r = 0; r < (shape.repetitions ?? repetitions); ++r) {
      const run = await meanSecondsPerCall(session, feeds, minTime, clock);
      if (best === null || run.seconds < best.seconds) best = run;
    }
    results.push({...shape, us_per_call: best.seconds * 1e6, iterations: best.iterations});
  }
  let floorUs;
  if (spec.floor_model) {
    // The cost of a call itself: a one-element model, timed the same way.
    const session = await ort.InferenceSession.create(spec.floor_model, options);
    const feeds = {input: new ort.Tensor('float32', new Float32Array(1), [1])};
    await session.run(feeds);
    floorUs = (await meanSecondsPerCall(session, feeds, minTime, clock)).seconds * 1e6;
  }
  const version = ort.env && ort.env.versions ? ort.env.versions.common : undefined;
  process.stdout.write(JSON.stringify({ort_version: version, floor_us: floorUs, results}) + '\n');
}

main().catch((e) => {
  process.stderr.write(`onnx_bench: ${e.stack || e}\n`);
  process.exit(1);
});
