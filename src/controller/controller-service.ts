import { status } from "@grpc/grpc-js";
import { maxSizeBytes, parseCapacityRange } from "../csi/capacity-range.js";
import {
  capabilitiesFingerprint,
  capabilityProblem,
  requireCapabilities,
  requireField,
  requireName,
} from "../csi/capabilities.js";
import { engineCall } from "../csi/engine-errors.js";
import { CsiError } from "../csi/errors.js";
import type { ControllerHandlers } from "../csi/types.js";
import type { Snapshot } from "../generated/csi/v1/Snapshot.js";
import type { TopologyRequirement__Output } from "../generated/csi/v1/TopologyRequirement.js";
import type { Volume } from "../generated/csi/v1/Volume.js";
import type { VolumeContentSource__Output } from "../generated/csi/v1/VolumeContentSource.js";
import type { DeviceRecord } from "../state/types.js";
import type { ThinPoolEngine } from "../thinpool/engine.js";
import { deviceNameFor, isLocal, makeId, parseId, type IdKind } from "./ids.js";

export interface ControllerOptions {
  nodeId: string;
  /** Topology key whose value is the node name, e.g. "thinpool.csi.dev/node". */
  topologyKey: string;
  /** Filesystems this node can make. */
  fsTypes: readonly string[];
  defaultFsType: string;
  /** Discard a volume's blocks before deleting it (returns space to loop files and SSDs). */
  discardOnDelete: boolean;
  /** Whether a volume is staged or published on this node (refuse to delete it then). */
  isInUseOnNode: (deviceName: string) => boolean;
}

/** StorageClass / VolumeSnapshotClass parameters the driver understands. */
const VOLUME_PARAMETERS = new Set(["pool", "mkfsOptions"]);
/** Keys the sidecars add with --extra-create-metadata; accepted and recorded. */
const SIDECAR_PREFIX = "csi.storage.k8s.io/";
const DEFAULT_VOLUME_BYTES = 1024 ** 3;

/** The --extra-create-metadata keys of a request (PVC, VolumeSnapshot and content names), kept for `status`. */
function sidecarMetadata(parameters: Readonly<Record<string, string>>): Record<string, string> {
  return Object.fromEntries(Object.entries(parameters).filter(([k]) => k.startsWith(SIDECAR_PREFIX)));
}

/** Attributes the controller keeps on each device (opaque to the engine). */
export interface VolumeAttributes {
  fingerprint?: string;
  fsType?: string;
  mkfsOptions?: string;
  /** Set on a restore/clone larger than its source: the node grows the filesystem at first stage. */
  growFilesystem?: boolean;
  contentSource?: { snapshot: string } | { volume: string };
  metadata?: Record<string, string>;
}

const CONTROLLER_CAPABILITIES = [
  "CREATE_DELETE_VOLUME",
  "CREATE_DELETE_SNAPSHOT",
  "CLONE_VOLUME",
  "LIST_VOLUMES",
  "LIST_SNAPSHOTS",
  "GET_CAPACITY",
  "GET_VOLUME",
  "GET_SNAPSHOT",
  "VOLUME_CONDITION",
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/**
 * CSI Controller over the engine. Expansion is deliberately not a controller capability: it is node-only,
 * so the resizer sidecar runs its trivial resizer and kubelet calls NodeExpandVolume on the right node.
 */
export function createControllerService(
  engine: ThinPoolEngine,
  options: ControllerOptions,
): ControllerHandlers {
  const topology = [{ segments: { [options.topologyKey]: options.nodeId } }];
  const idOf = (device: DeviceRecord): string => makeId(device.name, options.nodeId);

  /**
   * Resolves a CSI id to a local device, with the codes the spec and the provisioner need. An id of
   * another node is NOT_FOUND here ("does not exist" is what the tables of ControllerGetVolume,
   * ValidateVolumeCapabilities, GetSnapshot and CreateSnapshot name), except for a CreateVolume source
   * (`reschedule`), where RESOURCE_EXHAUSTED ("Unable to provision in accessible_topology") makes the
   * provisioner reschedule onto the node that holds it. The hostile-input suite found every caller
   * answering RESOURCE_EXHAUSTED, which for a snapshot means "not enough space".
   */
  const resolve = (id: string, kind: IdKind, what: string, reschedule = false): DeviceRecord => {
    const parsed = parseId(id, kind);
    if (!parsed)
      throw new CsiError(status.NOT_FOUND, `${what} ${id} does not exist (not an id of this driver)`);
    if (!isLocal(parsed, options.nodeId)) {
      throw new CsiError(
        reschedule ? status.RESOURCE_EXHAUSTED : status.NOT_FOUND,
        `${what} ${id} lives on node ${parsed.node}, not on ${options.nodeId}: it can only be used there`,
      );
    }
    const device = engine.getDevice(parsed.device);
    if (!device || device.kind !== kind)
      throw new CsiError(status.NOT_FOUND, `${what} ${id} does not exist on node ${options.nodeId}`);
    return device;
  };

  const volumeMessage = (device: DeviceRecord): Volume => {
    const attributes = device.attributes as VolumeAttributes;
    const source = attributes.contentSource;
    return {
      volume_id: idOf(device),
      capacity_bytes: device.sizeBytes,
      volume_context: {
        ...(attributes.fsType ? { fsType: attributes.fsType } : {}),
        pool: device.pool,
      },
      accessible_topology: topology,
      ...(source
        ? {
            content_source:
              "snapshot" in source
                ? { snapshot: { snapshot_id: source.snapshot } }
                : { volume: { volume_id: source.volume } },
          }
        : {}),
    };
  };

  const snapshotMessage = (device: DeviceRecord): Snapshot => {
    const created = new Date(device.createdAt).getTime();
    const source = device.attributes.sourceVolumeId;
    return {
      snapshot_id: idOf(device),
      source_volume_id: typeof source === "string" ? source : "",
      size_bytes: device.sizeBytes,
      creation_time: { seconds: Math.floor(created / 1000), nanos: (created % 1000) * 1e6 },
      ready_to_use: true,
    };
  };

  const condition = async (device: DeviceRecord) => {
    const c = await engine.deviceCondition(device.name);
    return { abnormal: c.abnormal, message: c.message };
  };

  return {
    async ControllerGetCapabilities() {
      return { capabilities: CONTROLLER_CAPABILITIES.map((type) => ({ rpc: { type } })) };
    },

    async CreateVolume(request) {
      const name = requireName(request.name, "name");
      const caps = requireCapabilities(request.volume_capabilities, options.fsTypes);
      // "This field SHALL NOT be specified unless the SP has the MODIFY_VOLUME plugin capability."
      const mutable = Object.keys(request.mutable_parameters ?? {});
      if (mutable.length) {
        throw new CsiError(
          status.INVALID_ARGUMENT,
          `mutable_parameters (${mutable.join(", ")}) are not supported: this driver has no MODIFY_VOLUME capability`,
        );
      }
      const parameters = request.parameters ?? {};
      const unknown = Object.keys(parameters).filter(
        (k) => !VOLUME_PARAMETERS.has(k) && !k.startsWith(SIDECAR_PREFIX),
      );
      if (unknown.length) {
        throw new CsiError(
          status.INVALID_ARGUMENT,
          `unknown parameter(s) ${unknown.join(", ")}; supported: ${[...VOLUME_PARAMETERS].join(", ")}`,
        );
      }
      const pool = parameters.pool ?? engine.defaultPool;
      if (!engine.poolNames.includes(pool)) {
        throw new CsiError(
          status.INVALID_ARGUMENT,
          `parameter pool='${pool}' names no pool on node ${options.nodeId} (pools: ${engine.poolNames.join(", ")})`,
        );
      }
      const largestBlock = Math.max(...engine.poolNames.map((p) => engine.blockBytes(p)));
      const { required, limit } = parseCapacityRange(request.capacity_range, maxSizeBytes(largestBlock));
      const source = contentSource(request.volume_content_source);
      const mountCap = caps.find((c) => c.access_type === "mount");
      const fsType = mountCap ? mountCap.mount?.fs_type || options.defaultFsType : undefined;
      const fingerprint = JSON.stringify({
        required,
        limit,
        caps: capabilitiesFingerprint(caps),
        parameters: Object.entries(parameters)
          .filter(([k]) => !k.startsWith(SIDECAR_PREFIX))
          .sort(),
        source,
      });

      const existing = engine.findByRequestName("volume", name);
      if (existing) {
        // "compatible with the specified capacity_range, volume_capabilities, parameters": the same
        // arguments, and a size the range allows (not necessarily the same range; the hostile-input
        // suite found a smaller required size refused). Outside the requested topology is incompatible
        // too (ALREADY_EXISTS, not the RESOURCE_EXHAUSTED a new volume gets).
        const size = existing.sizeBytes;
        if (
          !sameArguments((existing.attributes as VolumeAttributes).fingerprint, fingerprint) ||
          (required !== undefined && size < required) ||
          (limit !== undefined && size > limit)
        ) {
          throw new CsiError(
            status.ALREADY_EXISTS,
            `volume ${name} already exists with a different capacity, capabilities, parameters or source`,
          );
        }
        if (topologyProblem(request.accessibility_requirements, options)) {
          throw new CsiError(
            status.ALREADY_EXISTS,
            `volume ${name} already exists on node ${options.nodeId}, outside the requested topology`,
          );
        }
        return { volume: volumeMessage(existing) };
      }
      checkTopology(request.accessibility_requirements, options);

      const sourceDevice =
        source &&
        resolve(
          "snapshot" in source ? source.snapshot : source.volume,
          "snapshot" in source ? "snapshot" : "volume",
          "snapshot" in source ? "source snapshot" : "source volume",
          true,
        );
      const requested = required ?? (sourceDevice ? sourceDevice.sizeBytes : DEFAULT_VOLUME_BYTES);
      const sizeBytes = engine.roundSize(sourceDevice?.pool ?? pool, requested);
      if (limit !== undefined && sizeBytes > limit) {
        throw new CsiError(
          status.OUT_OF_RANGE,
          `${requested} bytes rounded up to the pool block is ${sizeBytes} bytes, above limit_bytes ${limit}`,
        );
      }
      const metadata = sidecarMetadata(parameters);
      const attributes: VolumeAttributes = {
        fingerprint,
        ...(fsType ? { fsType } : {}),
        ...(parameters.mkfsOptions ? { mkfsOptions: parameters.mkfsOptions } : {}),
        ...(source ? { contentSource: source } : {}),
        ...(Object.keys(metadata).length ? { metadata } : {}),
      };
      const deviceName = deviceNameFor("volume", name);
      const device = await engineCall(() => {
        if (!sourceDevice)
          return engine.createVolume({
            name: deviceName,
            pool,
            sizeBytes,
            requestName: name,
            attributes: { ...attributes },
          });
        if (sizeBytes < sourceDevice.sizeBytes) {
          throw new CsiError(
            status.OUT_OF_RANGE,
            `requested ${sizeBytes} bytes is smaller than the source's ${sourceDevice.sizeBytes} bytes`,
          );
        }
        const grow =
          sizeBytes > sourceDevice.sizeBytes ||
          Boolean((sourceDevice.attributes as VolumeAttributes).growFilesystem);
        return engine.createSnapshot({
          name: deviceName,
          source: sourceDevice.name,
          kind: "volume",
          sizeBytes,
          requestName: name,
          attributes: {
            ...attributes,
            ...(grow ? { growFilesystem: true } : {}),
            fsType: fsType ?? (sourceDevice.attributes as VolumeAttributes).fsType,
          },
        });
      });
      return { volume: volumeMessage(device) };
    },

    async DeleteVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const parsed = parseId(id, "volume");
      if (!parsed || !isLocal(parsed, options.nodeId)) return {};
      const device = engine.getDevice(parsed.device);
      if (!device || device.kind !== "volume") return {};
      if (options.isInUseOnNode(device.name)) {
        throw new CsiError(
          status.FAILED_PRECONDITION,
          `volume ${id} is still staged or published on node ${options.nodeId}; unpublish and unstage it first`,
        );
      }
      await engineCall(() => engine.deleteDevice(device.name, { discard: options.discardOnDelete }));
      return {};
    },

    async ValidateVolumeCapabilities(request) {
      const device = resolve(requireField(request.volume_id, "volume_id"), "volume", "volume");
      if (!request.volume_capabilities?.length)
        throw new CsiError(status.INVALID_ARGUMENT, "volume_capabilities is required");
      const problems = request.volume_capabilities
        .map((c) => capabilityProblem(c, options.fsTypes))
        .filter(Boolean);
      const fsType = (device.attributes as VolumeAttributes).fsType;
      const mismatch = request.volume_capabilities.find(
        (c) => c.access_type === "mount" && c.mount?.fs_type && fsType && c.mount.fs_type !== fsType,
      );
      if (problems.length || mismatch) {
        return { message: problems.join("; ") || `volume was created with fs type ${fsType}` };
      }
      return {
        confirmed: {
          volume_context: request.volume_context,
          volume_capabilities: request.volume_capabilities,
          parameters: request.parameters,
        },
      };
    },

    async ListVolumes(request) {
      const [entries, next_token] = await listPage(
        request.max_entries,
        request.starting_token,
        "volume",
        engine,
        async (devices) =>
          (await engine.deviceConditions(devices)).map(([device, c]) => {
            const volume = volumeMessage(device);
            return {
              // CSI's Volume has no creation time; the orphan report needs it (its grace period), so the
              // listing adds it to the context. CreateVolume's context (kept in the PV) does not carry it.
              volume: {
                ...volume,
                volume_context: { ...volume.volume_context, createdAt: device.createdAt },
              },
              status: { volume_condition: { abnormal: c.abnormal, message: c.message } },
            };
          }),
      );
      return { entries, next_token };
    },

    async ControllerGetVolume(request) {
      const device = resolve(requireField(request.volume_id, "volume_id"), "volume", "volume");
      return { volume: volumeMessage(device), status: { volume_condition: await condition(device) } };
    },

    async GetCapacity(request) {
      const pool = request.parameters?.pool ?? engine.defaultPool;
      if (!engine.poolNames.includes(pool)) return { available_capacity: 0 };
      const segments = request.accessible_topology?.segments;
      if (
        segments &&
        segments[options.topologyKey] !== undefined &&
        segments[options.topologyKey] !== options.nodeId
      ) {
        return { available_capacity: 0 };
      }
      if (request.volume_capabilities?.some((c) => capabilityProblem(c, options.fsTypes)))
        return { available_capacity: 0 };
      const usage = await engineCall(() => engine.poolUsage(pool));
      return {
        available_capacity: usage.availableBytes,
        maximum_volume_size: { value: usage.availableBytes },
        minimum_volume_size: { value: engine.blockBytes(pool) },
      };
    },

    async CreateSnapshot(request) {
      const name = requireName(request.name, "name");
      const sourceId = requireField(request.source_volume_id, "source_volume_id");
      const parameters = request.parameters ?? {};
      const unknown = Object.keys(parameters).filter((k) => !k.startsWith(SIDECAR_PREFIX));
      if (unknown.length)
        throw new CsiError(
          status.INVALID_ARGUMENT,
          `unknown snapshot parameter(s) ${unknown.join(", ")}; none are supported`,
        );
      const existing = engine.findByRequestName("snapshot", name);
      if (existing) {
        if (existing.attributes.sourceVolumeId !== sourceId) {
          throw new CsiError(
            status.ALREADY_EXISTS,
            `snapshot ${name} already exists for another source volume (${String(existing.attributes.sourceVolumeId)})`,
          );
        }
        return { snapshot: snapshotMessage(existing) };
      }
      const source = resolve(sourceId, "volume", "source volume");
      const metadata = sidecarMetadata(parameters);
      const snapshot = await engineCall(() =>
        engine.createSnapshot({
          name: deviceNameFor("snapshot", name),
          source: source.name,
          kind: "snapshot",
          requestName: name,
          attributes: {
            sourceVolumeId: sourceId,
            fsType: (source.attributes as VolumeAttributes).fsType,
            growFilesystem: (source.attributes as VolumeAttributes).growFilesystem,
            ...(Object.keys(metadata).length ? { metadata } : {}),
          },
        }),
      );
      return { snapshot: snapshotMessage(snapshot) };
    },

    async DeleteSnapshot(request) {
      const id = requireField(request.snapshot_id, "snapshot_id");
      const parsed = parseId(id, "snapshot");
      if (!parsed || !isLocal(parsed, options.nodeId)) return {};
      const device = engine.getDevice(parsed.device);
      if (!device || device.kind !== "snapshot") return {};
      await engineCall(() => engine.deleteDevice(device.name, { discard: false }));
      return {};
    },

    async ListSnapshots(request) {
      if (request.snapshot_id) {
        const parsed = parseId(request.snapshot_id, "snapshot");
        const device =
          parsed && isLocal(parsed, options.nodeId) ? engine.getDevice(parsed.device) : undefined;
        const matches =
          device &&
          device.kind === "snapshot" &&
          (!request.source_volume_id || device.attributes.sourceVolumeId === request.source_volume_id);
        return { entries: matches ? [{ snapshot: snapshotMessage(device) }] : [] };
      }
      const filter = request.source_volume_id ? parseId(request.source_volume_id, "volume") : undefined;
      if (request.source_volume_id && (!filter || !isLocal(filter, options.nodeId))) return { entries: [] };
      const [entries, next_token] = await listPage(
        request.max_entries,
        request.starting_token,
        "snapshot",
        engine,
        async (devices) => devices.map((device) => ({ snapshot: snapshotMessage(device) })),
        filter?.device,
      );
      return { entries, next_token };
    },

    async GetSnapshot(request) {
      const device = resolve(requireField(request.snapshot_id, "snapshot_id"), "snapshot", "snapshot");
      return { snapshot: snapshotMessage(device) };
    },
  } satisfies ControllerHandlers;
}

/** One page of devices in name order; the token is the last name returned. A token we did not issue is ABORTED. */
async function listPage<T>(
  maxEntries: number,
  token: string,
  kind: "volume" | "snapshot",
  engine: ThinPoolEngine,
  toEntries: (devices: DeviceRecord[]) => Promise<T[]>,
  parent?: string,
): Promise<[T[], string]> {
  if (maxEntries < 0) throw new CsiError(status.INVALID_ARGUMENT, "max_entries must not be negative");
  if (token && !/^[vs]-[0-9a-f]{24}$/.test(token))
    throw new CsiError(status.ABORTED, `starting_token '${token}' was not issued by this driver`);
  const limit = maxEntries > 0 ? maxEntries : undefined;
  const devices = engine.listDevices({
    kind,
    ...(parent ? { parent } : {}),
    ...(token ? { afterName: token } : {}),
    ...(limit ? { limit: limit + 1 } : {}),
  });
  const page = limit ? devices.slice(0, limit) : devices;
  const next = limit && devices.length > limit ? (page[page.length - 1]?.name ?? "") : "";
  return [await toEntries(page), next];
}

/** Whether two CreateVolume fingerprints name the same arguments, leaving the capacity range aside. */
function sameArguments(stored: string | undefined, requested: string): boolean {
  const withoutRange = (fingerprint: string): string => {
    try {
      const {
        required: _required,
        limit: _limit,
        ...rest
      } = JSON.parse(fingerprint) as Record<string, unknown>;
      return JSON.stringify(rest);
    } catch {
      return fingerprint;
    }
  };
  return stored !== undefined && withoutRange(stored) === withoutRange(requested);
}

function contentSource(
  source: VolumeContentSource__Output | null | undefined,
): VolumeAttributes["contentSource"] {
  if (!source || !source.type) return undefined;
  if (source.type === "snapshot")
    return {
      snapshot: requireField(source.snapshot?.snapshot_id, "volume_content_source.snapshot.snapshot_id"),
    };
  return { volume: requireField(source.volume?.volume_id, "volume_content_source.volume.volume_id") };
}

/** Why this node is outside requisite topologies that all exclude it, if it is. */
function topologyProblem(
  requirement: TopologyRequirement__Output | null | undefined,
  options: ControllerOptions,
): string | undefined {
  const requisite = requirement?.requisite ?? [];
  if (requisite.length === 0) return undefined;
  const fits = requisite.some((t) => {
    const value = t.segments?.[options.topologyKey];
    return value === undefined || value === options.nodeId;
  });
  if (fits) return undefined;
  const nodes = requisite.map((t) => t.segments?.[options.topologyKey]).join(", ");
  return `accessibility requirements allow only node(s) ${nodes}; this is node ${options.nodeId}`;
}

/** Requisite topologies that all exclude this node mean the volume cannot be made here. */
function checkTopology(
  requirement: TopologyRequirement__Output | null | undefined,
  options: ControllerOptions,
): void {
  const problem = topologyProblem(requirement, options);
  if (problem) throw new CsiError(status.RESOURCE_EXHAUSTED, problem);
}
