import assert from "node:assert/strict";
import {
  type ChartRender,
  isJsonObject,
  type JsonObject,
  type K8sObject,
  renderChart,
} from "../../../scripts/deploy/helm-render.js";
import { CHART_DIR } from "../../../scripts/deploy/paths.js";
import { contextFromCrds, type ValidationContext, validateObject } from "./k8s-validate.js";

export const RELEASE = "thinpool-csi";
export const NAMESPACE = "storage-system";
export const SNAPSHOT_API = ["snapshot.storage.k8s.io/v1", "snapshot.storage.k8s.io/v1/VolumeSnapshotClass"];
export const MONITORING_API = ["monitoring.coreos.com/v1", "monitoring.coreos.com/v1/PodMonitor"];

export function render(values: JsonObject = {}, apiVersions: string[] = [], release = RELEASE): ChartRender {
  return renderChart({
    chartDir: CHART_DIR(),
    releaseName: release,
    namespace: NAMESPACE,
    values,
    apiVersions,
  });
}

let ctx: ValidationContext | null = null;
/** Validation context holding the chart's own snapshot CRD schemas. */
export function validationContext(): ValidationContext {
  if (!ctx) {
    const crds = render({ snapshotCRDs: { install: true } }).objects.filter(
      (o) => o.kind === "CustomResourceDefinition",
    );
    assert.equal(crds.length, 3, "the chart renders three snapshot CRDs");
    ctx = contextFromCrds(crds);
  }
  return ctx;
}

export function assertAllValid(objects: K8sObject[]): void {
  const errors = objects.flatMap((o) => validateObject(o, validationContext()));
  assert.deepEqual(errors, []);
}

export function only(objects: K8sObject[], kind: string, name?: string): K8sObject {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  assert.equal(found.length, 1, `exactly one ${kind}${name ? "/" + name : ""} (found ${found.length})`);
  return found[0]!;
}

// --- typed access to workload pieces --------------------------------------------------------------------

export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string } };
}
export interface VolumeMount {
  name: string;
  mountPath: string;
  mountPropagation?: string;
  readOnly?: boolean;
}
export interface Port {
  name?: string;
  containerPort: number;
}
export interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: EnvVar[];
  ports?: Port[];
  volumeMounts?: VolumeMount[];
  securityContext?: JsonObject;
  livenessProbe?: { httpGet?: { path: string; port: string | number } };
}
export interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  configMap?: { name: string };
}
export interface PodSpec {
  serviceAccountName?: string;
  priorityClassName?: string;
  terminationGracePeriodSeconds?: number;
  containers: Container[];
  volumes?: Volume[];
}

export function podSpec(workload: K8sObject): PodSpec {
  const spec = workload.spec;
  assert.ok(isJsonObject(spec) && isJsonObject(spec.template) && isJsonObject(spec.template.spec));
  return spec.template.spec as unknown as PodSpec;
}

export function container(spec: PodSpec, name: string): Container {
  const c = spec.containers.find((x) => x.name === name);
  assert.ok(c, `container ${name}`);
  return c;
}

/** `--flag=value` / `--flag` args as a map (a bare flag is "true"); a repeated flag is an error. */
export function argMap(args: string[] = []): Map<string, string> {
  const m = new Map<string, string>();
  for (const a of args) {
    const match = /^(--[a-z0-9-]+)(?:=(.*))?$/s.exec(a);
    if (!match) {
      m.set(a, "");
      continue;
    }
    assert.ok(!m.has(match[1]!), `flag ${match[1]} given twice`);
    m.set(match[1]!, match[2] ?? "true");
  }
  return m;
}

export interface Rule {
  apiGroups?: string[];
  resources?: string[];
  verbs: string[];
  nonResourceURLs?: string[];
}

export function rules(role: K8sObject): Rule[] {
  const r = role.rules;
  assert.ok(Array.isArray(r), `${role.kind}/${role.metadata.name} has rules`);
  return r as Rule[];
}

/** Rules flattened to "group/resource" -> sorted verbs. */
export function permissionTable(rs: Rule[]): Record<string, string[]> {
  const table: Record<string, Set<string>> = {};
  for (const r of rs)
    for (const g of r.apiGroups ?? [])
      for (const res of r.resources ?? []) {
        const key = `${g === "" ? "core" : g}/${res}`;
        table[key] ??= new Set();
        for (const v of r.verbs) table[key].add(v);
      }
  return Object.fromEntries(
    Object.entries(table)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => [k, [...v].sort()]),
  );
}
