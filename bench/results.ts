/** What one benchmark run measured (written by bench/vm-bench.ts in the VM, read by bench/report.ts). */
import type { ReconcilePhases } from "../src/thinpool/context.js";
import type { Summary } from "./stats.js";
import type { CreateStream } from "./create-stream.js";

export interface BenchSizes {
  /** CreateVolume samples (driver, floor and LVM each). */
  samples: number;
  /** CreateSnapshot calls under write load. */
  snapshots: number;
  /** First NodeStage and restore samples. */
  stages: number;
  /** DeleteVolume samples, with and without discard. */
  deletes: number;
  scaleVolumes: number;
  scaleSnapshots: number;
  /** CreateVolume calls per concurrency level in the throughput test. */
  throughputCalls: number;
  /** Calls timed at the start and at the end of the scale test. */
  scaleProbe: number;
  /** Driver restarts with every device active (the reconciliation reported is their median). */
  restarts?: number;
  volumeBytes: number;
}

/** Per-call costs counted inside the driver process. */
export interface CallCounts {
  spawnsPerCall: number;
  statementsPerCall: number;
  /** CPU per call: the driver's own, its reaped children's, and the benchmark's client's (older runs lack them). */
  cpuMsPerCall?: { driver: number; children: number; client: number };
}

export interface FreezeParts {
  suspend: Summary;
  createSnap: Summary;
  resume: Summary;
}

export interface BenchResults {
  sizes: BenchSizes;
  kernel: string;
  /** Which dmsetup the driver and the shell loops ran (absent in results saved before it was recorded). */
  dmsetup?: string;
  createVolume: {
    driver: Summary;
    floor: Summary;
    lvm: Summary;
    counts: CallCounts;
    /** Where the stream's time went (absent in results saved before it was measured). */
    stream?: CreateStream;
  };
  /** strace over a few CreateVolume calls: fsync+fdatasync and execve per call. */
  syscallsPerCreate: { fsyncs: number; execs: number } | null;
  createSnapshot: {
    driverFreeze: Summary;
    driverCall: Summary;
    floorFreeze: Summary;
    floorCall: Summary;
    lvmCall: Summary;
    counts: CallCounts;
    /**
     * The raw sequence on the driver's own origin, each right after one of its snapshots: same volume,
     * same load, same minutes (absent in results saved before it was measured).
     */
    floorFreezeInterleaved?: Summary;
    /**
     * The I/O freeze as the kernel saw it (kprobes: `dm_suspend` entry to `dm_resume` return), for the
     * driver, the raw sequence between its snapshots, and `lvcreate -s` (absent where it was not measured).
     */
    kernelFreeze?: { driver: Summary; rawInterleaved: Summary; lvm: Summary };
    /** Where the freeze went, command by command (absent in results saved before it was measured). */
    freezeParts?: {
      driver: FreezeParts & { between: Summary; gc: Summary };
      raw: FreezeParts;
      rawInterleaved?: FreezeParts;
    };
  };
  /** One `dmsetup version` under the snapshot write load (absent in results saved before it was measured). */
  spawnCost?: { change: Summary; query: Summary; bash: Summary };
  nodeStage: { driver: Summary; byHand: Summary; counts: CallCounts };
  restore: { driver: Summary; byHand: Summary };
  deleteVolume: {
    driver: Summary;
    floor: Summary;
    lvm: Summary;
    driverDiscard: Summary;
    floorDiscard: Summary;
    counts: CallCounts;
  };
  throughput: { concurrency: number; volumesPerSecond: number }[];
  scale: {
    devices: number;
    createAtStart: Summary;
    createAtVolumes: Summary;
    createAtEnd: Summary;
    snapshotAtStart: Summary;
    snapshotAtEnd: Summary;
    listVolumesPage: Summary;
    listVolumesInactivePage: Summary;
    listSnapshotsPage: Summary;
    pageSize: number;
  };
  startup: {
    emptyStartToReadyMs: number;
    importsMs: number;
    restartActive: number;
    restartStartToReadyMs: number;
    /** The median of `restartReconcileSamplesMs`. */
    restartReconcileMs: number;
    restartReconcileSamplesMs?: number[];
    /** Where the median restart's reconciliation went. */
    restartPhasesMs?: ReconcilePhases;
    rebootReactivated: number;
    rebootReconcileMs: number;
    rebootStartToReadyMs: number;
    rebootFloorMs: number;
  };
  memory: { idleRssBytes: number; scaleRssBytes: number; scaleHeapBytes: number };
}
