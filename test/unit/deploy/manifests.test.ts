/**
 * deploy/manifests: a kustomization of plain YAML generated from the chart by
 * scripts/deploy/render-manifests.ts. Checks that it lists its files, that every object is valid, that it
 * equals a fresh render of the chart, and (where kubectl is installed) that `kubectl kustomize` builds it.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { isJsonObject, type K8sObject } from "../../../scripts/deploy/helm-render.js";
import { MANIFESTS_DIR } from "../../../scripts/deploy/paths.js";
import {
  GENERATED_HEADER,
  MANIFEST_NAMESPACE,
  namespaceTransformer,
  renderManifestSet,
  renderManifestTexts,
} from "../../../scripts/deploy/render-manifests.js";
import { assertAllValid, only } from "./fixtures.js";
import { CLUSTER_SCOPED } from "./k8s-validate.js";
import {
  KUSTOMIZATION,
  manifestFileNames,
  parseObjects,
  readCommittedManifests,
  readKustomization,
} from "./manifests-files.js";

const key = (o: K8sObject): string => `${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;

describe("deploy: plain manifests (kubectl apply -k deploy/manifests)", () => {
  it("the kustomization lists exactly the files present, once each", () => {
    const k = readKustomization();
    assert.equal(k.apiVersion, "kustomize.config.k8s.io/v1beta1");
    assert.equal(k.kind, "Kustomization");
    assert.equal(
      k.namespace,
      undefined,
      "the namespace comes from the transformer, which also moves RBAC subjects",
    );
    assert.deepEqual(
      (k.transformers as unknown[]).map((t) => parseYaml(String(t))),
      [namespaceTransformer(MANIFEST_NAMESPACE)],
    );
    const resources = k.resources;
    assert.ok(Array.isArray(resources));
    assert.equal(new Set(resources).size, resources.length, "no duplicate resources");
    assert.deepEqual([...resources].map(String).sort(), manifestFileNames());
  });

  it("every object validates against the Kubernetes schemas (snapshot classes against their CRD)", () => {
    const objects = [...readCommittedManifests().values()].flat();
    assert.ok(objects.length >= 20, `objects found: ${objects.length}`);
    assertAllValid(objects);
  });

  it("holds a namespace, the node plugin, a StorageClass, a default VolumeSnapshotClass and an existing pool", () => {
    const objects = [...readCommittedManifests().values()].flat();
    only(objects, "Namespace", MANIFEST_NAMESPACE);
    only(objects, "DaemonSet", "thinpool-csi-node");
    only(objects, "CSIDriver", "thinpool.csi.dev");
    const sc = only(objects, "StorageClass");
    assert.equal(sc.volumeBindingMode, "WaitForFirstConsumer");
    const vsc = only(objects, "VolumeSnapshotClass");
    assert.equal(vsc.metadata.annotations?.["snapshot.storage.kubernetes.io/is-default-class"], "true");
    const cm = only(objects, "ConfigMap");
    const config = parseConfig((cm.data as Record<string, string>)["config.yaml"] ?? "");
    assert.deepEqual(config.pools, [{ name: "default", source: { type: "existing", device: "vg0-pool0" } }]);
    for (const o of objects) {
      if (CLUSTER_SCOPED.has(o.kind))
        assert.equal(o.metadata.namespace, undefined, `${key(o)} is cluster-scoped`);
      else assert.equal(o.metadata.namespace, MANIFEST_NAMESPACE, `${key(o)} is in ${MANIFEST_NAMESPACE}`);
      assert.equal(o.metadata.annotations?.["helm.sh/hook"], undefined, `${key(o)} is no Helm hook`);
      assert.equal(o.metadata.labels?.["app.kubernetes.io/managed-by"] === "Helm", false);
    }
  });

  it("equals a fresh render of the chart (rerun scripts/deploy/render-manifests when it does not)", async () => {
    const fresh = renderManifestSet();
    const committed = readCommittedManifests();
    assert.deepEqual([...committed.keys()], [...fresh.files.keys()].sort());
    for (const [file, objects] of fresh.files)
      assert.deepEqual(committed.get(file), objects, `${file} is stale`);
    assert.deepEqual(readKustomization(), fresh.kustomization);
    const texts = await renderManifestTexts();
    for (const [file, text] of texts) {
      assert.ok(text.startsWith(GENERATED_HEADER), `${file} carries the generated header`);
      assert.equal(
        readFileSync(join(MANIFESTS_DIR(), file), "utf8"),
        text,
        `${file} differs from the render`,
      );
    }
  });

  it("kubectl kustomize builds it into the same objects", function () {
    if (!haveKubectl()) this.skip();
    const built = kustomizeBuild(MANIFESTS_DIR());
    const committed = [...readCommittedManifests().values()].flat().map(kustomizeView);
    assert.deepEqual(built.map(key).sort(), committed.map(key).sort());
    const byKey = new Map(built.map((o) => [key(o), o]));
    for (const o of committed) assert.deepEqual(byKey.get(key(o)), o, `${key(o)} changed by kustomize`);
  });

  it("changing the transformer's namespace moves every object and RBAC subject", function () {
    if (!haveKubectl()) this.skip();
    const dir = mkdtempSync(join(tmpdir(), "thinpool-csi-kustomize-"));
    try {
      for (const f of readdirSync(MANIFESTS_DIR())) copyFileSync(join(MANIFESTS_DIR(), f), join(dir, f));
      const k = readFileSync(join(dir, KUSTOMIZATION), "utf8");
      writeFileSync(
        join(dir, KUSTOMIZATION),
        k.replace(`namespace: ${MANIFEST_NAMESPACE}`, "namespace: other-ns"),
      );
      const built = kustomizeBuild(dir);
      const text = JSON.stringify(built);
      assert.ok(!text.includes(`"namespace":"${MANIFEST_NAMESPACE}"`), "nothing left in the old namespace");
      only(built, "Namespace", "other-ns");
      for (const b of built.filter((o) => o.kind.endsWith("Binding")))
        for (const s of b.subjects as Array<{ namespace: string }>) assert.equal(s.namespace, "other-ns");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the files are the generator's only output: the kustomization is generated too", () => {
    const text = readFileSync(join(MANIFESTS_DIR(), KUSTOMIZATION), "utf8");
    assert.ok(text.startsWith(GENERATED_HEADER));
  });
});

function haveKubectl(): boolean {
  const probe = spawnSync("kubectl", ["version", "--client"], { encoding: "utf8" });
  const ok = !probe.error && probe.status === 0;
  if (!ok) console.log("      (kubectl is not installed: the kustomize build is not checked)");
  return ok;
}

function kustomizeBuild(dir: string): K8sObject[] {
  const out = spawnSync("kubectl", ["kustomize", dir], { encoding: "utf8", timeout: 60_000 });
  assert.equal(out.status, 0, out.stderr);
  return parseObjects(out.stdout, "kustomize output");
}

/**
 * What kustomize makes of a committed object: it does not know that VolumeSnapshotClass (a CRD kind) is
 * cluster-scoped, so it gives it the namespace, which the apiserver drops for cluster-scoped objects.
 */
function kustomizeView(o: K8sObject): K8sObject {
  if (o.kind !== "VolumeSnapshotClass") return o;
  return { ...o, metadata: { ...o.metadata, namespace: MANIFEST_NAMESPACE } };
}

/** config.yaml is the driver's config file, not a Kubernetes object. */
function parseConfig(text: string): Record<string, unknown> {
  const v: unknown = parseYaml(text);
  assert.ok(isJsonObject(v), "config.yaml is a map");
  return v;
}
