/**
 * Renders a Helm chart directory the way `helm template` does, for the subset of Helm the thinpool-csi chart
 * uses (see gotemplate.ts): values.yaml deep-merged with overrides (null deletes a key, lists are replaced),
 * .Release/.Chart/.Capabilities/.Template objects, every templates/ file that does not start with "_"
 * rendered and split into YAML documents, `<no value>` replaced by "" as Helm does, NOTES.txt rendered apart.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { parse as yamlParse, parseAllDocuments } from "yaml";
import { GoMethod, GoStruct, TemplateSet } from "./gotemplate.js";

export type JsonObject = { [k: string]: unknown };

export interface K8sObject extends JsonObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
  };
}

export interface RenderedFile {
  /** path relative to the chart, e.g. "templates/daemonset.yaml" */
  template: string;
  objects: K8sObject[];
}

export interface ChartRender {
  files: RenderedFile[];
  /** every object, in file order */
  objects: K8sObject[];
  notes: string;
  values: JsonObject;
}

export interface RenderInput {
  chartDir: string;
  releaseName: string;
  namespace: string;
  /** deep-merged over values.yaml, like `helm template -f` */
  values?: JsonObject;
  /** API group/versions and group/version/Kinds the cluster serves beyond the built-in ones */
  apiVersions?: string[];
  /** .Release.Service ("Helm" under helm) */
  service?: string;
  kubeVersion?: { major: string; minor: string };
}

/** Built-in APIs of any supported cluster (Kubernetes >= 1.25), as `.Capabilities.APIVersions` holds them. */
export const BUILTIN_API_VERSIONS: readonly string[] = [
  "v1",
  "apps/v1",
  "rbac.authorization.k8s.io/v1",
  "storage.k8s.io/v1",
  "scheduling.k8s.io/v1",
  "coordination.k8s.io/v1",
  "apiextensions.k8s.io/v1",
  "policy/v1",
  "events.k8s.io/v1",
];

export class ChartRenderError extends Error {
  override readonly name = "ChartRenderError";
}

export function isJsonObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Helm's value coalescing: maps merge recursively, anything else (lists too) is replaced, null deletes. */
export function mergeValues(base: JsonObject, over: JsonObject): JsonObject {
  const out: JsonObject = { ...base };
  for (const [k, v] of Object.entries(over)) {
    if (v === null) delete out[k];
    else if (isJsonObject(v) && isJsonObject(out[k])) out[k] = mergeValues(out[k] as JsonObject, v);
    else out[k] = v;
  }
  return out;
}

/** YAML as Helm reads it (go-yaml v2: YAML 1.1, so `on`/`yes` are booleans and `0600` is octal). */
export function parseYaml11(text: string): unknown {
  return yamlParse(text, { version: "1.1" });
}

function listFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...listFiles(p));
    else out.push(p);
  }
  return out;
}

function chartStruct(meta: JsonObject): GoStruct {
  const fields: Record<string, unknown> = {
    Name: "",
    Version: "",
    AppVersion: "",
    Description: "",
    Type: "",
    KubeVersion: "",
    Home: "",
    Keywords: [],
    Annotations: {},
  };
  for (const [k, v] of Object.entries(meta)) fields[k.charAt(0).toUpperCase() + k.slice(1)] = v;
  return new GoStruct("*chart.Metadata", fields);
}

function toObjects(text: string, where: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text, { version: "1.1" })) {
    if (doc.errors.length)
      throw new ChartRenderError(`${where}: YAML parse error: ${doc.errors[0]!.message}\n${text}`);
    const obj: unknown = doc.toJS();
    if (obj === null || obj === undefined) continue;
    if (!isJsonObject(obj) || typeof obj.apiVersion !== "string" || typeof obj.kind !== "string")
      throw new ChartRenderError(`${where}: document is not a Kubernetes object:\n${doc.toString()}`);
    const md = obj.metadata;
    if (!isJsonObject(md) || typeof md.name !== "string" || md.name === "")
      throw new ChartRenderError(`${where}: ${obj.kind} without metadata.name`);
    objects.push(obj as K8sObject);
  }
  return objects;
}

export function renderChart(input: RenderInput): ChartRender {
  const chartMeta = parseYaml11(readFileSync(join(input.chartDir, "Chart.yaml"), "utf8"));
  const defaults = parseYaml11(readFileSync(join(input.chartDir, "values.yaml"), "utf8"));
  if (!isJsonObject(chartMeta) || typeof chartMeta.name !== "string")
    throw new ChartRenderError("bad Chart.yaml");
  if (!isJsonObject(defaults)) throw new ChartRenderError("bad values.yaml");
  const values = mergeValues(defaults, input.values ?? {});
  const chartName = chartMeta.name;
  const apiVersions = new Set([...BUILTIN_API_VERSIONS, ...(input.apiVersions ?? [])]);
  const kube = input.kubeVersion ?? { major: "1", minor: "34" };

  const set = new TemplateSet();
  const templatesDir = join(input.chartDir, "templates");
  const files = listFiles(templatesDir).map((p) => ({
    path: p,
    rel: relative(input.chartDir, p).split(sep).join("/"),
  }));
  for (const f of files) set.add(`${chartName}/${f.rel}`, readFileSync(f.path, "utf8"));

  const top = (templateName: string): GoStruct =>
    new GoStruct("chartutil.Values", {
      Values: values,
      Release: new GoStruct("chartutil.ReleaseOptions", {
        Name: input.releaseName,
        Namespace: input.namespace,
        Service: input.service ?? "Helm",
        IsInstall: true,
        IsUpgrade: false,
        Revision: 1n,
      }),
      Chart: chartStruct(chartMeta),
      Capabilities: new GoStruct("chartutil.Capabilities", {
        APIVersions: new GoStruct("chartutil.VersionSet", {
          Has: new GoMethod((v: unknown) => typeof v === "string" && apiVersions.has(v)),
        }),
        KubeVersion: new GoStruct("chartutil.KubeVersion", {
          Version: `v${kube.major}.${kube.minor}.0`,
          GitVersion: `v${kube.major}.${kube.minor}.0`,
          Major: kube.major,
          Minor: kube.minor,
        }),
      }),
      Template: new GoStruct("chartutil.Template", {
        Name: templateName,
        BasePath: `${chartName}/templates`,
      }),
    });

  const rendered: RenderedFile[] = [];
  let notes = "";
  for (const f of files) {
    const base = f.rel.split("/").pop() ?? "";
    if (base.startsWith("_")) continue;
    const name = `${chartName}/${f.rel}`;
    const text = set.render(name, top(name)).replaceAll("<no value>", "");
    if (f.rel === "templates/NOTES.txt") {
      notes = text;
      continue;
    }
    if (!/\.(ya?ml|tpl)$/.test(base)) throw new ChartRenderError(`unexpected file in templates/: ${f.rel}`);
    if (text.trim() === "") continue;
    rendered.push({ template: f.rel, objects: toObjects(text, name) });
  }
  return { files: rendered, objects: rendered.flatMap((r) => r.objects), notes, values };
}
