/**
 * Validation of rendered Kubernetes objects against real schemas:
 * - built-in kinds: kubernetes-models' `.validate()` (JSON schemas generated from the Kubernetes OpenAPI spec:
 *   types, required fields, enums, formats), plus a strict unknown-field walk over the generated model types
 *   of @kubernetes/client-node (kubernetes-models accepts fields that do not exist, e.g. a typo);
 * - custom resources: a structural-schema check against the openAPIV3Schema of their CRD (the chart's own
 *   snapshot CRDs) or, for PodMonitor, against the subset of the prometheus-operator schema written below.
 */
import * as k8s from "@kubernetes/client-node";
import { CustomResourceDefinition } from "kubernetes-models/apiextensions.k8s.io/v1/CustomResourceDefinition";
import { DaemonSet } from "kubernetes-models/apps/v1/DaemonSet";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { ClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole";
import { ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding";
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role";
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding";
import { PriorityClass } from "kubernetes-models/scheduling.k8s.io/v1/PriorityClass";
import { CSIDriver } from "kubernetes-models/storage.k8s.io/v1/CSIDriver";
import { StorageClass } from "kubernetes-models/storage.k8s.io/v1/StorageClass";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Namespace } from "kubernetes-models/v1/Namespace";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { isJsonObject, type JsonObject, type K8sObject } from "../../../scripts/deploy/helm-render.js";

interface Validatable {
  validate(): void;
}
type ModelCtor = new (data: JsonObject) => Validatable;

const asCtor = (c: unknown): ModelCtor => c as ModelCtor;

/** apiVersion/kind -> [kubernetes-models class, @kubernetes/client-node model name] */
const BUILTIN: Record<string, [ModelCtor, string]> = {
  "v1/Namespace": [asCtor(Namespace), "V1Namespace"],
  "v1/ConfigMap": [asCtor(ConfigMap), "V1ConfigMap"],
  "v1/ServiceAccount": [asCtor(ServiceAccount), "V1ServiceAccount"],
  "apps/v1/DaemonSet": [asCtor(DaemonSet), "V1DaemonSet"],
  "apps/v1/Deployment": [asCtor(Deployment), "V1Deployment"],
  "rbac.authorization.k8s.io/v1/ClusterRole": [asCtor(ClusterRole), "V1ClusterRole"],
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": [asCtor(ClusterRoleBinding), "V1ClusterRoleBinding"],
  "rbac.authorization.k8s.io/v1/Role": [asCtor(Role), "V1Role"],
  "rbac.authorization.k8s.io/v1/RoleBinding": [asCtor(RoleBinding), "V1RoleBinding"],
  "storage.k8s.io/v1/CSIDriver": [asCtor(CSIDriver), "V1CSIDriver"],
  "storage.k8s.io/v1/StorageClass": [asCtor(StorageClass), "V1StorageClass"],
  "scheduling.k8s.io/v1/PriorityClass": [asCtor(PriorityClass), "V1PriorityClass"],
  "apiextensions.k8s.io/v1/CustomResourceDefinition": [
    asCtor(CustomResourceDefinition),
    "V1CustomResourceDefinition",
  ],
};

export const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "CSIDriver",
  "StorageClass",
  "PriorityClass",
  "CustomResourceDefinition",
  "VolumeSnapshotClass",
]);

interface AttributeType {
  baseName: string;
  type: string;
}

function modelAttributes(name: string): AttributeType[] | null {
  const c: unknown = (k8s as unknown as Record<string, unknown>)[name];
  if (typeof c !== "function") return null;
  const map: unknown = (c as unknown as { attributeTypeMap?: unknown }).attributeTypeMap;
  return Array.isArray(map) ? (map as AttributeType[]) : null;
}

/** Unknown fields and leaf types, walking @kubernetes/client-node's generated model metadata. */
export function strictFieldErrors(value: unknown, type: string, path: string): string[] {
  const errors: string[] = [];
  const walk = (v: unknown, t: string, p: string): void => {
    if (v === null || v === undefined) return;
    const arr = /^Array<(.+)>$/.exec(t);
    if (arr) {
      if (!Array.isArray(v)) return void errors.push(`${p}: expected a list`);
      v.forEach((x, i) => walk(x, arr[1]!, `${p}[${i}]`));
      return;
    }
    const map = /^\{ \[key: string\]: (.+); \}$/.exec(t);
    if (map) {
      if (!isJsonObject(v)) return void errors.push(`${p}: expected a map`);
      for (const [k, x] of Object.entries(v)) walk(x, map[1]!, `${p}.${k}`);
      return;
    }
    switch (t) {
      case "string":
        if (typeof v !== "string") errors.push(`${p}: expected a string, got ${JSON.stringify(v)}`);
        return;
      case "number":
        if (typeof v !== "number") errors.push(`${p}: expected a number, got ${JSON.stringify(v)}`);
        return;
      case "boolean":
        if (typeof v !== "boolean") errors.push(`${p}: expected a boolean, got ${JSON.stringify(v)}`);
        return;
      case "IntOrString":
        if (typeof v !== "string" && typeof v !== "number") errors.push(`${p}: expected int or string`);
        return;
      case "Date":
      case "any":
      case "object":
        return;
    }
    const attrs = modelAttributes(t);
    if (!attrs) return void errors.push(`${p}: unknown model type ${t}`);
    if (!isJsonObject(v)) return void errors.push(`${p}: expected an object (${t})`);
    for (const [k, x] of Object.entries(v)) {
      const a = attrs.find((at) => at.baseName === k);
      if (!a) {
        errors.push(`${p}.${k}: unknown field of ${t}`);
        continue;
      }
      // JSONSchemaProps.items / additionalProperties are typed `any` but hold schemas.
      if (t === "V1JSONSchemaProps" && (k === "items" || k === "additionalProperties") && isJsonObject(x))
        walk(x, "V1JSONSchemaProps", `${p}.${k}`);
      else walk(x, a.type, `${p}.${k}`);
    }
  };
  walk(value, type, path);
  return errors;
}

const LABEL_KEY =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Checks the apiserver applies to every object's metadata (names, label syntax). */
export function metadataErrors(o: K8sObject): string[] {
  const errors: string[] = [];
  const where = `${o.kind}/${o.metadata.name}`;
  if (!DNS_SUBDOMAIN.test(o.metadata.name) || o.metadata.name.length > 253) errors.push(`${where}: bad name`);
  for (const [k, v] of Object.entries(o.metadata.labels ?? {})) {
    if (!LABEL_KEY.test(k)) errors.push(`${where}: bad label key ${k}`);
    if (typeof v !== "string" || v.length > 63 || !LABEL_VALUE.test(v))
      errors.push(`${where}: bad label value ${k}=${String(v)}`);
  }
  for (const [k, v] of Object.entries(o.metadata.annotations ?? {}))
    if (typeof v !== "string") errors.push(`${where}: annotation ${k} is not a string`);
  errors.push(...strictFieldErrors(o.metadata, "V1ObjectMeta", `${where}.metadata`));
  return errors;
}

/** Structural OpenAPI v3 schema check (the subset CRD schemas use), unknown fields reported. */
export function schemaErrors(
  value: unknown,
  schema: JsonObject,
  path: string,
  valueValidationOnly = false,
): string[] {
  const errors: string[] = [];
  const check = (v: unknown, s: JsonObject, p: string): void => {
    if (v === undefined) return;
    if (s["x-kubernetes-int-or-string"] === true) {
      if (typeof v !== "string" && !(typeof v === "number" && Number.isInteger(v)))
        errors.push(`${p}: expected int or string`);
      if (typeof v === "string" && typeof s.pattern === "string" && !new RegExp(s.pattern).test(v))
        errors.push(`${p}: does not match ${s.pattern}`);
      return;
    }
    const type = s.type;
    const typeOk =
      type === undefined ||
      (type === "object" && isJsonObject(v)) ||
      (type === "array" && Array.isArray(v)) ||
      (type === "string" && typeof v === "string") ||
      (type === "boolean" && typeof v === "boolean") ||
      (type === "integer" && typeof v === "number" && Number.isInteger(v)) ||
      (type === "number" && typeof v === "number");
    if (!typeOk) return void errors.push(`${p}: expected ${String(type)}, got ${JSON.stringify(v)}`);
    if (Array.isArray(s.enum) && !s.enum.includes(v))
      errors.push(`${p}: ${JSON.stringify(v)} not in ${JSON.stringify(s.enum)}`);
    if (typeof v === "string" && typeof s.pattern === "string" && !new RegExp(s.pattern).test(v))
      errors.push(`${p}: does not match ${s.pattern}`);
    if (typeof v === "number" && typeof s.minimum === "number" && v < s.minimum)
      errors.push(`${p}: below minimum`);
    if (Array.isArray(v) && isJsonObject(s.items))
      v.forEach((x, i) => check(x, s.items as JsonObject, `${p}[${i}]`));
    if (isJsonObject(v)) {
      if (p.endsWith(".metadata") && type === "object" && !s.properties) return;
      const props = isJsonObject(s.properties) ? s.properties : {};
      for (const r of Array.isArray(s.required) ? s.required : [])
        if (typeof r === "string" && !(r in v)) errors.push(`${p}.${r}: required`);
      for (const [k, x] of Object.entries(v)) {
        const ps = props[k];
        if (isJsonObject(ps)) check(x, ps, `${p}.${k}`);
        else if (isJsonObject(s.additionalProperties)) check(x, s.additionalProperties, `${p}.${k}`);
        else if (s["x-kubernetes-preserve-unknown-fields"] !== true && !valueValidationOnly)
          errors.push(`${p}.${k}: unknown field`);
      }
      if (Array.isArray(s.oneOf)) {
        // oneOf/anyOf/allOf of a structural schema only validate values; fields come from `properties`.
        const matching = s.oneOf.filter(
          (alt) => isJsonObject(alt) && schemaErrors(v, alt, p, true).length === 0,
        );
        if (matching.length !== 1)
          errors.push(`${p}: must match exactly one of oneOf (matches ${matching.length})`);
      }
    }
  };
  check(value, schema, path);
  return errors;
}

/** The served v1 schema of a CRD, or null. */
export function crdSchema(crd: K8sObject): JsonObject | null {
  const spec = crd.spec;
  if (!isJsonObject(spec) || !Array.isArray(spec.versions)) return null;
  const v1 = spec.versions.find((v) => isJsonObject(v) && v.name === "v1" && v.served === true);
  if (!isJsonObject(v1) || !isJsonObject(v1.schema) || !isJsonObject(v1.schema.openAPIV3Schema)) return null;
  return v1.schema.openAPIV3Schema;
}

/**
 * prometheus-operator's PodMonitor (monitoring.coreos.com/v1), the fields this chart can render. Written from
 * the PodMonitor CRD: it is a subset, so an unknown field here may still be valid upstream (then extend it).
 */
export const POD_MONITOR_SCHEMA: JsonObject = {
  type: "object",
  required: ["spec"],
  properties: {
    apiVersion: { type: "string", enum: ["monitoring.coreos.com/v1"] },
    kind: { type: "string", enum: ["PodMonitor"] },
    metadata: { type: "object" },
    spec: {
      type: "object",
      required: ["selector"],
      properties: {
        selector: {
          type: "object",
          properties: {
            matchLabels: { type: "object", additionalProperties: { type: "string" } },
            matchExpressions: {
              type: "array",
              items: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
            },
          },
        },
        namespaceSelector: {
          type: "object",
          properties: { any: { type: "boolean" }, matchNames: { type: "array", items: { type: "string" } } },
        },
        podMetricsEndpoints: {
          type: "array",
          items: {
            type: "object",
            properties: {
              port: { type: "string" },
              path: { type: "string" },
              interval: {
                type: "string",
                pattern:
                  "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
              },
              scrapeTimeout: {
                type: "string",
                pattern:
                  "^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
              },
            },
          },
        },
      },
    },
  },
};

export interface ValidationContext {
  /** CRDs whose schemas validate custom resources (group/kind -> schema) */
  crdSchemas: Map<string, JsonObject>;
}

export function contextFromCrds(crds: K8sObject[]): ValidationContext {
  const crdSchemas = new Map<string, JsonObject>();
  for (const crd of crds) {
    const spec = crd.spec;
    const schema = crdSchema(crd);
    if (isJsonObject(spec) && isJsonObject(spec.names) && schema)
      crdSchemas.set(`${String(spec.group)}/${String(spec.names.kind)}`, schema);
  }
  return { crdSchemas };
}

/** All problems of one object; [] when it is valid. */
export function validateObject(o: K8sObject, ctx: ValidationContext): string[] {
  const where = `${o.kind}/${o.metadata.name}`;
  const errors = metadataErrors(o);
  const builtin = BUILTIN[`${o.apiVersion}/${o.kind}`];
  if (builtin) {
    const [Model, clientType] = builtin;
    try {
      new Model(o).validate();
    } catch (e) {
      errors.push(`${where}: ${e instanceof Error ? e.message : String(e)}`);
    }
    errors.push(...strictFieldErrors(o, clientType, where));
    return errors;
  }
  const group = o.apiVersion.includes("/") ? o.apiVersion.split("/")[0]! : "";
  if (o.apiVersion === "monitoring.coreos.com/v1" && o.kind === "PodMonitor") {
    errors.push(...schemaErrors(o, POD_MONITOR_SCHEMA, where));
    return errors;
  }
  const schema = ctx.crdSchemas.get(`${group}/${o.kind}`);
  if (!schema || !o.apiVersion.endsWith("/v1"))
    return [...errors, `${where}: no schema for ${o.apiVersion} ${o.kind}`];
  errors.push(...schemaErrors(o, schema, where));
  return errors;
}
