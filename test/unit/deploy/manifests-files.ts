import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { isJsonObject, type JsonObject, type K8sObject } from "../../../scripts/deploy/helm-render.js";
import { MANIFESTS_DIR } from "../../../scripts/deploy/paths.js";

export const KUSTOMIZATION = "kustomization.yaml";

/** The YAML files in deploy/manifests (kustomization.yaml excluded), sorted. */
export function manifestFileNames(): string[] {
  return readdirSync(MANIFESTS_DIR())
    .filter((f) => /\.ya?ml$/.test(f) && f !== KUSTOMIZATION)
    .sort();
}

export function parseObjects(text: string, where: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text, { version: "1.1" })) {
    assert.deepEqual(doc.errors, [], `${where}: YAML errors`);
    const v: unknown = doc.toJS();
    if (v === null || v === undefined) continue;
    assert.ok(
      isJsonObject(v) && typeof v.apiVersion === "string" && typeof v.kind === "string",
      `${where}: object`,
    );
    out.push(v as K8sObject);
  }
  return out;
}

/** file name -> objects of the committed plain manifests */
export function readCommittedManifests(): Map<string, K8sObject[]> {
  return new Map(
    manifestFileNames().map((f) => [f, parseObjects(readFileSync(join(MANIFESTS_DIR(), f), "utf8"), f)]),
  );
}

export function readKustomization(): JsonObject {
  const [doc, ...rest] = parseAllDocuments(readFileSync(join(MANIFESTS_DIR(), KUSTOMIZATION), "utf8"));
  assert.ok(doc && rest.length === 0, "one kustomization document");
  const v: unknown = doc.toJS();
  assert.ok(isJsonObject(v));
  return v;
}
