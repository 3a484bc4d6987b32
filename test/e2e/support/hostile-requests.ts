/**
 * A generator of malformed and adversarial CSI requests, each with the gRPC code the CSI spec (v1.12.0)
 * names for it. Pure: no I/O; the fixtures (ids and paths that exist on the node under test) come in
 * through {@link HostileContext}, built by test/e2e/suites/hostile-input.test.ts.
 *
 * How the expected code is chosen (spec.md sections in brackets):
 * - A missing REQUIRED field, an invalid value, or a field the plugin does not allow: INVALID_ARGUMENT
 *   [Error Scheme]. That includes strings over the general 128-byte limit and maps over 4 KiB [Size
 *   Limits: "fields SHALL NOT exceed the limits"]; paths override the limit (the SP MUST accept at least
 *   128 bytes), so a 128-byte path must work and only paths the OS cannot hold are invalid. Names with the
 *   banned control characters U+0000-U+0008, U+000B, U+000C, U+000E-U+001F, U+007F-U+009F are invalid
 *   [CreateVolumeRequest.name, CreateSnapshotRequest.name]; other Unicode is allowed.
 *   `mutable_parameters` without the MODIFY_VOLUME capability is invalid ("SHALL NOT be specified").
 *   Access modes, fs types and mount flags this plugin never supports (MULTI_NODE_*, btrfs, bind, ...)
 *   are "not allowed by the Plugin": INVALID_ARGUMENT in every RPC (ValidateVolumeCapabilities answers
 *   OK without `confirmed`, as its spec says). Paths outside the kubelet directory,
 *   with `..`, relative, or resolving through a symlink out of it are invalid values (the driver runs
 *   privileged); NodeGetVolumeStats only reads and its table names NOT_FOUND for "volume not at path".
 * - A volume that exists but cannot be used as asked (a block-only volume staged or published as a
 *   filesystem, a published access type other than the staged one, a path occupied by another volume's
 *   mount): FAILED_PRECONDITION [NodeStage/NodePublish "Exceeds capabilities"; gRPC: the state of the
 *   system, not the arguments, is wrong].
 * - Ids that are not a volume/snapshot of this node (garbage, another node's `<device>@other-node`, a
 *   snapshot id where a volume id belongs): NOT_FOUND for the RPCs whose tables say "does not exist";
 *   DeleteVolume/DeleteSnapshot answer OK ("does not exist ... MUST reply 0 OK"); ListSnapshots answers
 *   an empty list; NodeUnstage answers OK ("not staged to the staging_target_path ... MUST reply 0 OK"),
 *   and NodeUnpublish the same by idempotency, touching nothing at the path. The one exception is a
 *   CreateVolume source on another node: RESOURCE_EXHAUSTED ("Unable to provision in accessible_topology"),
 *   which makes the provisioner reschedule onto the node that holds it (README, sidecar notes §0.4).
 * - capacity_range: negative, or limit < required: INVALID_ARGUMENT ("MUST NOT be negative"); a size the
 *   plugin cannot represent (above 2^53 bytes, e.g. 2^63-1): OUT_OF_RANGE ("Unsupported capacity_range");
 *   a size it could make but the pool cannot hold: RESOURCE_EXHAUSTED. A huge limit_bytes is only an
 *   upper bound and is honoured. NodeExpandVolume to a size the volume already has (or exceeds) is OK
 *   ("already larger than or equal to the target capacity ... SHOULD reply 0 OK"), and capacity_range is
 *   OPTIONAL there.
 * - A name already used with other arguments: ALREADY_EXISTS; the same request again, or one the existing
 *   volume is "compatible with" (a range its size satisfies), OK. Capabilities are compared exactly, so
 *   only clearly incompatible ones (another fs type) are generated.
 * - RPCs the driver does not offer: UNIMPLEMENTED.
 * - Racing identical calls: OK or ABORTED ("Operation pending"), with one result.
 */
import { status } from "@grpc/grpc-js";

export type Service = "identity" | "controller" | "node";

export type Category =
  | "missing-field"
  | "size"
  | "name"
  | "id"
  | "path"
  | "mount-flag"
  | "access-mode"
  | "parameters"
  | "field-limit"
  | "duplicate"
  | "unimplemented";

/** One RPC with its request, as the suite sends it over the socket. */
export interface CsiCall {
  service: Service;
  method: string;
  request: Record<string, unknown>;
}

export interface HostileCase extends CsiCall {
  category: Category;
  /** What is wrong with the request, for the report. */
  label: string;
  /** The code the spec names for it. */
  expect: status;
  /** Calls that undo what an accepted case made, run right after it (before the leak check). */
  cleanup?: CsiCall[];
  /** A mount this (accepted) case must leave read-only; checked before cleanup. */
  readonlyAt?: string;
}

/** Identical (or conflicting) calls sent all at once. */
export interface HostileRace {
  label: string;
  calls: CsiCall[];
  /** Codes any single answer may have. */
  allowed: status[];
  /** Every success must name the same volume or snapshot. */
  sameResult?: "volume" | "snapshot";
  /** Exactly this many devices appear in the store (checked before cleanup). */
  newDevices?: number;
  /** Exactly one mount appears at this path (checked before cleanup). */
  mountAt?: string;
  /** Volume or snapshot ids the race deletes (their devices disappear; not a leak). */
  deletes?: string[];
  cleanup?: CsiCall[];
}

export interface VolumeFixture {
  id: string;
  name: string;
  sizeBytes: number;
}

export interface HostileContext {
  nodeId: string;
  otherNode: string;
  kubeletDir: string;
  /** A directory outside the kubelet directory that symlinks point into. */
  outsideDir: string;
  /** Pool block size: sizes are rounded up to it. */
  blockBytes: number;
  fixtures: {
    /** A filesystem volume, staged at `stage` and published at `target`. */
    mount: VolumeFixture & { stage: string; target: string };
    /** A raw block volume, staged at `stage` and published (a device node) at `target`. */
    block: VolumeFixture & { stage: string; target: string };
    /** A filesystem volume nobody uses. */
    idle: VolumeFixture;
    /** A snapshot of `idle`. */
    snapshot: { id: string; name: string; sourceId: string };
    /** A volume and a snapshot that the delete races remove. */
    doomedVolume: VolumeFixture;
    doomedSnapshot: { id: string; name: string };
  };
  /** Things the suite creates in the kubelet directory before the run. */
  paths: {
    /** Symlink (middle component) to outsideDir. */
    linkToOutside: string;
    /** Symlink to /etc. */
    linkToEtc: string;
    /** A target path that itself is a symlink to a directory in outsideDir. */
    targetLink: string;
    /** A target path that is a dangling symlink into outsideDir. */
    danglingTarget: string;
    /** A dangling symlink used as a middle component. */
    danglingDir: string;
    /** A symlink to itself. */
    loop: string;
    /** A regular file kubelet owns (must survive every request). */
    kubeletFile: string;
    /** A non-empty directory (must survive every request). */
    busyDir: string;
  };
}

const MiB = 1024 * 1024;
/** In a cleanup call: the volume or snapshot id the accepted case (or race) answered with. */
export const RESULT = "@result";
const INT64_MAX = "9223372036854775807";
const INT64_MIN = "-9223372036854775808";

/** The CreateVolume request the suite makes its fixtures with (the duplicate cases repeat it). */
export function fixtureVolumeRequest(name: string, sizeBytes: number, access: "mount" | "block") {
  return {
    name,
    capacity_range: { required_bytes: sizeBytes },
    volume_capabilities: [access === "mount" ? mountCap() : blockCap()],
  };
}

const mountCap = (flags: string[] = [], mode = "SINGLE_NODE_WRITER", fsType = "ext4") => ({
  access_mode: { mode },
  mount: { fs_type: fsType, mount_flags: flags },
});
const blockCap = (mode = "SINGLE_NODE_WRITER") => ({ access_mode: { mode }, block: {} });

const controller = (method: string, request: Record<string, unknown>): CsiCall => ({
  service: "controller",
  method,
  request,
});
const node = (method: string, request: Record<string, unknown>): CsiCall => ({
  service: "node",
  method,
  request,
});

/** The device part of `<device>@<node>`. */
const deviceOf = (id: string): string => id.split("@")[0] as string;

/** A string of exactly `bytes` UTF-8 bytes, starting with `prefix`. */
export function ofBytes(prefix: string, bytes: number, fill = "x"): string {
  const pad = bytes - Buffer.byteLength(prefix);
  if (pad < 0) throw new Error(`'${prefix}' is already longer than ${bytes} bytes`);
  return prefix + fill.repeat(pad);
}

/** `prefix`, ASCII padding, then as many `ch` as fit: exactly `bytes` UTF-8 bytes ending in `ch`. */
export function withChars(prefix: string, bytes: number, ch: string): string {
  const room = bytes - Buffer.byteLength(prefix);
  const n = Math.floor(room / Buffer.byteLength(ch));
  return prefix + "x".repeat(room - n * Buffer.byteLength(ch)) + ch.repeat(n);
}

/**
 * Ids that name nothing on this node, in classes that decide the expected code:
 * - `absent`: garbage, or a well-formed id of a device this node does not have;
 * - `foreign`: well-formed, naming another node (a CreateVolume source there is RESOURCE_EXHAUSTED);
 * - `oversize`: over the 128-byte limit (INVALID_ARGUMENT everywhere).
 */
interface HostileId {
  label: string;
  value: string;
  kind: "absent" | "foreign" | "oversize";
}

function hostileIds(ctx: HostileContext, real: string, kind: "volume" | "snapshot"): HostileId[] {
  const device = deviceOf(real);
  const zero = `${kind === "volume" ? "v" : "s"}-${"0".repeat(24)}`;
  return [
    { label: "garbage", value: "garbage", kind: "absent" },
    { label: "path traversal", value: "../../../etc/passwd", kind: "absent" },
    { label: "no node part", value: device, kind: "absent" },
    { label: "unknown device on this node", value: `${zero}@${ctx.nodeId}`, kind: "absent" },
    { label: "NUL inside", value: `${device}\u0000@${ctx.nodeId}`, kind: "absent" },
    { label: "trailing newline", value: `${real}\n`, kind: "absent" },
    { label: "unicode", value: `${device}@ノード`, kind: "foreign" },
    { label: "SQL", value: `${device}@' OR '1'='1`, kind: "foreign" },
    { label: "real device on another node", value: `${device}@${ctx.otherNode}`, kind: "foreign" },
    { label: "exactly 128 bytes", value: ofBytes(`${device}@`, 128, "n"), kind: "foreign" },
    { label: "129 bytes", value: ofBytes(`${device}@`, 129, "n"), kind: "oversize" },
    { label: "4 KiB", value: ofBytes(`${device}@`, 4096, "n"), kind: "oversize" },
    {
      label: "128 bytes of 3-byte characters plus one",
      value: `${device}@${"€".repeat(34)}`,
      kind: "oversize",
    },
  ];
}

/** Strings for a CreateVolume/CreateSnapshot name: accepted ones create something and are cleaned up. */
function hostileNames(prefix: string): Array<{ label: string; value: string; ok: boolean }> {
  const banned = [0x00, 0x01, 0x08, 0x0b, 0x0c, 0x0e, 0x1f, 0x7f, 0x80, 0x85, 0x9f];
  return [
    { label: "exactly 128 ASCII bytes", value: ofBytes(`${prefix}-`, 128), ok: true },
    { label: "129 ASCII bytes", value: ofBytes(`${prefix}-`, 129), ok: false },
    { label: "4 KiB", value: ofBytes(`${prefix}-`, 4096), ok: false },
    { label: "128 bytes of 3-byte characters", value: withChars(`${prefix}-`, 128, "€"), ok: true },
    { label: "129 bytes of 3-byte characters", value: withChars(`${prefix}-`, 129, "€"), ok: false },
    { label: "128 bytes of 4-byte characters (emoji)", value: withChars(`${prefix}-`, 128, "🦀"), ok: true },
    { label: "path-like", value: `../../../${prefix}/etc/passwd`, ok: true },
    { label: "SQL", value: `${prefix}'; DROP TABLE devices; --`, ok: true },
    { label: "tab, newline and CR (allowed whitespace)", value: `${prefix}\t\n\r`, ok: true },
    ...banned.map((c) => ({
      label: `banned character U+${c.toString(16).toUpperCase().padStart(4, "0")}`,
      value: `${prefix}-${String.fromCharCode(c)}-x`,
      ok: false,
    })),
  ];
}

/**
 * Mount flags meant to change what gets mounted or where: bind/move/remount, propagation changes,
 * libmount's X-mount.* (mkdir, owner, subdir, idmap), loop setup, and options smuggled in with commas,
 * whitespace or control characters into the single `-o` string the driver passes to mount(8).
 */
export const ESCAPE_MOUNT_FLAGS: readonly string[] = [
  "bind",
  "rbind",
  "move",
  "remount",
  "make-shared",
  "make-private",
  "shared",
  "unbindable",
  "X-mount.mkdir",
  "X-mount.owner=0",
  "x-mount.subdir=..",
  "X-mount.idmap=0 0 1",
  "loop=/dev/loop0",
  "offset=0",
  "encryption=aes",
  "ro,bind",
  "data=ordered,bind",
  "errors=remount-ro,rbind",
  ",bind",
  "=bind",
  "noatime bind",
  "noatime\nbind",
  "noatime\u0000bind",
  ofBytes("noatime", 129),
];

const UNSUPPORTED_MODES = [
  "MULTI_NODE_MULTI_WRITER",
  "MULTI_NODE_READER_ONLY",
  "MULTI_NODE_SINGLE_WRITER",
  "UNKNOWN",
] as const;

/** All cases, in a fixed order. */
export function hostileCases(ctx: HostileContext): HostileCase[] {
  const cases: HostileCase[] = [];
  let serial = 0;
  const fresh = (what: string) => `hostile-${what}-${++serial}`;
  const k = ctx.kubeletDir;
  const freshStage = () => `${k}/plugins/kubernetes.io/csi/thinpool.csi.dev/${fresh("stage")}/globalmount`;
  const freshTarget = () => `${k}/pods/${fresh("pod")}/volumes/kubernetes.io~csi/pv/mount`;
  const { mount, block, idle, snapshot } = ctx.fixtures;
  const add = (
    category: Category,
    label: string,
    call: CsiCall,
    expect: status,
    extra: Partial<HostileCase> = {},
  ) => cases.push({ category, label: `${call.method}: ${label}`, ...call, expect, ...extra });

  // ---------------------------------------------------------------- missing required fields
  const newVolume = () => ({
    name: fresh("vol"),
    capacity_range: { required_bytes: 8 * MiB },
    volume_capabilities: [mountCap()],
  });
  const required: Array<[CsiCall, string[]]> = [
    [controller("CreateVolume", newVolume()), ["name", "volume_capabilities"]],
    [controller("DeleteVolume", { volume_id: idle.id }), ["volume_id"]],
    [
      controller("ValidateVolumeCapabilities", { volume_id: idle.id, volume_capabilities: [mountCap()] }),
      ["volume_id", "volume_capabilities"],
    ],
    [controller("ControllerGetVolume", { volume_id: idle.id }), ["volume_id"]],
    [
      controller("CreateSnapshot", { name: fresh("snap"), source_volume_id: idle.id }),
      ["name", "source_volume_id"],
    ],
    [controller("DeleteSnapshot", { snapshot_id: snapshot.id }), ["snapshot_id"]],
    [controller("GetSnapshot", { snapshot_id: snapshot.id }), ["snapshot_id"]],
    [
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: freshStage(),
        volume_capability: mountCap(),
      }),
      ["volume_id", "staging_target_path", "volume_capability"],
    ],
    [
      node("NodeUnstageVolume", { volume_id: mount.id, staging_target_path: mount.stage }),
      ["volume_id", "staging_target_path"],
    ],
    [
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: freshTarget(),
        volume_capability: mountCap(),
      }),
      ["volume_id", "target_path", "volume_capability"],
    ],
    [
      node("NodeUnpublishVolume", { volume_id: mount.id, target_path: mount.target }),
      ["volume_id", "target_path"],
    ],
    [
      node("NodeGetVolumeStats", { volume_id: mount.id, volume_path: mount.target }),
      ["volume_id", "volume_path"],
    ],
    [
      node("NodeExpandVolume", {
        volume_id: mount.id,
        volume_path: mount.target,
        capacity_range: { required_bytes: mount.sizeBytes },
      }),
      ["volume_id", "volume_path"],
    ],
  ];
  for (const [call, fields] of required) {
    for (const field of fields) {
      const value = call.request[field];
      const empty = Array.isArray(value) ? [] : typeof value === "string" ? "" : null;
      add(
        "missing-field",
        `no ${field}`,
        { ...call, request: { ...call.request, [field]: empty } },
        status.INVALID_ARGUMENT,
      );
    }
  }
  // STAGE_UNSTAGE_VOLUME is advertised: a publish without staging_target_path has its own row.
  add(
    "missing-field",
    "no staging_target_path",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: "",
      target_path: freshTarget(),
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  // Parts of a capability.
  const partialCaps: Array<[string, Record<string, unknown>]> = [
    ["capability without access type", { access_mode: { mode: "SINGLE_NODE_WRITER" } }],
    ["capability without access mode", { mount: { fs_type: "ext4", mount_flags: [] } }],
    ["capability with neither", {}],
  ];
  for (const [label, cap] of partialCaps) {
    add(
      "missing-field",
      label,
      controller("CreateVolume", { ...newVolume(), volume_capabilities: [cap] }),
      status.INVALID_ARGUMENT,
    );
    add(
      "missing-field",
      label,
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: freshStage(),
        volume_capability: cap,
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "missing-field",
      label,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: freshTarget(),
        volume_capability: cap,
      }),
      status.INVALID_ARGUMENT,
    );
  }
  add(
    "missing-field",
    "content source without its id",
    controller("CreateVolume", { ...newVolume(), volume_content_source: { snapshot: { snapshot_id: "" } } }),
    status.INVALID_ARGUMENT,
  );
  add(
    "missing-field",
    "clone source without its id",
    controller("CreateVolume", { ...newVolume(), volume_content_source: { volume: { volume_id: "" } } }),
    status.INVALID_ARGUMENT,
  );
  // Optional fields left out are fine.
  add(
    "missing-field",
    "no capacity_range (OPTIONAL)",
    node("NodeExpandVolume", { volume_id: mount.id, volume_path: mount.target }),
    status.OK,
  );
  for (const method of ["GetPluginInfo", "GetPluginCapabilities", "Probe"]) {
    add("missing-field", "empty request", { service: "identity", method, request: {} }, status.OK);
  }
  for (const method of ["ControllerGetCapabilities", "ListVolumes", "ListSnapshots", "GetCapacity"]) {
    add("missing-field", "empty request", controller(method, {}), status.OK);
  }
  for (const method of ["NodeGetCapabilities", "NodeGetInfo"]) {
    add("missing-field", "empty request", node(method, {}), status.OK);
  }

  // ---------------------------------------------------------------- sizes
  const sizeCases: Array<[string, Record<string, unknown>, status]> = [
    ["required -1", { required_bytes: "-1" }, status.INVALID_ARGUMENT],
    ["required int64 min", { required_bytes: INT64_MIN }, status.INVALID_ARGUMENT],
    ["limit -1", { required_bytes: 8 * MiB, limit_bytes: "-1" }, status.INVALID_ARGUMENT],
    ["limit < required", { required_bytes: 8 * MiB, limit_bytes: MiB }, status.INVALID_ARGUMENT],
    [
      "limit < required, both huge",
      { required_bytes: INT64_MAX, limit_bytes: "9223372036854775806" },
      status.INVALID_ARGUMENT,
    ],
    ["required 2^53 - 1 (rounds past 2^53)", { required_bytes: "9007199254740991" }, status.OUT_OF_RANGE],
    ["required 2^53 + 1", { required_bytes: "9007199254740993" }, status.OUT_OF_RANGE],
    ["required 2^63 - 1", { required_bytes: INT64_MAX }, status.OUT_OF_RANGE],
    ["required 2^63 - 1 = limit", { required_bytes: INT64_MAX, limit_bytes: INT64_MAX }, status.OUT_OF_RANGE],
    [
      "required 1 TiB (more than the pool allows)",
      { required_bytes: String(1024 ** 4) },
      status.RESOURCE_EXHAUSTED,
    ],
    [
      "required 2^52 (more than the pool allows)",
      { required_bytes: String(2 ** 52) },
      status.RESOURCE_EXHAUSTED,
    ],
    ["limit below one pool block", { required_bytes: 1, limit_bytes: 1 }, status.OUT_OF_RANGE],
    ["only a limit, below the default size", { limit_bytes: MiB }, status.OUT_OF_RANGE],
  ];
  for (const [label, range, expect] of sizeCases) {
    add("size", label, controller("CreateVolume", { ...newVolume(), capacity_range: range }), expect);
  }
  const created = (): CsiCall[] => [controller("DeleteVolume", { volume_id: RESULT })];
  for (const [label, range] of [
    ["required 1 byte (rounded up to a block)", { required_bytes: 1 }],
    ["limit 2^63 - 1 is only a bound", { required_bytes: 8 * MiB, limit_bytes: INT64_MAX }],
  ] as const) {
    const request = { ...newVolume(), capacity_range: range };
    add("size", label, controller("CreateVolume", request), status.OK, { cleanup: created() });
  }
  const expand = (range: Record<string, unknown> | null) =>
    node("NodeExpandVolume", { volume_id: mount.id, volume_path: mount.target, capacity_range: range });
  const expandCases: Array<[string, Record<string, unknown>, status]> = [
    ["required -1", { required_bytes: "-1" }, status.INVALID_ARGUMENT],
    ["required int64 min", { required_bytes: INT64_MIN }, status.INVALID_ARGUMENT],
    ["limit -1", { required_bytes: mount.sizeBytes, limit_bytes: "-1" }, status.INVALID_ARGUMENT],
    [
      "limit < required",
      { required_bytes: 2 * mount.sizeBytes, limit_bytes: mount.sizeBytes },
      status.INVALID_ARGUMENT,
    ],
    ["required 2^53 + 1", { required_bytes: "9007199254740993" }, status.OUT_OF_RANGE],
    ["required 2^63 - 1", { required_bytes: INT64_MAX }, status.OUT_OF_RANGE],
    [
      "required 1 TiB (more than the pool allows)",
      { required_bytes: String(1024 ** 4) },
      status.RESOURCE_EXHAUSTED,
    ],
    ["limit below the current size", { required_bytes: MiB, limit_bytes: MiB }, status.OUT_OF_RANGE],
    ["smaller than the volume (already large enough)", { required_bytes: MiB }, status.OK],
    ["the current size", { required_bytes: mount.sizeBytes }, status.OK],
    ["the current size, huge limit", { required_bytes: mount.sizeBytes, limit_bytes: INT64_MAX }, status.OK],
  ];
  for (const [label, range, expect] of expandCases) add("size", label, expand(range), expect);

  // ---------------------------------------------------------------- names
  for (const { label, value, ok } of hostileNames("hostile-name")) {
    const request = { ...newVolume(), name: value };
    add("name", label, controller("CreateVolume", request), ok ? status.OK : status.INVALID_ARGUMENT, {
      ...(ok ? { cleanup: created() } : {}),
    });
  }
  // Fewer accepted snapshot names: each one is a real create_snap and delete (slow under emulation).
  const snapshotNames = hostileNames("hostile-snapname").filter(
    (n) => !n.ok || /128 ASCII|emoji|whitespace/.test(n.label),
  );
  for (const { label, value, ok } of snapshotNames) {
    add(
      "name",
      label,
      controller("CreateSnapshot", { name: value, source_volume_id: idle.id }),
      ok ? status.OK : status.INVALID_ARGUMENT,
      { ...(ok ? { cleanup: [controller("DeleteSnapshot", { snapshot_id: RESULT })] } : {}) },
    );
  }

  // ---------------------------------------------------------------- ids
  const notHere = (id: HostileId, whenAbsent: status): status =>
    id.kind === "oversize" ? status.INVALID_ARGUMENT : whenAbsent;
  for (const id of hostileIds(ctx, idle.id, "volume")) {
    const l = `volume id ${id.label}`;
    add("id", l, controller("DeleteVolume", { volume_id: id.value }), notHere(id, status.OK));
    add("id", l, controller("ControllerGetVolume", { volume_id: id.value }), notHere(id, status.NOT_FOUND));
    add(
      "id",
      l,
      controller("ValidateVolumeCapabilities", { volume_id: id.value, volume_capabilities: [mountCap()] }),
      notHere(id, status.NOT_FOUND),
    );
    add(
      "id",
      `source ${l}`,
      controller("CreateSnapshot", { name: fresh("snap"), source_volume_id: id.value }),
      notHere(id, status.NOT_FOUND),
    );
    add(
      "id",
      `clone source ${l}`,
      controller("CreateVolume", {
        ...newVolume(),
        volume_content_source: { volume: { volume_id: id.value } },
      }),
      notHere(id, id.kind === "foreign" ? status.RESOURCE_EXHAUSTED : status.NOT_FOUND),
    );
    add(
      "id",
      `source ${l}`,
      controller("ListSnapshots", { source_volume_id: id.value }),
      notHere(id, status.OK),
    );
    add(
      "id",
      l,
      node("NodeStageVolume", {
        volume_id: id.value,
        staging_target_path: freshStage(),
        volume_capability: mountCap(),
      }),
      notHere(id, status.NOT_FOUND),
    );
    add(
      "id",
      l,
      node("NodePublishVolume", {
        volume_id: id.value,
        staging_target_path: mount.stage,
        target_path: freshTarget(),
        volume_capability: mountCap(),
      }),
      notHere(id, status.NOT_FOUND),
    );
    add(
      "id",
      `${l} at a staged volume's path`,
      node("NodeUnstageVolume", { volume_id: id.value, staging_target_path: mount.stage }),
      notHere(id, status.OK),
    );
    add(
      "id",
      `${l} at a published volume's path`,
      node("NodeUnpublishVolume", { volume_id: id.value, target_path: mount.target }),
      notHere(id, status.OK),
    );
    add(
      "id",
      l,
      node("NodeGetVolumeStats", { volume_id: id.value, volume_path: mount.target }),
      notHere(id, status.NOT_FOUND),
    );
    add(
      "id",
      l,
      node("NodeExpandVolume", {
        volume_id: id.value,
        volume_path: mount.target,
        capacity_range: { required_bytes: 2 * mount.sizeBytes },
      }),
      notHere(id, status.NOT_FOUND),
    );
  }
  for (const id of hostileIds(ctx, snapshot.id, "snapshot")) {
    const l = `snapshot id ${id.label}`;
    add("id", l, controller("DeleteSnapshot", { snapshot_id: id.value }), notHere(id, status.OK));
    add("id", l, controller("GetSnapshot", { snapshot_id: id.value }), notHere(id, status.NOT_FOUND));
    add("id", l, controller("ListSnapshots", { snapshot_id: id.value }), notHere(id, status.OK));
    add(
      "id",
      `restore source ${l}`,
      controller("CreateVolume", {
        ...newVolume(),
        volume_content_source: { snapshot: { snapshot_id: id.value } },
      }),
      notHere(id, id.kind === "foreign" ? status.RESOURCE_EXHAUSTED : status.NOT_FOUND),
    );
  }
  // Kind confusion with real ids: nothing may be deleted or used.
  add("id", "a snapshot id as volume id", controller("DeleteVolume", { volume_id: snapshot.id }), status.OK);
  add("id", "a volume id as snapshot id", controller("DeleteSnapshot", { snapshot_id: idle.id }), status.OK);
  add(
    "id",
    "a snapshot id as volume id",
    controller("ControllerGetVolume", { volume_id: snapshot.id }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a volume id as snapshot id",
    controller("GetSnapshot", { snapshot_id: idle.id }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a snapshot id as clone source",
    controller("CreateVolume", {
      ...newVolume(),
      volume_content_source: { volume: { volume_id: snapshot.id } },
    }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a volume id as restore source",
    controller("CreateVolume", {
      ...newVolume(),
      volume_content_source: { snapshot: { snapshot_id: idle.id } },
    }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a snapshot id as snapshot source",
    controller("CreateSnapshot", { name: fresh("snap"), source_volume_id: snapshot.id }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a snapshot id",
    node("NodeStageVolume", {
      volume_id: snapshot.id,
      staging_target_path: freshStage(),
      volume_capability: mountCap(),
    }),
    status.NOT_FOUND,
  );
  // Real volumes at each other's paths: answered without touching the other volume.
  add(
    "id",
    "another volume's staging path",
    node("NodeUnstageVolume", { volume_id: idle.id, staging_target_path: mount.stage }),
    status.OK,
  );
  add(
    "id",
    "another volume's staging path",
    node("NodeUnstageVolume", { volume_id: block.id, staging_target_path: mount.stage }),
    status.OK,
  );
  add(
    "id",
    "its own publish path",
    node("NodeUnstageVolume", { volume_id: mount.id, staging_target_path: mount.target }),
    status.OK,
  );
  add(
    "id",
    "another volume's target path",
    node("NodeUnpublishVolume", { volume_id: idle.id, target_path: mount.target }),
    status.OK,
  );
  add(
    "id",
    "another volume's device target",
    node("NodeUnpublishVolume", { volume_id: mount.id, target_path: block.target }),
    status.OK,
  );
  add(
    "id",
    "its own staging path",
    node("NodeUnpublishVolume", { volume_id: mount.id, target_path: mount.stage }),
    status.OK,
  );
  add(
    "id",
    "another volume's staging path",
    node("NodeGetVolumeStats", { volume_id: mount.id, volume_path: block.stage }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "another volume's target path",
    node("NodeExpandVolume", {
      volume_id: mount.id,
      volume_path: block.target,
      capacity_range: { required_bytes: 2 * mount.sizeBytes },
    }),
    status.NOT_FOUND,
  );
  add(
    "id",
    "a staged volume's path, by a volume staged nowhere",
    node("NodeExpandVolume", {
      volume_id: idle.id,
      volume_path: mount.stage,
      capacity_range: { required_bytes: 2 * idle.sizeBytes },
    }),
    status.NOT_FOUND,
  );

  // ---------------------------------------------------------------- paths
  const p = ctx.paths;
  const invalidPaths: Array<[string, string]> = [
    ["outside the kubelet dir", "/etc/hostile"],
    ["the root", "/"],
    ["a sibling of the kubelet dir", `${k}-sibling/x`],
    ["the kubelet dir itself", k],
    ["'..' escaping", `${k}/../etc`],
    ["'..' staying inside", `${k}/pods/x/../y/mount`],
    ["relative", "pods/x/volumes/mount"],
    ["through a symlink to outside", `${p.linkToOutside}/x`],
    ["through a symlink to /etc", `${p.linkToEtc}/hostile`],
    ["a symlink to outside itself", p.targetLink],
    ["a dangling symlink to outside", p.danglingTarget],
    ["through a dangling symlink", `${p.danglingDir}/x`],
    ["through a symlink loop", `${p.loop}/x`],
    ["under a regular file", `${p.kubeletFile}/x`],
    ["NUL byte", `${k}/pods/x\u0000/mount`],
    ["a component over 255 bytes", `${k}/pods/${"c".repeat(256)}/mount`],
    ["over PATH_MAX", `${k}/${"d/".repeat(2100)}mount`],
  ];
  for (const [label, path] of invalidPaths) {
    add(
      "path",
      `staging path ${label}`,
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: path,
        volume_capability: mountCap(),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `target path ${label}`,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: path,
        volume_capability: mountCap(),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `block target path ${label}`,
      node("NodePublishVolume", {
        volume_id: block.id,
        staging_target_path: block.stage,
        target_path: path,
        volume_capability: blockCap(),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `staging path ${label}`,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: path,
        target_path: freshTarget(),
        volume_capability: mountCap(),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `staging path ${label}`,
      node("NodeUnstageVolume", { volume_id: mount.id, staging_target_path: path }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `target path ${label}`,
      node("NodeUnpublishVolume", { volume_id: mount.id, target_path: path }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `volume path ${label}`,
      node("NodeExpandVolume", {
        volume_id: mount.id,
        volume_path: path,
        capacity_range: { required_bytes: 2 * mount.sizeBytes },
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "path",
      `volume path ${label}`,
      node("NodeGetVolumeStats", { volume_id: mount.id, volume_path: path }),
      status.NOT_FOUND,
    );
  }
  // Paths inside the kubelet dir that hold something else.
  add(
    "path",
    "staging path is another volume's staging mount",
    node("NodeStageVolume", {
      volume_id: idle.id,
      staging_target_path: mount.stage,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "staging path is another volume's publish mount",
    node("NodeStageVolume", {
      volume_id: idle.id,
      staging_target_path: mount.target,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "target path is another volume's device node",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: block.target,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "target path is its own staging mount",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: mount.stage,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "staging path where another volume is staged",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: block.stage,
      target_path: freshTarget(),
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "target path is a kubelet file",
    node("NodeUnpublishVolume", { volume_id: mount.id, target_path: p.kubeletFile }),
    status.OK,
  );
  add(
    "path",
    "target path is a non-empty directory",
    node("NodeUnpublishVolume", { volume_id: mount.id, target_path: p.busyDir }),
    status.OK,
  );
  add(
    "path",
    "target path is a kubelet file",
    node("NodeUnpublishVolume", { volume_id: "garbage", target_path: p.kubeletFile }),
    status.OK,
  );
  add(
    "path",
    "staging path is a kubelet file",
    node("NodeUnstageVolume", { volume_id: mount.id, staging_target_path: p.kubeletFile }),
    status.OK,
  );
  add(
    "path",
    "volume path is a kubelet file",
    node("NodeExpandVolume", {
      volume_id: mount.id,
      volume_path: p.kubeletFile,
      capacity_range: { required_bytes: 2 * mount.sizeBytes },
    }),
    status.NOT_FOUND,
  );
  add(
    "path",
    "block target path is a kubelet file",
    node("NodePublishVolume", {
      volume_id: block.id,
      staging_target_path: block.stage,
      target_path: p.kubeletFile,
      volume_capability: blockCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "target path is a non-empty directory",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: p.busyDir,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "path",
    "staging path is a non-empty directory",
    node("NodeStageVolume", {
      volume_id: idle.id,
      staging_target_path: p.busyDir,
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  // The spec's minimum: a 128-byte path MUST be accepted.
  const stagePath128 = ofBytes(`${k}/plugins/kubernetes.io/csi/thinpool.csi.dev/`, 116, "s") + "/globalmount";
  add(
    "path",
    "a 128-byte staging path",
    node("NodeStageVolume", {
      volume_id: idle.id,
      staging_target_path: stagePath128,
      volume_capability: mountCap(),
    }),
    status.OK,
    { cleanup: [node("NodeUnstageVolume", { volume_id: idle.id, staging_target_path: stagePath128 })] },
  );
  const target128 = ofBytes(`${k}/pods/p128/volumes/kubernetes.io~csi/`, 122, "t") + "/mount";
  add(
    "path",
    "a 128-byte target path",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: target128,
      volume_capability: mountCap(),
    }),
    status.OK,
    { cleanup: [node("NodeUnpublishVolume", { volume_id: mount.id, target_path: target128 })] },
  );

  // ---------------------------------------------------------------- mount flags
  for (const flag of ESCAPE_MOUNT_FLAGS) {
    const l = `mount flag ${JSON.stringify(flag.length > 40 ? `${flag.slice(0, 20)}...(${flag.length})` : flag)}`;
    add(
      "mount-flag",
      l,
      controller("CreateVolume", { ...newVolume(), volume_capabilities: [mountCap([flag])] }),
      status.INVALID_ARGUMENT,
    );
    add(
      "mount-flag",
      l,
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: freshStage(),
        volume_capability: mountCap(["noatime", flag]),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "mount-flag",
      l,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: freshTarget(),
        volume_capability: mountCap([flag]),
      }),
      status.INVALID_ARGUMENT,
    );
  }
  for (const fsType of ["btrfs", "ext4,xfs", "ext4 -o bind", "../../bin/sh", "EXT4", ofBytes("ext4", 129)]) {
    const l = `fs type ${JSON.stringify(fsType.length > 40 ? `${fsType.slice(0, 8)}...(${fsType.length})` : fsType)}`;
    add(
      "mount-flag",
      l,
      controller("CreateVolume", {
        ...newVolume(),
        volume_capabilities: [mountCap([], "SINGLE_NODE_WRITER", fsType)],
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "mount-flag",
      l,
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: freshStage(),
        volume_capability: mountCap([], "SINGLE_NODE_WRITER", fsType),
      }),
      status.INVALID_ARGUMENT,
    );
  }
  // A read-only publish stays read-only whatever the flags say.
  for (const [label, request] of [
    ["readonly with flag rw", { readonly: true, volume_capability: mountCap(["rw"]) }],
    ["reader-only mode with flag rw", { volume_capability: mountCap(["rw"], "SINGLE_NODE_READER_ONLY") }],
  ] as const) {
    const target = freshTarget();
    add(
      "mount-flag",
      label,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: target,
        ...request,
      }),
      status.OK,
      {
        readonlyAt: target,
        cleanup: [node("NodeUnpublishVolume", { volume_id: mount.id, target_path: target })],
      },
    );
  }

  // ---------------------------------------------------------------- access modes and types
  for (const mode of [...UNSUPPORTED_MODES, 99]) {
    const l = `access mode ${mode}`;
    add(
      "access-mode",
      l,
      controller("CreateVolume", { ...newVolume(), volume_capabilities: [mountCap([], mode as string)] }),
      status.INVALID_ARGUMENT,
    );
    add(
      "access-mode",
      `${l} (block)`,
      controller("CreateVolume", { ...newVolume(), volume_capabilities: [blockCap(mode as string)] }),
      status.INVALID_ARGUMENT,
    );
    add(
      "access-mode",
      `${l} beside a supported one`,
      controller("CreateVolume", {
        ...newVolume(),
        volume_capabilities: [mountCap(), mountCap([], mode as string)],
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "access-mode",
      l,
      node("NodeStageVolume", {
        volume_id: idle.id,
        staging_target_path: freshStage(),
        volume_capability: mountCap([], mode as string),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "access-mode",
      l,
      node("NodePublishVolume", {
        volume_id: mount.id,
        staging_target_path: mount.stage,
        target_path: freshTarget(),
        volume_capability: mountCap([], mode as string),
      }),
      status.INVALID_ARGUMENT,
    );
    add(
      "access-mode",
      l,
      controller("ValidateVolumeCapabilities", {
        volume_id: idle.id,
        volume_capabilities: [mountCap([], mode as string)],
      }),
      status.OK,
    );
  }
  add(
    "access-mode",
    "a raw block volume staged as a filesystem (would format it)",
    node("NodeStageVolume", {
      volume_id: block.id,
      staging_target_path: freshStage(),
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "access-mode",
    "a raw block volume published as a filesystem",
    node("NodePublishVolume", {
      volume_id: block.id,
      staging_target_path: block.stage,
      target_path: freshTarget(),
      volume_capability: mountCap(),
    }),
    status.FAILED_PRECONDITION,
  );
  add(
    "access-mode",
    "a staged filesystem published as a raw device",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: `${k}/plugins/kubernetes.io/csi/volumeDevices/publish/${fresh("pv")}/pod`,
      volume_capability: blockCap(),
    }),
    status.FAILED_PRECONDITION,
  );

  // ---------------------------------------------------------------- parameters
  const unknownParameters: Array<[string, Record<string, string>]> = [
    ["unknown key", { colour: "blue" }],
    ["key in other case", { Pool: "default" }],
    ["key with a trailing space", { "pool ": "default" }],
    ["empty key", { "": "x" }],
    ["the sidecar prefix without a slash", { "csi.storage.k8s.io": "x" }],
    ["unknown pool", { pool: "nope" }],
    ["empty pool", { pool: "" }],
    ["pool as a path", { pool: "../../dev/vda" }],
    ["unicode key", { プール: "default" }],
    ["NUL in a key", { "pool\u0000": "default" }],
  ];
  for (const [label, parameters] of unknownParameters) {
    add(
      "parameters",
      label,
      controller("CreateVolume", { ...newVolume(), parameters }),
      status.INVALID_ARGUMENT,
    );
  }
  add(
    "parameters",
    "any parameter",
    controller("CreateSnapshot", {
      name: fresh("snap"),
      source_volume_id: idle.id,
      parameters: { pool: "default" },
    }),
    status.INVALID_ARGUMENT,
  );
  add(
    "parameters",
    "mutable_parameters without MODIFY_VOLUME",
    controller("CreateVolume", { ...newVolume(), mutable_parameters: { iops: "100" } }),
    status.INVALID_ARGUMENT,
  );
  add(
    "parameters",
    "unknown parameters",
    controller("GetCapacity", { parameters: { colour: "blue" } }),
    status.OK,
  );
  add("parameters", "unknown pool", controller("GetCapacity", { parameters: { pool: "nope" } }), status.OK);
  add(
    "parameters",
    "another node's topology",
    controller("GetCapacity", {
      accessible_topology: { segments: { "thinpool.csi.dev/node": ctx.otherNode } },
    }),
    status.OK,
  );
  add(
    "parameters",
    "requisite topology of another node only",
    controller("CreateVolume", {
      ...newVolume(),
      accessibility_requirements: { requisite: [{ segments: { "thinpool.csi.dev/node": ctx.otherNode } }] },
    }),
    status.RESOURCE_EXHAUSTED,
  );
  add(
    "parameters",
    "negative max_entries",
    controller("ListVolumes", { max_entries: -1 }),
    status.INVALID_ARGUMENT,
  );
  add(
    "parameters",
    "negative max_entries",
    controller("ListSnapshots", { max_entries: -1 }),
    status.INVALID_ARGUMENT,
  );
  add("parameters", "huge max_entries", controller("ListVolumes", { max_entries: 2 ** 31 - 1 }), status.OK);
  for (const token of [
    "garbage",
    "v-zzz",
    "' OR 1=1 --",
    `${deviceOf(idle.id)}@${ctx.nodeId}`,
    "v-../../x",
  ]) {
    add(
      "parameters",
      `starting_token ${JSON.stringify(token)}`,
      controller("ListVolumes", { starting_token: token }),
      status.ABORTED,
    );
    add(
      "parameters",
      `starting_token ${JSON.stringify(token)}`,
      controller("ListSnapshots", { starting_token: token }),
      status.ABORTED,
    );
  }

  // ---------------------------------------------------------------- field limits (maps 4 KiB, strings 128 bytes)
  const bigMap = (prefix: string) =>
    Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`${prefix}/key-${i}`, "v".repeat(100)]));
  add(
    "field-limit",
    "parameters over 4 KiB",
    controller("CreateVolume", { ...newVolume(), parameters: bigMap("csi.storage.k8s.io") }),
    status.INVALID_ARGUMENT,
  );
  add(
    "field-limit",
    "secrets over 4 KiB",
    controller("CreateVolume", { ...newVolume(), secrets: bigMap("s") }),
    status.INVALID_ARGUMENT,
  );
  add(
    "field-limit",
    "secrets over 4 KiB",
    controller("DeleteVolume", { volume_id: `v-${"0".repeat(24)}@${ctx.nodeId}`, secrets: bigMap("s") }),
    status.INVALID_ARGUMENT,
  );
  add(
    "field-limit",
    "volume_context over 4 KiB",
    node("NodeStageVolume", {
      volume_id: idle.id,
      staging_target_path: freshStage(),
      volume_capability: mountCap(),
      volume_context: bigMap("c"),
    }),
    status.INVALID_ARGUMENT,
  );
  add(
    "field-limit",
    "a 253-byte PVC name in the sidecar metadata (maps are bounded as a whole)",
    controller("CreateVolume", {
      ...newVolume(),
      parameters: { "csi.storage.k8s.io/pvc/name": "p".repeat(253) },
    }),
    status.OK,
    { cleanup: created() },
  );
  add(
    "field-limit",
    "starting_token over 128 bytes",
    controller("ListVolumes", { starting_token: ofBytes("v-", 129) }),
    status.INVALID_ARGUMENT,
  );
  add(
    "field-limit",
    "accessibility segment over 4 KiB",
    controller("CreateVolume", {
      ...newVolume(),
      accessibility_requirements: { requisite: [{ segments: bigMap("t") }] },
    }),
    status.INVALID_ARGUMENT,
  );

  // ---------------------------------------------------------------- duplicates
  const idleRequest = fixtureVolumeRequest(idle.name, idle.sizeBytes, "mount");
  const dup = (label: string, extra: Record<string, unknown>, expect: status) =>
    add("duplicate", label, controller("CreateVolume", { ...idleRequest, ...extra }), expect);
  dup("same name, same arguments (idempotent)", {}, status.OK);
  // "compatible with the specified capacity_range": the existing volume satisfies these ranges.
  dup(
    "same name, a smaller required size",
    { capacity_range: { required_bytes: idle.sizeBytes / 2 } },
    status.OK,
  );
  dup(
    "same name, a limit it fits",
    { capacity_range: { required_bytes: idle.sizeBytes, limit_bytes: 2 * idle.sizeBytes } },
    status.OK,
  );
  dup("same name, no capacity_range (any size will do)", { capacity_range: null }, status.OK);
  dup(
    "same name, a larger size",
    { capacity_range: { required_bytes: 2 * idle.sizeBytes } },
    status.ALREADY_EXISTS,
  );
  dup(
    "same name, a limit below its size",
    { capacity_range: { required_bytes: 1, limit_bytes: idle.sizeBytes / 2 } },
    status.ALREADY_EXISTS,
  );
  dup(
    "same name, another fs type",
    { volume_capabilities: [mountCap([], "SINGLE_NODE_WRITER", "xfs")] },
    status.ALREADY_EXISTS,
  );
  dup("same name, other parameters", { parameters: { mkfsOptions: "-T news" } }, status.ALREADY_EXISTS);
  dup(
    "same name, a content source",
    { volume_content_source: { snapshot: { snapshot_id: snapshot.id } } },
    status.ALREADY_EXISTS,
  );
  dup(
    "same name, topology that excludes this node",
    { accessibility_requirements: { requisite: [{ segments: { "thinpool.csi.dev/node": ctx.otherNode } }] } },
    status.ALREADY_EXISTS,
  );
  dup("same name, mutable_parameters", { mutable_parameters: { iops: "1" } }, status.INVALID_ARGUMENT);
  add(
    "duplicate",
    "same snapshot name, same source (idempotent)",
    controller("CreateSnapshot", { name: snapshot.name, source_volume_id: snapshot.sourceId }),
    status.OK,
  );
  add(
    "duplicate",
    "same snapshot name, other source",
    controller("CreateSnapshot", { name: snapshot.name, source_volume_id: mount.id }),
    status.ALREADY_EXISTS,
  );
  add(
    "duplicate",
    "same snapshot name, garbage source",
    controller("CreateSnapshot", { name: snapshot.name, source_volume_id: "garbage" }),
    status.ALREADY_EXISTS,
  );
  add(
    "duplicate",
    "restage with the same arguments",
    node("NodeStageVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      volume_capability: mountCap(),
    }),
    status.OK,
  );
  add(
    "duplicate",
    "restage with another flag",
    node("NodeStageVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      volume_capability: mountCap(["noatime"]),
    }),
    status.ALREADY_EXISTS,
  );
  add(
    "duplicate",
    "restage as block",
    node("NodeStageVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      volume_capability: blockCap(),
    }),
    status.ALREADY_EXISTS,
  );
  add(
    "duplicate",
    "republish with the same arguments",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: mount.target,
      volume_capability: mountCap(),
    }),
    status.OK,
  );
  add(
    "duplicate",
    "republish read-only",
    node("NodePublishVolume", {
      volume_id: mount.id,
      staging_target_path: mount.stage,
      target_path: mount.target,
      volume_capability: mountCap(),
      readonly: true,
    }),
    status.ALREADY_EXISTS,
  );

  // ---------------------------------------------------------------- not offered
  for (const method of [
    "ControllerPublishVolume",
    "ControllerUnpublishVolume",
    "ControllerExpandVolume",
    "ControllerModifyVolume",
  ]) {
    add(
      "unimplemented",
      "not offered",
      controller(method, { volume_id: idle.id, node_id: ctx.nodeId }),
      status.UNIMPLEMENTED,
    );
  }

  return cases;
}

/** Identical or conflicting calls at once: ABORTED or one consistent result, never two devices. */
export function hostileRaces(ctx: HostileContext, width = 8): HostileRace[] {
  const k = ctx.kubeletDir;
  const { mount, idle, snapshot, doomedVolume, doomedSnapshot } = ctx.fixtures;
  const many = (call: CsiCall, n = width) => Array.from({ length: n }, () => call);
  const volume = {
    name: "hostile-race-vol",
    capacity_range: { required_bytes: 8 * MiB },
    volume_capabilities: [mountCap()],
  };
  const stage = `${k}/plugins/kubernetes.io/csi/thinpool.csi.dev/hostile-race/globalmount`;
  const target = `${k}/pods/hostile-race/volumes/kubernetes.io~csi/pv/mount`;
  return [
    {
      label: `${width} x CreateVolume, one name`,
      calls: many(controller("CreateVolume", volume)),
      allowed: [status.OK, status.ABORTED],
      sameResult: "volume",
      newDevices: 1,
      cleanup: [controller("DeleteVolume", { volume_id: RESULT })],
    },
    {
      label: `${width} x CreateVolume, one name, different sizes`,
      calls: Array.from({ length: width }, (_, i) =>
        controller("CreateVolume", {
          ...volume,
          name: "hostile-race-sizes",
          capacity_range: { required_bytes: (8 + i) * MiB },
        }),
      ),
      allowed: [status.OK, status.ABORTED, status.ALREADY_EXISTS],
      sameResult: "volume",
      newDevices: 1,
      cleanup: [controller("DeleteVolume", { volume_id: RESULT })],
    },
    {
      label: `${width} x CreateVolume, one name, restored from a snapshot`,
      calls: many(
        controller("CreateVolume", {
          ...volume,
          name: "hostile-race-restore",
          capacity_range: { required_bytes: idle.sizeBytes },
          volume_content_source: { snapshot: { snapshot_id: snapshot.id } },
        }),
      ),
      allowed: [status.OK, status.ABORTED],
      sameResult: "volume",
      newDevices: 1,
      cleanup: [controller("DeleteVolume", { volume_id: RESULT })],
    },
    {
      label: `${width} x CreateSnapshot, one name`,
      calls: many(controller("CreateSnapshot", { name: "hostile-race-snap", source_volume_id: idle.id })),
      allowed: [status.OK, status.ABORTED],
      sameResult: "snapshot",
      newDevices: 1,
      cleanup: [controller("DeleteSnapshot", { snapshot_id: RESULT })],
    },
    {
      label: `${width} x CreateSnapshot, one name, two sources`,
      calls: Array.from({ length: width }, (_, i) =>
        controller("CreateSnapshot", {
          name: "hostile-race-snap2",
          source_volume_id: i % 2 ? idle.id : mount.id,
        }),
      ),
      allowed: [status.OK, status.ABORTED, status.ALREADY_EXISTS],
      sameResult: "snapshot",
      newDevices: 1,
      cleanup: [controller("DeleteSnapshot", { snapshot_id: RESULT })],
    },
    {
      label: `${width} x NodeStageVolume, one volume and path`,
      calls: many(
        node("NodeStageVolume", {
          volume_id: idle.id,
          staging_target_path: stage,
          volume_capability: mountCap(),
        }),
      ),
      allowed: [status.OK, status.ABORTED],
      mountAt: stage,
      cleanup: [node("NodeUnstageVolume", { volume_id: idle.id, staging_target_path: stage })],
    },
    {
      label: `${width} x NodePublishVolume, one target`,
      calls: many(
        node("NodePublishVolume", {
          volume_id: mount.id,
          staging_target_path: mount.stage,
          target_path: target,
          volume_capability: mountCap(),
        }),
      ),
      allowed: [status.OK, status.ABORTED],
      mountAt: target,
      cleanup: [node("NodeUnpublishVolume", { volume_id: mount.id, target_path: target })],
    },
    {
      label: `${width} x DeleteVolume, one volume`,
      calls: many(controller("DeleteVolume", { volume_id: doomedVolume.id })),
      allowed: [status.OK, status.ABORTED],
      deletes: [doomedVolume.id],
    },
    {
      label: `${width} x DeleteSnapshot, one snapshot`,
      calls: many(controller("DeleteSnapshot", { snapshot_id: doomedSnapshot.id })),
      allowed: [status.OK, status.ABORTED],
      deletes: [doomedSnapshot.id],
    },
  ];
}

/**
 * Directories the CO creates before it calls the driver (kubelet makes the staging directory and a
 * target's parent): the suite makes them before taking its baseline. A CO-made directory is not a leak.
 */
export function coDirectories(
  ctx: HostileContext,
  cases: readonly HostileCase[],
  races: readonly HostileRace[],
): string[] {
  const k = ctx.kubeletDir;
  const dirs = new Set<string>();
  const accepted = [
    ...cases.filter((c) => c.expect === status.OK),
    ...races.flatMap((r) => r.calls.slice(0, 1)),
  ];
  for (const c of accepted) {
    const staging = c.request.staging_target_path;
    const target = c.request.target_path;
    if (c.method === "NodeStageVolume" && typeof staging === "string" && staging.startsWith(`${k}/`))
      dirs.add(staging);
    if (c.method === "NodePublishVolume" && typeof target === "string" && target.startsWith(`${k}/`))
      dirs.add(target.slice(0, target.lastIndexOf("/")));
  }
  return [...dirs];
}
