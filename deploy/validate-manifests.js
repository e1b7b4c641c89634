#!/usr/bin/env node
// Offline checks of deploy/kubernetes (or the folders given): every object against the
// Kubernetes OpenAPI schema (the npm package kubernetes-models, tools/node), the
// kustomization's references, and how the objects refer to each other (selectors, ports,
// ConfigMaps, Secrets, probe ports, grace periods). A Secret volume must name a Secret that is
// defined, generated, or made by a cert-manager Certificate in the folder's cert-manager.yaml. YAML is read with /usr/bin/python3's yaml (PYTHON
// overrides). Exit status 1 with one line per problem.
//
//   node deploy/validate-manifests.js [deploy/kubernetes ...]
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const modelsDir = path.join(root, 'tools', 'node', 'node_modules', 'kubernetes-models');
const python = process.env.PYTHON || '/usr/bin/python3';

// apiVersion -> the folder of kubernetes-models ("v1" is the core group).
function modelPath(apiVersion, kind) {
  return path.join(modelsDir, apiVersion, `${kind}.js`);
}

function readYaml(file) {
  const code = 'import json, sys, yaml\n' +
    'print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))';
  return JSON.parse(execFileSync(python, ['-c', code, file], { encoding: 'utf8' }));
}

const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

function checkFolder(dir) {
  const kfile = path.join(dir, 'kustomization.yaml');
  if (!fs.existsSync(kfile)) {
    problem(dir, 'no kustomization.yaml');
    return;
  }
  const [kust] = readYaml(kfile);
  const objects = [];  // {file, obj}
  for (const res of kust.resources || []) {
    const file = path.join(dir, res);
    if (!fs.existsSync(file)) {
      problem(kfile, `resource ${res} does not exist`);
      continue;
    }
    for (const obj of readYaml(file)) objects.push({ file: path.relative(root, file), obj });
  }
  const configMaps = new Set();
  for (const gen of kust.configMapGenerator || []) {
    configMaps.add(gen.name);
    for (const f of gen.files || []) {
      const src = path.join(dir, f.includes('=') ? f.split('=')[1] : f);
      if (!fs.existsSync(src)) problem(kfile, `configMapGenerator ${gen.name}: ${f} does not exist`);
    }
  }
  const imageNames = new Set((kust.images || []).map((i) => i.name));
  const secrets = new Set((kust.secretGenerator || []).map((g) => g.name));
  for (const gen of kust.secretGenerator || []) {
    for (const f of gen.files || []) {
      const src = path.join(dir, f.includes('=') ? f.split('=')[1] : f);
      if (!fs.existsSync(src)) problem(kfile, `secretGenerator ${gen.name}: ${f} does not exist`);
    }
  }
  const certManager = path.join(dir, 'cert-manager.yaml');
  if (fs.existsSync(certManager)) {
    for (const d of readYaml(certManager)) {
      if (d.kind === 'Certificate') secrets.add(d.spec.secretName);
    }
  }

  // 1. The schema.
  for (const { file, obj } of objects) {
    const where = `${file} ${obj.kind}/${obj.metadata && obj.metadata.name}`;
    const mod = modelPath(obj.apiVersion || '', obj.kind || '');
    if (!fs.existsSync(mod)) {
      problem(where, `unknown apiVersion/kind ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    const Model = require(mod)[obj.kind];
    try {
      new Model(obj).validate();
    } catch (e) {
      problem(where, `schema: ${e.message}`);
    }
    if (obj.kind === 'ConfigMap') configMaps.add(obj.metadata.name);
    if (obj.kind === 'Secret') secrets.add(obj.metadata.name);
    if (obj.metadata && obj.metadata.namespace && kust.namespace && obj.metadata.namespace !== kust.namespace) {
      problem(where, `namespace ${obj.metadata.namespace} differs from the kustomization's ${kust.namespace}`);
    }
  }

  // 2. References between objects.
  const workloads = objects.filter(({ obj }) => ['Deployment', 'StatefulSet'].includes(obj.kind));
  const matches = (selector, labels) =>
    Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
  const podsOf = (selector) => workloads.filter(({ obj }) => matches(selector, obj.spec.template.metadata.labels));

  for (const { file, obj } of workloads) {
    const where = `${file} ${obj.kind}/${obj.metadata.name}`;
    const pod = obj.spec.template.spec;
    if (!matches(obj.spec.selector.matchLabels, obj.spec.template.metadata.labels)) {
      problem(where, 'selector does not match the pod template labels');
    }
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of volumes.values()) {
      if (v.configMap && !configMaps.has(v.configMap.name)) {
        problem(where, `volume ${v.name}: ConfigMap ${v.configMap.name} is not defined or generated`);
      }
      if (v.secret && !secrets.has(v.secret.secretName)) {
        problem(where, `volume ${v.name}: Secret ${v.secret.secretName} is not defined, generated or a Certificate's`);
      }
    }
    for (const c of [...(pod.initContainers || []), ...pod.containers]) {
      const cw = `${where} container ${c.name}`;
      const ports = c.ports || [];
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name)) problem(cw, `volumeMount ${m.name} has no volume`);
      }
      if (!c.image.includes('/') && !imageNames.has(c.image)) {
        problem(cw, `image ${c.image} is neither a full name nor in the kustomization's images`);
      }
      const sc = { ...(pod.securityContext || {}), ...(c.securityContext || {}) };
      if (!sc.runAsNonRoot) problem(cw, 'runAsNonRoot is not set');
      if (!(c.securityContext || {}).readOnlyRootFilesystem) problem(cw, 'readOnlyRootFilesystem is not set');
      if (!c.resources || !c.resources.requests || !c.resources.limits) problem(cw, 'no resource requests and limits');
      for (const kind of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
        const probe = c[kind];
        if (!probe) continue;
        const handler = probe.grpc || probe.httpGet || probe.tcpSocket;
        const port = handler && handler.port;
        const known = ports.some((p) => p.containerPort === port || p.name === port);
        if (!known) problem(cw, `${kind} port ${port} is not one of the container's ports`);
      }
      const preStop = c.lifecycle && c.lifecycle.preStop && c.lifecycle.preStop.exec;
      const sleep = preStop && preStop.command[0] === 'sleep' ? Number(preStop.command[1]) : 0;
      const grace = pod.terminationGracePeriodSeconds === undefined ? 30 : pod.terminationGracePeriodSeconds;
      if (sleep >= grace) problem(cw, `preStop sleeps ${sleep}s, the whole grace period (${grace}s)`);
    }
  }

  for (const { file, obj } of objects.filter(({ obj }) => obj.kind === 'Service')) {
    const where = `${file} Service/${obj.metadata.name}`;
    const pods = podsOf(obj.spec.selector);
    if (pods.length === 0) {
      problem(where, 'its selector matches no workload');
      continue;
    }
    for (const p of obj.spec.ports) {
      const target = p.targetPort === undefined ? p.port : p.targetPort;
      for (const { obj: w } of pods) {
        const ok = w.spec.template.spec.containers.some((c) =>
          (c.ports || []).some((cp) => cp.containerPort === target || cp.name === target));
        if (!ok) problem(where, `port ${p.name}: targetPort ${target} is not a port of ${w.metadata.name}`);
      }
    }
  }

  const byName = (kind, name) => workloads.find(({ obj }) => obj.kind === kind && obj.metadata.name === name);
  for (const { file, obj } of objects) {
    const where = `${file} ${obj.kind}/${obj.metadata.name}`;
    if (obj.kind === 'HorizontalPodAutoscaler') {
      const target = byName(obj.spec.scaleTargetRef.kind, obj.spec.scaleTargetRef.name);
      if (!target) problem(where, `scaleTargetRef ${obj.spec.scaleTargetRef.name} does not exist`);
      else if (obj.spec.metrics.some((m) => m.type === 'Resource') &&
               target.obj.spec.template.spec.containers.some((c) => !(c.resources && c.resources.requests))) {
        problem(where, 'a Resource metric needs resource requests on every container');
      }
    }
    if (obj.kind === 'PodDisruptionBudget' && podsOf(obj.spec.selector.matchLabels).length === 0) {
      problem(where, 'its selector matches no workload');
    }
  }
  return objects.length;
}

const dirs = process.argv.slice(2).length ? process.argv.slice(2) : [path.join(root, 'deploy', 'kubernetes')];
if (!fs.existsSync(modelsDir)) {
  console.error(`validate-manifests: ${modelsDir} missing; run scripts/install-deps.sh`);
  process.exit(2);
}
let count = 0;
for (const dir of dirs) count += checkFolder(path.resolve(dir));
for (const p of problems) console.error(`validate-manifests: ${p}`);
console.log(`validate-manifests: ${count} objects in ${dirs.length} folder(s), ${problems.length} problem(s)`);
process.exit(problems.length ? 1 : 0);
