import { status } from "@grpc/grpc-js";
import { mkdir, readdir, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { maxSizeBytes, parseCapacityRange } from "../csi/capacity-range.js";
import { capabilityProblem, requireField } from "../csi/capabilities.js";
import { engineCall } from "../csi/engine-errors.js";
import { CsiError } from "../csi/errors.js";
import type { NodeHandlers } from "../csi/types.js";
import type { VolumeCapability__Output } from "../generated/csi/v1/VolumeCapability.js";
import type { VolumeAttributes } from "../controller/controller-service.js";
import { isLocal, parseId } from "../controller/ids.js";
import type { StateStore } from "../state/store.js";
import type { DeviceRecord } from "../state/types.js";
import type { CommandRunner } from "../thinpool/command.js";
import type { ThinPoolEngine } from "../thinpool/engine.js";
import { crashPoint } from "../util/crash-point.js";
import {
  filesystemStats,
  growFilesystem,
  makeFilesystem,
  probeDevice,
  type FilesystemType,
} from "./filesystem.js";
import { checkPathUnder } from "./host-paths.js";
import { isMountPoint, mountsAt } from "./mounts.js";

export interface NodeOptions {
  nodeId: string;
  topologyKey: string;
  kubeletDir: string;
  fsTypes: readonly FilesystemType[];
  defaultFsType: FilesystemType;
  maxVolumesPerNode: number;
}

const NODE_CAPABILITIES = [
  "STAGE_UNSTAGE_VOLUME",
  "GET_VOLUME_STATS",
  "EXPAND_VOLUME",
  "VOLUME_CONDITION",
  "SINGLE_NODE_MULTI_WRITER",
] as const;

/**
 * CSI Node: activation, filesystem creation on first use only, mounts, raw block, stats and expansion.
 * Every stage and publish is recorded in the store, so a repeated call is compared with the first and a
 * DeleteVolume can tell the volume is still in use.
 */
export function createNodeService(
  engine: ThinPoolEngine,
  store: StateStore,
  runner: CommandRunner,
  options: NodeOptions,
): NodeHandlers {
  const localVolume = (id: string): DeviceRecord => {
    const parsed = parseId(id, "volume");
    const device = parsed && isLocal(parsed, options.nodeId) ? engine.getDevice(parsed.device) : undefined;
    if (!device || device.kind !== "volume")
      throw new CsiError(status.NOT_FOUND, `volume ${id} does not exist on node ${options.nodeId}`);
    return device;
  };

  const checkPath = async (path: string, what: string): Promise<string> => {
    const problem = await checkPathUnder(options.kubeletDir, path, what);
    if (problem) throw new CsiError(status.INVALID_ARGUMENT, problem);
    return path;
  };

  /** Already vetted by capabilityProblem (checkCapability): no escaping or smuggled options. */
  const mountFlags = (cap: VolumeCapability__Output): string[] => cap.mount?.mount_flags ?? [];

  /** Whether what is at `path` is this device: a filesystem on it mounted there, or its node bound there. */
  const holdsDevice = async (path: string, device: DeviceRecord): Promise<boolean> => {
    const [dev, at] = await Promise.all([
      stat(engine.devicePath(device.name)).catch(() => undefined),
      stat(path).catch(() => undefined),
    ]);
    if (!dev?.isBlockDevice() || !at) return false;
    return at.isBlockDevice() ? at.rdev === dev.rdev : at.dev === dev.rdev;
  };

  /**
   * Whether the mount at `path` is this volume's `role` mount: recorded so, or (after a crash between
   * the mount and its record) unrecorded and of this device. The hostile-input suite found Stage and
   * Publish adopting another volume's mount at the path they were given (so a pod could be handed
   * another volume's data), and Unstage/Unpublish with a garbage or another volume's id unmounting
   * whatever was there.
   */
  const isOwnMount = async (device: DeviceRecord, role: "stage" | "publish", path: string) => {
    if (store.getNodePaths(device.name, role).some((p) => p.path === path)) return true;
    if (store.findNodePath("stage", path) || store.findNodePath("publish", path)) return false;
    return holdsDevice(path, device);
  };

  /**
   * A path to mount on must be free: this volume's own mount (idempotent retry), nothing yet, an empty
   * directory (mount) or an empty file (raw block). Anything else (another volume's mount, a kubelet
   * file, a directory with content) is FAILED_PRECONDITION, checked before the device is touched.
   */
  const checkFree = async (device: DeviceRecord, role: "stage" | "publish", path: string, block: boolean) => {
    if (await isMountPoint(path)) {
      if (await isOwnMount(device, role, path)) return;
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `${path} holds a mount that is not this volume's ${role}`,
      );
    }
    const info = await stat(path).catch(() => undefined);
    if (!info) return;
    const empty = block
      ? info.isFile() && info.size === 0
      : info.isDirectory() && (await readdir(path)).length === 0;
    if (!empty)
      throw new CsiError(
        status.FAILED_PRECONDITION,
        `${path} already holds ${block ? "something other than an empty file" : "something other than an empty directory"}; refusing to mount over it`,
      );
  };

  const checkCapability = (cap: VolumeCapability__Output | null | undefined): VolumeCapability__Output => {
    if (!cap) throw new CsiError(status.INVALID_ARGUMENT, "volume_capability is required");
    const problem = capabilityProblem(cap, options.fsTypes);
    if (problem) throw new CsiError(status.INVALID_ARGUMENT, problem);
    return cap;
  };

  return {
    async NodeGetCapabilities() {
      return { capabilities: NODE_CAPABILITIES.map((type) => ({ rpc: { type } })) };
    },

    async NodeGetInfo() {
      return {
        node_id: options.nodeId,
        max_volumes_per_node: options.maxVolumesPerNode,
        accessible_topology: { segments: { [options.topologyKey]: options.nodeId } },
      };
    },

    async NodeStageVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const stagingPath = await checkPath(request.staging_target_path, "staging_target_path");
      const cap = checkCapability(request.volume_capability);
      const flags = cap.access_type === "mount" ? mountFlags(cap) : [];
      const device = localVolume(id);
      const attributes = device.attributes as VolumeAttributes;
      const fsType = (cap.mount?.fs_type || attributes.fsType || options.defaultFsType) as FilesystemType;
      const args = { accessType: cap.access_type, fsType: cap.access_type === "mount" ? fsType : "", flags };

      const previous = store.getNodePaths(device.name, "stage").find((p) => p.path === stagingPath);
      if (previous && JSON.stringify(previous.args) !== JSON.stringify(args)) {
        throw new CsiError(
          status.ALREADY_EXISTS,
          `volume ${id} is already staged at ${stagingPath} with other arguments`,
        );
      }
      if (cap.access_type === "mount") {
        // A volume made for raw block only has no fs type: mounting it would format the user's raw data.
        if (!attributes.fsType)
          throw new CsiError(
            status.FAILED_PRECONDITION,
            `volume ${id} was created for raw block access; it cannot be staged as a filesystem`,
          );
        await checkFree(device, "stage", stagingPath, false);
      }
      const devicePath = await engineCall(() => engine.activate(device.name));
      crashPoint("stage.activated");
      if (cap.access_type === "mount") {
        if (!(await isMountPoint(stagingPath))) {
          const found = await probeDevice(runner, devicePath);
          if (found.kind === "other") {
            throw new CsiError(
              status.FAILED_PRECONDITION,
              `volume ${id} holds ${found.what}; refusing to format or mount it as ${fsType}`,
            );
          }
          if (found.kind === "filesystem" && found.type !== fsType) {
            throw new CsiError(
              status.FAILED_PRECONDITION,
              `volume ${id} already holds a ${found.type} filesystem, not ${fsType}; it is never reformatted`,
            );
          }
          if (found.kind === "empty") {
            const extra = attributes.mkfsOptions ? attributes.mkfsOptions.split(/\s+/).filter(Boolean) : [];
            await makeFilesystem(runner, devicePath, fsType, extra);
            crashPoint("stage.formatted");
          }
          await mkdir(stagingPath, { recursive: true });
          // xfs refuses to mount two filesystems with one UUID; a snapshot restore has its origin's UUID.
          const options = [...flags, ...(fsType === "xfs" ? ["nouuid"] : [])];
          await runner.run("mount", [
            "-t",
            fsType,
            ...(options.length ? ["-o", options.join(",")] : []),
            devicePath,
            stagingPath,
          ]);
          crashPoint("stage.mounted");
        }
        if (attributes.growFilesystem) {
          await growFilesystem(runner, devicePath, stagingPath, fsType);
          engine.setAttributes(device.name, { ...attributes, growFilesystem: false });
        }
      }
      store.putNodePath(device.name, "stage", stagingPath, args);
      return {};
    },

    async NodeUnstageVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const stagingPath = await checkPath(request.staging_target_path, "staging_target_path");
      const parsed = parseId(id, "volume");
      const found = parsed && isLocal(parsed, options.nodeId) ? engine.getDevice(parsed.device) : undefined;
      const device = found?.kind === "volume" ? found : undefined;
      // Not staged there (or no such volume): nothing to undo, and a mount that is not ours stays.
      if (!device) return {};
      if ((await isMountPoint(stagingPath)) && (await isOwnMount(device, "stage", stagingPath)))
        await runner.run("umount", [stagingPath]);
      crashPoint("unstage.unmounted");
      store.deleteNodePath(device.name, "stage", stagingPath);
      if (!store.isInUseOnNode(device.name)) await engineCall(() => engine.deactivate(device.name));
      return {};
    },

    async NodePublishVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const targetPath = await checkPath(request.target_path, "target_path");
      // STAGE_UNSTAGE_VOLUME is advertised: the spec's code for a missing staging path is FAILED_PRECONDITION.
      if (!request.staging_target_path)
        throw new CsiError(
          status.FAILED_PRECONDITION,
          "staging_target_path is required: stage the volume first",
        );
      const stagingPath = await checkPath(request.staging_target_path, "staging_target_path");
      const cap = checkCapability(request.volume_capability);
      const flags = cap.access_type === "mount" ? mountFlags(cap) : [];
      const device = localVolume(id);
      const staged = store.getNodePaths(device.name, "stage").find((p) => p.path === stagingPath);
      if (!staged)
        throw new CsiError(
          status.FAILED_PRECONDITION,
          `volume ${id} is not staged at ${stagingPath}; call NodeStageVolume first`,
        );
      // A filesystem staging published as a raw device, or a raw staging (an empty directory) bound as a
      // filesystem, is not what the volume was staged for ("Exceeds capabilities").
      if (staged.args.accessType !== cap.access_type)
        throw new CsiError(
          status.FAILED_PRECONDITION,
          `volume ${id} is staged for ${String(staged.args.accessType)} access, not ${cap.access_type}`,
        );
      const readonly = request.readonly || cap.access_mode?.mode === "SINGLE_NODE_READER_ONLY";
      const args = { accessType: cap.access_type, readonly, flags, stagingPath };
      const previous = store.getNodePaths(device.name, "publish").find((p) => p.path === targetPath);
      if (previous && JSON.stringify(previous.args) !== JSON.stringify(args)) {
        throw new CsiError(
          status.ALREADY_EXISTS,
          `volume ${id} is already published at ${targetPath} with other arguments`,
        );
      }
      if (cap.access_mode?.mode === "SINGLE_NODE_SINGLE_WRITER") {
        const others = store.getNodePaths(device.name, "publish").filter((p) => p.path !== targetPath);
        if (others.length)
          throw new CsiError(
            status.FAILED_PRECONDITION,
            `volume ${id} is SINGLE_NODE_SINGLE_WRITER and already published at ${others[0]?.path}`,
          );
      }
      await checkFree(device, "publish", targetPath, cap.access_type === "block");
      if (!(await isMountPoint(targetPath))) {
        let source = stagingPath;
        if (cap.access_type === "block") {
          source = engine.devicePath(device.name);
          await mkdir(dirnameOf(targetPath), { recursive: true });
          await writeFile(targetPath, "", { flag: "a" });
        } else {
          await mkdir(targetPath, { recursive: true });
        }
        await runner.run("mount", ["--bind", source, targetPath]);
        if (readonly || flags.length) {
          // "ro" last: mount(8) lets the last option win, and a flag "rw" must not undo a read-only publish.
          const remount = ["remount", "bind", ...flags, ...(readonly ? ["ro"] : [])];
          await runner.run("mount", ["-o", remount.join(","), targetPath]);
        }
      }
      store.putNodePath(device.name, "publish", targetPath, args);
      return {};
    },

    async NodeUnpublishVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const targetPath = await checkPath(request.target_path, "target_path");
      const parsed = parseId(id, "volume");
      const found = parsed && isLocal(parsed, options.nodeId) ? engine.getDevice(parsed.device) : undefined;
      const device = found?.kind === "volume" ? found : undefined;
      // Only this volume's publish is undone (and its file or directory removed); whatever else is at
      // the path (another volume's mount, a kubelet file) stays: this volume is not published there.
      if (!device) return {};
      const recorded = store.getNodePaths(device.name, "publish").some((p) => p.path === targetPath);
      let ours = recorded;
      while ((await isMountPoint(targetPath)) && (await isOwnMount(device, "publish", targetPath))) {
        await runner.run("umount", [targetPath]);
        ours = true;
      }
      if (ours && !(await isMountPoint(targetPath))) {
        const info = await stat(targetPath).catch(() => undefined);
        if (info?.isDirectory()) await rmdir(targetPath);
        else if (info) await rm(targetPath);
      }
      store.deleteNodePath(device.name, "publish", targetPath);
      return {};
    },

    async NodeGetVolumeStats(request) {
      const id = requireField(request.volume_id, "volume_id");
      const volumePath = requireField(request.volume_path, "volume_path");
      const device = localVolume(id);
      const known = [
        ...store.getNodePaths(device.name, "stage"),
        ...store.getNodePaths(device.name, "publish"),
      ].some((p) => p.path === volumePath);
      if (!known)
        throw new CsiError(status.NOT_FOUND, `volume ${id} is not staged or published at ${volumePath}`);
      const condition = await engine.deviceCondition(device.name, { shouldBeActive: true });
      const mounts = await mountsAt(volumePath);
      if (mounts.length === 0) {
        return {
          usage: [],
          volume_condition: { abnormal: true, message: `nothing is mounted at ${volumePath}` },
        };
      }
      const info = await stat(volumePath);
      if (!info.isDirectory()) {
        return { usage: [{ unit: "BYTES", total: device.sizeBytes }], volume_condition: condition };
      }
      const s = await filesystemStats(volumePath);
      return {
        usage: [
          { unit: "BYTES", total: s.totalBytes, available: s.availableBytes, used: s.usedBytes },
          { unit: "INODES", total: s.totalInodes, available: s.freeInodes, used: s.usedInodes },
        ],
        volume_condition: condition,
      };
    },

    async NodeExpandVolume(request) {
      const id = requireField(request.volume_id, "volume_id");
      const volumePath = await checkPath(request.volume_path, "volume_path");
      const device = localVolume(id);
      // "NodeExpandVolume ONLY supports expansion of already node-published or node-staged volumes on the
      // given volume_path": checked before anything grows. The hostile-input suite found the device grown
      // for any path (outside the kubelet dir, another volume's) and resize2fs run on what was there.
      const at = [...store.getNodePaths(device.name, "stage"), ...store.getNodePaths(device.name, "publish")];
      if (!at.some((p) => p.path === volumePath))
        throw new CsiError(status.NOT_FOUND, `volume ${id} is not staged or published at ${volumePath}`);
      const { required, limit } = parseCapacityRange(
        request.capacity_range,
        maxSizeBytes(engine.blockBytes(device.pool)),
      );
      // capacity_range is OPTIONAL, and a volume already as large as asked "SHOULD reply 0 OK": the
      // device keeps its size and the filesystem is grown to fill it (a retry after a failed fs grow).
      const size = Math.max(engine.roundSize(device.pool, required ?? device.sizeBytes), device.sizeBytes);
      if (limit !== undefined && size > limit)
        throw new CsiError(
          status.OUT_OF_RANGE,
          `the volume would be ${size} bytes (${required ?? "no"} bytes asked, rounded to the pool block, never shrunk), above limit_bytes ${limit}`,
        );
      const grown = await engineCall(() => engine.resize(device.name, size));
      crashPoint("expand.device-grown");
      const isBlock =
        request.volume_capability?.access_type === "block" ||
        !(await stat(volumePath).then(
          (s) => s.isDirectory(),
          () => false,
        ));
      if (!isBlock) {
        const mounts = await mountsAt(volumePath);
        const fsType = mounts[0]?.fsType;
        if (!fsType)
          throw new CsiError(
            status.FAILED_PRECONDITION,
            `nothing is mounted at ${volumePath}; the filesystem can only grow while staged`,
          );
        await growFilesystem(runner, engine.devicePath(device.name), volumePath, fsType);
      }
      return { capacity_bytes: grown.sizeBytes };
    },
  } satisfies NodeHandlers;
}

function dirnameOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
}
