/**
 * A local stand-in for the Kubernetes API server, for host tests of the project's Kubernetes code (the
 * event recorder, the placement controller, the orphan report). It speaks plain HTTP JSON on 127.0.0.1 for
 * the few resources the project uses, from an in-memory object map:
 * - get, list (with a `key=value` label selector), watch (chunked JSON lines, from a resourceVersion),
 *   create (409 when the name exists), replace and merge patch (409 on a stale resourceVersion), delete;
 * - core/v1 PersistentVolumeClaims, PersistentVolumes, Nodes, Pods, Events; storage.k8s.io/v1
 *   StorageClasses; snapshot.storage.k8s.io/v1 VolumeSnapshots and VolumeSnapshotContents;
 *   coordination.k8s.io/v1 Leases.
 * Every request is recorded for assertions, and a request can be made to fail once on demand. It is not a
 * real API server: no admission, no validation, no defaulting, no RBAC, no field selectors.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { KubeConfig } from "@kubernetes/client-node";

interface ResourceType {
  readonly groupVersion: string;
  readonly resource: string;
  readonly kind: string;
  readonly namespaced: boolean;
}

const RESOURCES: readonly ResourceType[] = [
  { groupVersion: "v1", resource: "persistentvolumeclaims", kind: "PersistentVolumeClaim", namespaced: true },
  { groupVersion: "v1", resource: "persistentvolumes", kind: "PersistentVolume", namespaced: false },
  { groupVersion: "v1", resource: "nodes", kind: "Node", namespaced: false },
  { groupVersion: "v1", resource: "pods", kind: "Pod", namespaced: true },
  { groupVersion: "v1", resource: "events", kind: "Event", namespaced: true },
  { groupVersion: "storage.k8s.io/v1", resource: "storageclasses", kind: "StorageClass", namespaced: false },
  {
    groupVersion: "snapshot.storage.k8s.io/v1",
    resource: "volumesnapshots",
    kind: "VolumeSnapshot",
    namespaced: true,
  },
  {
    groupVersion: "snapshot.storage.k8s.io/v1",
    resource: "volumesnapshotcontents",
    kind: "VolumeSnapshotContent",
    namespaced: false,
  },
  { groupVersion: "coordination.k8s.io/v1", resource: "leases", kind: "Lease", namespaced: true },
];

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: {
    name?: string;
    namespace?: string;
    generateName?: string;
    uid?: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface RecordedRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  readonly query: Readonly<Record<string, string>>;
  readonly contentType: string | undefined;
  readonly body: unknown;
}

export interface Failure {
  readonly method: string;
  /** Matched against the path (without query). */
  readonly path: RegExp;
  readonly status: number;
  /** How many matching requests fail; 1 by default. */
  times?: number;
}

interface Change {
  readonly rv: number;
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly resource: ResourceType;
  readonly object: KubeObject;
}

interface Watcher {
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly selector: Readonly<Record<string, string>>;
  readonly response: ServerResponse;
}

/** A list or watch: which objects. */
interface Collection {
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly selector: Readonly<Record<string, string>>;
}

function collection(parsed: ParsedPath, query: Record<string, string>): Collection {
  return {
    resource: parsed.resource,
    namespace: parsed.namespace,
    selector: parseSelector(query["labelSelector"]),
  };
}

interface ParsedPath {
  readonly resource: ResourceType;
  readonly namespace: string | undefined;
  readonly name: string | undefined;
}

export class FakeKubeApi {
  readonly requests: RecordedRequest[] = [];
  private readonly objects = new Map<string, KubeObject>();
  private readonly changes: Change[] = [];
  private readonly watchers = new Set<Watcher>();
  private readonly failures: Failure[] = [];
  private resourceVersion = 1;
  private server: Server | undefined;
  private port = 0;

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      void this.handle(req, res);
    });
    await new Promise<void>((resolve) => this.server?.listen(0, "127.0.0.1", resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const watcher of this.watchers) watcher.response.end();
    this.watchers.clear();
    const server = this.server;
    if (server === undefined) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    this.server = undefined;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A KubeConfig whose current cluster is this server (no credentials). */
  kubeConfig(namespace = "default"): KubeConfig {
    const config = new KubeConfig();
    config.loadFromOptions({
      clusters: [{ name: "fake", server: this.url, skipTLSVerify: true }],
      users: [{ name: "fake" }],
      contexts: [{ name: "fake", cluster: "fake", user: "fake", namespace }],
      currentContext: "fake",
    });
    return config;
  }

  /** The same as a kubeconfig file's text, for commands that take `--kubeconfig`. */
  kubeconfigYaml(namespace = "default"): string {
    return this.kubeConfig(namespace).exportConfig();
  }

  /** Creates or replaces an object directly (as another client would); watchers see it. */
  put(object: KubeObject): KubeObject {
    const resource = resourceOfObject(object);
    const namespace = resource.namespaced ? (object.metadata?.namespace ?? "default") : undefined;
    const name = object.metadata?.name;
    if (name === undefined) throw new Error("put: metadata.name is required");
    const key = objectKey(resource, namespace, name);
    const existing = this.objects.get(key);
    return this.store(
      resource,
      key,
      structuredClone(object),
      existing === undefined ? "ADDED" : "MODIFIED",
      existing,
    );
  }

  get(kind: string, name: string, namespace?: string): KubeObject | undefined {
    const resource = resourceOfKind(kind);
    const object = this.objects.get(
      objectKey(resource, resource.namespaced ? (namespace ?? "default") : undefined, name),
    );
    return object === undefined ? undefined : structuredClone(object);
  }

  list(kind: string): KubeObject[] {
    const resource = resourceOfKind(kind);
    return [...this.objects.entries()]
      .filter(([key]) => key.startsWith(`${resource.groupVersion}|${resource.resource}|`))
      .map(([, object]) => structuredClone(object));
  }

  remove(kind: string, name: string, namespace?: string): void {
    const resource = resourceOfKind(kind);
    const key = objectKey(resource, resource.namespaced ? (namespace ?? "default") : undefined, name);
    const existing = this.objects.get(key);
    if (existing === undefined) return;
    this.objects.delete(key);
    this.emit({ rv: this.resourceVersion++, type: "DELETED", resource, object: existing });
  }

  /** Makes the next matching request(s) fail with `status`. */
  failNext(failure: Failure): void {
    this.failures.push({ times: 1, ...failure });
  }

  /** Requests with this method whose path matches. */
  requestsTo(method: string, path: RegExp): RecordedRequest[] {
    return this.requests.filter((r) => r.method === method && path.test(r.path));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", this.url);
    const query = Object.fromEntries(url.searchParams.entries());
    const text = await readBody(req);
    let body: unknown;
    try {
      body = text === "" ? undefined : JSON.parse(text);
    } catch {
      return sendStatus(res, 400, "BadRequest", "body is not JSON");
    }
    const method = req.method ?? "GET";
    this.requests.push({ method, path: url.pathname, query, contentType: req.headers["content-type"], body });

    const failure = this.failures.find((f) => f.method === method && f.path.test(url.pathname));
    if (failure !== undefined) {
      failure.times = (failure.times ?? 1) - 1;
      if (failure.times <= 0) this.failures.splice(this.failures.indexOf(failure), 1);
      return sendStatus(res, failure.status, "InjectedFailure", `injected failure ${failure.status}`);
    }

    const parsed = parsePath(url.pathname);
    if (parsed === undefined)
      return sendStatus(res, 404, "NotFound", `the server could not find ${url.pathname}`);
    const { resource, namespace, name } = parsed;
    switch (method) {
      case "GET":
        if (name !== undefined) return this.getOne(res, resource, namespace, name);
        if (query["watch"] === "true" || query["watch"] === "1") {
          return this.watch(res, collection(parsed, query), query["resourceVersion"]);
        }
        return this.listMany(res, collection(parsed, query));
      case "POST":
        return this.create(res, resource, namespace, body as KubeObject);
      case "PUT":
        return name === undefined
          ? sendStatus(res, 405, "MethodNotAllowed", "PUT needs a name")
          : this.replace(res, resource, namespace, name, body as KubeObject);
      case "PATCH":
        return name === undefined
          ? sendStatus(res, 405, "MethodNotAllowed", "PATCH needs a name")
          : this.patch(res, resource, namespace, name, req.headers["content-type"], body);
      case "DELETE":
        return name === undefined
          ? sendStatus(res, 405, "MethodNotAllowed", "DELETE needs a name")
          : this.deleteOne(res, resource, namespace, name);
      default:
        return sendStatus(res, 405, "MethodNotAllowed", `method ${method}`);
    }
  }

  private getOne(
    res: ServerResponse,
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
  ): void {
    const object = this.objects.get(objectKey(resource, namespace, name));
    if (object === undefined) return notFound(res, resource, name);
    sendJson(res, 200, object);
  }

  private listMany(res: ServerResponse, request: Collection): void {
    const { resource, namespace, selector } = request;
    const items = [...this.objects.values()].filter((o) => matches(o, resource, namespace, selector));
    sendJson(res, 200, {
      apiVersion: resource.groupVersion,
      kind: `${resource.kind}List`,
      metadata: { resourceVersion: String(this.resourceVersion - 1) },
      items,
    });
  }

  private watch(res: ServerResponse, request: Collection, from: string | undefined): void {
    const { resource, namespace, selector } = request;
    res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
    const watcher: Watcher = { resource, namespace, selector, response: res };
    if (from === undefined || from === "" || from === "0") {
      // No starting point: the current state as ADDED events, then changes.
      for (const object of this.objects.values()) {
        if (matches(object, resource, namespace, selector)) writeEvent(res, "ADDED", object);
      }
    } else {
      for (const change of this.changes) {
        if (change.rv > Number(from) && watcherWants(watcher, change))
          writeEvent(res, change.type, change.object);
      }
    }
    this.watchers.add(watcher);
    res.on("close", () => this.watchers.delete(watcher));
  }

  private create(
    res: ServerResponse,
    resource: ResourceType,
    namespace: string | undefined,
    body: KubeObject,
  ): void {
    if (body === undefined || typeof body !== "object") return sendStatus(res, 400, "BadRequest", "no body");
    const metadata = { ...body.metadata };
    const name =
      metadata.name ??
      (metadata.generateName !== undefined ? `${metadata.generateName}${randomSuffix()}` : undefined);
    if (name === undefined)
      return sendStatus(res, 422, "Invalid", "metadata.name or generateName is required");
    const key = objectKey(resource, namespace, name);
    if (this.objects.has(key)) {
      return sendStatus(res, 409, "AlreadyExists", `${resource.resource} "${name}" already exists`);
    }
    const object = { ...body, metadata: { ...metadata, name } };
    if (namespace !== undefined) object.metadata.namespace = namespace;
    sendJson(res, 201, this.store(resource, key, object, "ADDED", undefined));
  }

  private replace(
    res: ServerResponse,
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
    body: KubeObject,
  ): void {
    const key = objectKey(resource, namespace, name);
    const existing = this.objects.get(key);
    if (existing === undefined) return notFound(res, resource, name);
    if (isStale(body, existing)) return conflict(res, resource, name);
    sendJson(res, 200, this.store(resource, key, structuredClone(body), "MODIFIED", existing));
  }

  private patch(
    res: ServerResponse,
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
    contentType: string | undefined,
    body: unknown,
  ): void {
    const type = contentType?.split(";")[0]?.trim();
    // A strategic merge patch is a merge patch for every field the project patches (maps and scalars).
    if (type !== "application/merge-patch+json" && type !== "application/strategic-merge-patch+json") {
      return sendStatus(
        res,
        415,
        "UnsupportedMediaType",
        `patch type ${String(contentType)} is not supported here`,
      );
    }
    const key = objectKey(resource, namespace, name);
    const existing = this.objects.get(key);
    if (existing === undefined) return notFound(res, resource, name);
    // As the API server does: a resourceVersion in the patch is a precondition.
    if (isStale(body as KubeObject | undefined, existing)) return conflict(res, resource, name);
    const patched = mergePatch(structuredClone(existing), body) as KubeObject;
    sendJson(res, 200, this.store(resource, key, patched, "MODIFIED", existing));
  }

  private deleteOne(
    res: ServerResponse,
    resource: ResourceType,
    namespace: string | undefined,
    name: string,
  ): void {
    const key = objectKey(resource, namespace, name);
    const existing = this.objects.get(key);
    if (existing === undefined) return notFound(res, resource, name);
    this.objects.delete(key);
    this.emit({ rv: this.resourceVersion++, type: "DELETED", resource, object: existing });
    sendJson(res, 200, existing);
  }

  private store(
    resource: ResourceType,
    key: string,
    object: KubeObject,
    type: "ADDED" | "MODIFIED",
    existing: KubeObject | undefined,
  ): KubeObject {
    const rv = this.resourceVersion++;
    object.apiVersion = resource.groupVersion;
    object.kind = resource.kind;
    object.metadata = {
      ...object.metadata,
      uid: existing?.metadata?.uid ?? object.metadata?.uid ?? randomUUID(),
      creationTimestamp:
        existing?.metadata?.creationTimestamp ??
        object.metadata?.creationTimestamp ??
        new Date().toISOString(),
      resourceVersion: String(rv),
    };
    this.objects.set(key, object);
    this.emit({ rv, type, resource, object });
    return structuredClone(object);
  }

  private emit(change: Change): void {
    this.changes.push(change);
    for (const watcher of this.watchers) {
      if (watcherWants(watcher, change)) writeEvent(watcher.response, change.type, change.object);
    }
  }
}

function watcherWants(watcher: Watcher, change: Change): boolean {
  return (
    change.resource === watcher.resource &&
    matches(change.object, watcher.resource, watcher.namespace, watcher.selector)
  );
}

function matches(
  object: KubeObject,
  resource: ResourceType,
  namespace: string | undefined,
  selector: Readonly<Record<string, string>>,
): boolean {
  if (object.apiVersion !== resource.groupVersion || object.kind !== resource.kind) return false;
  if (namespace !== undefined && object.metadata?.namespace !== namespace) return false;
  const labels = object.metadata?.labels ?? {};
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

function parseSelector(selector: string | undefined): Record<string, string> {
  const result: Record<string, string> = {};
  for (const term of (selector ?? "").split(",")) {
    if (term === "") continue;
    const [key, value] = term.split("=");
    if (key === undefined || value === undefined)
      throw new Error(`fake API: unsupported label selector ${selector}`);
    result[key] = value;
  }
  return result;
}

function parsePath(path: string): ParsedPath | undefined {
  const parts = path.split("/").filter((p) => p !== "");
  let groupVersion: string;
  let rest: string[];
  if (parts[0] === "api" && parts[1] === "v1") {
    groupVersion = "v1";
    rest = parts.slice(2);
  } else if (parts[0] === "apis" && parts.length >= 3) {
    groupVersion = `${parts[1]}/${parts[2]}`;
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const resource = RESOURCES.find((r) => r.groupVersion === groupVersion && r.resource === rest[0]);
  if (resource === undefined || rest.length > 2) return undefined;
  if (resource.namespaced === false && namespace !== undefined) return undefined;
  return { resource, namespace, name: rest[1] };
}

function resourceOfKind(kind: string): ResourceType {
  const resource = RESOURCES.find((r) => r.kind === kind);
  if (resource === undefined) throw new Error(`fake API: unknown kind ${kind}`);
  return resource;
}

function resourceOfObject(object: KubeObject): ResourceType {
  const resource = RESOURCES.find(
    (r) => r.kind === object.kind && (object.apiVersion ?? r.groupVersion) === r.groupVersion,
  );
  if (resource === undefined) throw new Error(`fake API: unknown kind ${object.apiVersion}/${object.kind}`);
  return resource;
}

function objectKey(resource: ResourceType, namespace: string | undefined, name: string): string {
  return `${resource.groupVersion}|${resource.resource}|${namespace ?? ""}|${name}`;
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> =
    target !== null && typeof target === "object" && !Array.isArray(target)
      ? { ...(target as Record<string, unknown>) }
      : {};
  for (const [key, value] of Object.entries(patch as Record<string, unknown>)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

function randomSuffix(): string {
  return randomUUID().slice(0, 5);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function writeEvent(res: ServerResponse, type: string, object: KubeObject): void {
  res.write(`${JSON.stringify({ type, object })}\n`);
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  res.writeHead(code, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, {
    kind: "Status",
    apiVersion: "v1",
    metadata: {},
    status: "Failure",
    message,
    reason,
    code,
  });
}

/** A write that names a resourceVersion other than the stored one (optimistic concurrency). */
function isStale(sent: KubeObject | undefined, existing: KubeObject): boolean {
  const version = sent?.metadata?.resourceVersion;
  return version !== undefined && version !== existing.metadata?.resourceVersion;
}

function conflict(res: ServerResponse, resource: ResourceType, name: string): void {
  sendStatus(
    res,
    409,
    "Conflict",
    `Operation cannot be fulfilled on ${resource.resource} "${name}": the object has been modified`,
  );
}

function notFound(res: ServerResponse, resource: ResourceType, name: string): void {
  sendStatus(res, 404, "NotFound", `${resource.resource} "${name}" not found`);
}
