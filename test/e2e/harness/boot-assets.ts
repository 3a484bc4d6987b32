// Everything the VM boots from: the host's kernel, an uncompressed copy of it, and a tiny initramfs.
//
// The guest runs the host's own installed Debian kernel (so the guest's /lib/modules, seen through the 9p
// root, always matches) and a purpose-built initramfs: static busybox, the handful of modules needed to
// reach the 9p root, and the init scripts from guest-scripts.ts. Both derived artefacts are cached under
// .vm-cache/ and keyed by content, so a changed kernel, busybox or init script rebuilds them automatically.
// The guest also runs the dmsetup the image ships (scripts/build-dmsetup.sh), built once into .vm-cache/.

import { createHash, randomBytes } from "node:crypto";
import { constants as fsConstants, existsSync } from "node:fs";
import { access, mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { gunzipSync } from "node:zlib";
import { execa } from "execa";

import { repoPath } from "../../support/repo.js";
import { buildCpio, type CpioEntry } from "./cpio.js";
import { STAGE1_INIT, STAGE2_INIT } from "./guest-scripts.js";

/** Raised when the host lacks something the VM needs; the message says how to fix it. */
export class VmSetupError extends Error {
  override readonly name = "VmSetupError";
}

/**
 * Modules the initramfs must load before it can mount the root: virtio PCI transport, virtio-blk (so the
 * disks exist before stage 2 checks their serials), 9p over virtio, and overlayfs. Their dependencies are
 * resolved from modules.dep; any that are built into the kernel are skipped.
 */
export const INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "9pnet_virtio", "9p", "overlay"] as const;

/** Bump when the initramfs layout changes in a way the content hash would not notice. */
const INITRAMFS_FORMAT = 1;

export interface KernelInfo {
  version: string;
  /** The compressed bzImage in /boot. */
  vmlinuzPath: string;
  modulesDir: string;
}

export interface BootAssets {
  kernel: KernelInfo;
  /** What qemu's -kernel gets: the extracted ELF vmlinux when possible, else the bzImage. */
  kernelImage: string;
  initramfsPath: string;
  /** Modules loaded by the initramfs, in load order (file names). */
  initramfsModules: string[];
  /** Directory holding the statically linked dmsetup the image ships; first on the guest's PATH. */
  dmsetupDir: string;
  /** Milliseconds spent building artefacts in this call (0 when everything came from the cache). */
  buildMs: number;
}

export function cacheDir(): string {
  return process.env.THINPOOL_VM_CACHE_DIR ?? repoPath(".vm-cache");
}

function compareVersions(a: string, b: string): number {
  // Natural order: "6.1.0-56" > "6.1.0-9". Split into digit and non-digit runs and compare pairwise.
  const pa = a.match(/\d+|\D+/g) ?? [];
  const pb = b.match(/\d+|\D+/g) ?? [];
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i];
    const y = pb[i];
    if (x === undefined) return -1;
    if (y === undefined) return 1;
    const nx = /^\d+$/.test(x) ? Number(x) : NaN;
    const ny = /^\d+$/.test(y) ? Number(y) : NaN;
    if (!Number.isNaN(nx) && !Number.isNaN(ny)) {
      if (nx !== ny) return nx - ny;
    } else if (x !== y) {
      return x < y ? -1 : 1;
    }
  }
  return 0;
}

/**
 * The newest /boot/vmlinuz-* that has a matching /lib/modules/<version>/modules.dep, or the version named
 * by THINPOOL_VM_KERNEL. Never hard-coded: CI installs whatever linux-image-amd64 currently points at.
 */
export async function findKernel(): Promise<KernelInfo> {
  const wanted = process.env.THINPOOL_VM_KERNEL;
  let names: string[];
  try {
    names = await readdir("/boot");
  } catch {
    names = [];
  }
  const versions = names
    .filter((n) => n.startsWith("vmlinuz-"))
    .map((n) => n.slice("vmlinuz-".length))
    .filter((v) => existsSync(path.join("/lib/modules", v, "modules.dep")))
    .sort(compareVersions);
  const version = wanted ?? versions[versions.length - 1];
  if (version === undefined || !versions.includes(version)) {
    throw new VmSetupError(
      wanted !== undefined
        ? `THINPOOL_VM_KERNEL=${wanted}: no /boot/vmlinuz-${wanted} with /lib/modules/${wanted}/modules.dep`
        : "no kernel for the test VM: need /boot/vmlinuz-<v> and /lib/modules/<v>/modules.dep; " +
            "run .ci/run or apt-get install linux-image-amd64",
    );
  }
  const vmlinuzPath = `/boot/vmlinuz-${version}`;
  try {
    await access(vmlinuzPath, fsConstants.R_OK);
  } catch {
    throw new VmSetupError(`${vmlinuzPath} is not readable by this user (some distros make it root-only)`);
  }
  return { version, vmlinuzPath, modulesDir: path.join("/lib/modules", version) };
}

async function findStaticBusybox(): Promise<string> {
  const candidates = [process.env.THINPOOL_VM_BUSYBOX, "/bin/busybox", "/usr/bin/busybox"];
  for (const candidate of candidates) {
    if (candidate === undefined || !existsSync(candidate)) continue;
    const elf = await readFile(candidate);
    if (isDynamicElf(elf)) {
      throw new VmSetupError(
        `${candidate} is dynamically linked and cannot run from the initramfs: apt-get install busybox-static`,
      );
    }
    return candidate;
  }
  throw new VmSetupError("busybox not found: run .ci/run or apt-get install busybox-static");
}

/** True when an ELF64 little-endian executable has a PT_INTERP header (needs a dynamic loader). */
function isDynamicElf(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) {
    throw new VmSetupError("busybox is not an ELF executable");
  }
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  const PT_INTERP = 3;
  for (let i = 0; i < phnum; i++) {
    if (elf.readUInt32LE(phoff + i * phentsize) === PT_INTERP) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------------------
// Modules

function moduleName(file: string): string {
  return path
    .basename(file)
    .replace(/\.ko(\.xz|\.zst|\.gz)?$/, "")
    .replace(/-/g, "_");
}

interface ModuleIndex {
  /** module name -> path relative to the modules dir */
  paths: Map<string, string>;
  /** module name -> direct and indirect dependencies as listed by depmod */
  deps: Map<string, string[]>;
  builtin: Set<string>;
}

async function readModuleIndex(kernel: KernelInfo): Promise<ModuleIndex> {
  const paths = new Map<string, string>();
  const deps = new Map<string, string[]>();
  const depText = await readFile(path.join(kernel.modulesDir, "modules.dep"), "utf8");
  for (const line of depText.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const file = line.slice(0, colon);
    const name = moduleName(file);
    paths.set(name, file);
    deps.set(
      name,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map(moduleName),
    );
  }
  const builtin = new Set<string>();
  try {
    const text = await readFile(path.join(kernel.modulesDir, "modules.builtin"), "utf8");
    for (const line of text.split("\n")) if (line.trim()) builtin.add(moduleName(line.trim()));
  } catch {
    // Without modules.builtin we simply assume nothing is built in.
  }
  return { paths, deps, builtin };
}

/** Loadable modules (deps first) needed for `wanted`; built-in ones are dropped. */
export function resolveModuleOrder(index: ModuleIndex, wanted: readonly string[]): string[] {
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (raw: string, chain: string[]): void => {
    const name = raw.replace(/-/g, "_");
    if (seen.has(name)) return;
    seen.add(name);
    if (!index.paths.has(name)) {
      if (index.builtin.has(name)) return;
      throw new VmSetupError(
        `kernel module ${name} (needed for ${[...chain, name].join(" -> ")}) is neither built in nor in modules.dep`,
      );
    }
    for (const dep of index.deps.get(name) ?? []) visit(dep, [...chain, name]);
    order.push(name);
  };
  for (const name of wanted) visit(name, []);
  return order;
}

async function readModuleFile(absPath: string): Promise<Buffer> {
  // The initramfs uses busybox insmod, which wants plain ELF, so compressed modules are expanded here.
  if (absPath.endsWith(".ko")) return readFile(absPath);
  if (absPath.endsWith(".ko.gz")) return gunzipSync(await readFile(absPath));
  const tool = absPath.endsWith(".ko.xz") ? "xz" : absPath.endsWith(".ko.zst") ? "zstd" : null;
  if (tool === null) throw new VmSetupError(`unsupported module file ${absPath}`);
  try {
    const { stdout } = await execa(tool, ["-dc", absPath], { encoding: "buffer", stripFinalNewline: false });
    return Buffer.from(stdout);
  } catch (err) {
    throw new VmSetupError(`cannot decompress ${absPath} with ${tool}: ${(err as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------------------
// Kernel image

/**
 * Extracts the ELF vmlinux from the bzImage. Booting it through the PVH entry point skips both SeaBIOS and
 * the in-guest decompressor, which under TCG takes ~2.5 s per boot (measured: first kernel line at 3.0 s
 * with the bzImage vs 0.6 s with the vmlinux). Returns false (the caller falls back to the bzImage) when
 * the kernel lacks CONFIG_PVH or the payload format is not understood.
 */
async function extractVmlinux(kernel: KernelInfo, target: string): Promise<boolean> {
  try {
    const config = await readFile(`/boot/config-${kernel.version}`, "utf8");
    if (!/^CONFIG_PVH=y$/m.test(config)) return false;
  } catch {
    return false;
  }
  const image = await readFile(kernel.vmlinuzPath);
  // x86 boot protocol: setup_sects at 0x1f1 (0 means 4), payload_offset/length at 0x248/0x24c relative to
  // the protected-mode code, which starts right after the real-mode setup sectors.
  if (image.length < 0x250 || image.toString("ascii", 0x202, 0x206) !== "HdrS") return false;
  const setupSects = image.readUInt8(0x1f1) || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const payload = image.subarray(start, start + image.readUInt32LE(0x24c));
  let elf: Buffer;
  if (payload.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    // --single-stream: the kernel build appends the uncompressed size after the xz stream.
    const { stdout } = await execa("xz", ["-dc", "--single-stream"], {
      input: payload,
      encoding: "buffer",
      stripFinalNewline: false,
    });
    elf = Buffer.from(stdout);
  } else if (payload.readUInt32LE(0) === 0xfd2fb528) {
    const { stdout } = await execa("zstd", ["-dc"], {
      input: payload.subarray(0, payload.length - 4),
      encoding: "buffer",
      stripFinalNewline: false,
    });
    elf = Buffer.from(stdout);
  } else if (payload[0] === 0x1f && payload[1] === 0x8b) {
    elf = gunzipSync(payload.subarray(0, payload.length - 4));
  } else {
    return false;
  }
  if (elf.length < 4 || elf.readUInt32BE(0) !== 0x7f454c46) return false;
  await writeAtomically(target, elf);
  return true;
}

async function writeAtomically(target: string, data: Uint8Array | string): Promise<void> {
  // Parallel test processes may build the same artefact; rename() makes the last writer win atomically.
  const tmp = `${target}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, target);
  } finally {
    await rm(tmp, { force: true });
  }
}

let dmsetupBuild: Promise<string> | null = null;

/**
 * Builds (or finds up to date) the image's dmsetup under the cache, once per process: the script reads
 * Debian's source index (a couple of MB) to learn which lvm2 source is current, not worth every boot.
 */
function prepareDmsetup(dir: string): Promise<string> {
  dmsetupBuild ??= (async () => {
    const out = path.join(dir, "dmsetup");
    try {
      // A build takes ~15 s on the host; the time limit is for a download that hangs.
      await execa("bash", [repoPath("scripts/build-dmsetup.sh"), out], { timeout: 10 * 60_000 });
    } catch (err) {
      dmsetupBuild = null;
      const stderr = (err as { stderr?: string }).stderr || (err as Error).message;
      throw new VmSetupError(`cannot build the image's dmsetup (scripts/build-dmsetup.sh):\n${stderr}`);
    }
    return out;
  })();
  return dmsetupBuild;
}

// ---------------------------------------------------------------------------------------------------------

/** Returns the kernel, the initramfs and the dmsetup to boot with, building and caching them if needed. */
export async function prepareBootAssets(): Promise<BootAssets> {
  const started = Date.now();
  let built = false;
  const kernel = await findKernel();
  const busyboxPath = await findStaticBusybox();
  const dir = cacheDir();
  await mkdir(dir, { recursive: true });

  // Kernel image: keyed by the bzImage's identity (size + mtime is enough for a file owned by dpkg).
  const kstat = await stat(kernel.vmlinuzPath);
  const kernelKey = createHash("sha256")
    .update(`${kernel.version}\0${kstat.size}\0${kstat.mtimeMs}`)
    .digest("hex")
    .slice(0, 16);
  const vmlinuxPath = path.join(dir, `vmlinux-${kernel.version}-${kernelKey}`);
  const noPvhMarker = `${vmlinuxPath}.no-pvh`;
  let kernelImage = kernel.vmlinuzPath;
  if (existsSync(vmlinuxPath)) {
    kernelImage = vmlinuxPath;
  } else if (!existsSync(noPvhMarker)) {
    built = true;
    try {
      if (await extractVmlinux(kernel, vmlinuxPath)) kernelImage = vmlinuxPath;
      // The kernel itself cannot be booted via PVH: remember, so we do not retry on every boot.
      else await writeAtomically(noPvhMarker, "bzImage boot only\n");
    } catch (err) {
      // Typically xz/zstd missing: boot the bzImage this time, and retry once the tool is installed.
      console.error(`[vm] cannot extract vmlinux (booting the slower bzImage): ${(err as Error).message}`);
    }
  }

  // Initramfs: keyed by everything that goes into it.
  const index = await readModuleIndex(kernel);
  const order = resolveModuleOrder(index, INITRAMFS_MODULES);
  const modules = await Promise.all(
    order.map(async (name) => {
      const rel = index.paths.get(name);
      if (rel === undefined) throw new VmSetupError(`module ${name} vanished from modules.dep`);
      return { file: `${name}.ko`, data: await readModuleFile(path.join(kernel.modulesDir, rel)) };
    }),
  );
  const busybox = await readFile(busyboxPath);
  const hash = createHash("sha256");
  hash.update(`format ${INITRAMFS_FORMAT}\0${kernel.version}\0${STAGE1_INIT}\0${STAGE2_INIT}\0`);
  hash.update(busybox);
  for (const m of modules) hash.update(`\0${m.file}\0`).update(m.data);
  const initramfsPath = path.join(dir, `initramfs-${kernel.version}-${hash.digest("hex").slice(0, 16)}.cpio`);
  if (!existsSync(initramfsPath)) {
    built = true;
    const entries: CpioEntry[] = [
      ...["bin", "dev", "etc", "lib", "lib/modules", "mnt", "newroot", "proc", "root", "sys", "tmp"].map(
        (p): CpioEntry => ({ kind: "dir", path: p }),
      ),
      // The kernel opens /dev/console for PID 1's stdio before /init runs and devtmpfs is mounted.
      { kind: "chardev", path: "dev/console", major: 5, minor: 1 },
      { kind: "file", path: "bin/busybox", data: busybox, mode: 0o755 },
      { kind: "file", path: "init", data: Buffer.from(STAGE1_INIT), mode: 0o755 },
      { kind: "file", path: "stage2", data: Buffer.from(STAGE2_INIT), mode: 0o644 },
      {
        kind: "file",
        path: "etc/vm-modules",
        data: Buffer.from(modules.map((m) => m.file).join("\n") + "\n"),
      },
      ...modules.map((m): CpioEntry => ({ kind: "file", path: `lib/modules/${m.file}`, data: m.data })),
    ];
    // Uncompressed on purpose: ~4 MB is nothing for qemu to load, while decompressing under TCG is slow.
    await writeAtomically(initramfsPath, buildCpio(entries));
  }

  const dmsetupDir = await prepareDmsetup(dir);

  return {
    kernel,
    kernelImage,
    initramfsPath,
    initramfsModules: modules.map((m) => m.file),
    dmsetupDir,
    buildMs: built ? Date.now() - started : 0,
  };
}
