// What the in-VM suites (test/e2e/suites/**) get from the harness, read from the environment set by
// test/e2e/harness/e2e-stages.ts. Suites call vmSuiteDisks() in a before() hook: outside the test VM it
// throws, so a suite run by mistake on a workstation fails loudly instead of running dmsetup against the
// host's real disks.

export class NotInTestVmError extends Error {
  override readonly name = "NotInTestVmError";
}

export interface SuiteDisks {
  /** Thin pool data device (2 GiB, /dev/vda). */
  data: string;
  /** Thin pool metadata device (64 MiB, /dev/vdb). */
  meta: string;
  /** Spare disk for the node state store (256 MiB, /dev/vdc). */
  state: string;
}

/** True inside a VM booted by test/e2e/harness/vm.ts. */
export function inTestVm(): boolean {
  return process.env.THINPOOL_VM === "1";
}

export function vmSuiteDisks(): SuiteDisks {
  if (!inTestVm()) {
    throw new NotInTestVmError(
      "this suite manipulates block devices and must run inside the test VM: use npm run test:e2e",
    );
  }
  const get = (name: string): string => {
    const value = process.env[name];
    if (value === undefined || value === "")
      throw new NotInTestVmError(`${name} is not set by the VM harness`);
    return value;
  };
  return {
    data: get("THINPOOL_E2E_DATA_DEV"),
    meta: get("THINPOOL_E2E_META_DEV"),
    state: get("THINPOOL_E2E_STATE_DEV"),
  };
}

/** Directory shared with the host for result files (JSON reports), or null when none was requested. */
export function vmResultDir(): string | null {
  const dir = process.env.THINPOOL_VM_RESULT_DIR;
  return dir === undefined || dir === "" ? null : dir;
}
