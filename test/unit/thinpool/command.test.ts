import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ExecaRunner } from "../../../src/thinpool/command.js";
import { CommandError } from "../../../src/thinpool/errors.js";

describe("ExecaRunner (real processes on the host)", () => {
  const runner = new ExecaRunner();

  it("returns stdout without its final newline, with the runner's environment, and counts spawns", async () => {
    const before = runner.spawned;
    const { stdout } = await runner.run("sh", ["-c", 'printf "%s|%s\\n\\n" "$LC_ALL" "$DM_DISABLE_UDEV"']);
    assert.equal(stdout, "C|1\n");
    assert.equal(runner.spawned, before + 1);
  });

  it("passes this process's environment under the runner's, and a call's own over both", async () => {
    const print = ["-c", 'printf "%s|%s|%s" "$HOME" "$DM_DISABLE_UDEV" "$TPCSI_EXTRA"'];
    const runnerEnv = new ExecaRunner({ env: { TPCSI_EXTRA: "runner" } });
    assert.equal((await runnerEnv.run("sh", print)).stdout, `${process.env.HOME ?? ""}|1|runner`);
    const call = await runnerEnv.run("sh", print, { env: { TPCSI_EXTRA: "call", DM_DISABLE_UDEV: "0" } });
    assert.equal(call.stdout, `${process.env.HOME ?? ""}|0|call`);
    assert.equal(
      (await runnerEnv.run("sh", print)).stdout,
      `${process.env.HOME ?? ""}|1|runner`,
      "a call's env is its own",
    );
  });

  it("does not pipe stdout the caller discards, and still reports stderr", async () => {
    assert.equal((await runner.run("echo", ["unread"], { discardStdout: true })).stdout, "");
    await assert.rejects(
      runner.run("sh", ["-c", "echo out; echo 'resume ioctl failed: Invalid argument' >&2; exit 1"], {
        discardStdout: true,
      }),
      (err: unknown) => {
        assert.ok(err instanceof CommandError);
        assert.equal(err.errno, "EINVAL");
        assert.match(err.message, /resume ioctl failed/);
        return true;
      },
    );
  });

  it("gives the command an immediate end of input", async () => {
    assert.equal((await runner.run("cat", [])).stdout, "");
  });

  it("turns a failure into a CommandError with the exit code and the kernel's errno", async () => {
    await assert.rejects(
      runner.run("sh", [
        "-c",
        "echo 'device-mapper: remove ioctl failed: Device or resource busy' >&2; exit 1",
      ]),
      (err: unknown) => {
        assert.ok(err instanceof CommandError);
        assert.equal(err.exitCode, 1);
        assert.equal(err.errno, "EBUSY");
        assert.equal(err.timedOut, false);
        return true;
      },
    );
  });

  it("reports a missing binary as ENOENT and a hung command as timed out", async () => {
    await assert.rejects(runner.run("no-such-binary-thinpool", []), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.errno, "ENOENT");
      assert.equal(err.exitCode, null);
      return true;
    });
    const started = Date.now();
    await assert.rejects(runner.run("sleep", ["5"], { timeoutMs: 100 }), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.equal(err.timedOut, true);
      assert.equal(err.errno, "ETIMEDOUT");
      assert.match(err.message, /^sleep 5 failed \(timed out\) \[ETIMEDOUT\]: killed after 100 ms$/);
      return true;
    });
    assert.ok(Date.now() - started < 4000, "the hung command was killed, not waited for");
  });

  it("lets a command finish when the driver process exits while it runs", async () => {
    const dir = mkdtempSync(join(tmpdir(), "runner-exit-"));
    const marker = join(dir, "finished");
    const runnerModule = new URL("../../../src/thinpool/command.js", import.meta.url).href;
    // The "driver" starts a command that takes 300 ms, then exits 50 ms later.
    const driver = [
      `const { ExecaRunner } = await import(${JSON.stringify(runnerModule)});`,
      `void new ExecaRunner().run("sh", ["-c", ${JSON.stringify(`sleep 0.3; touch ${marker}`)}]);`,
      "setTimeout(() => process.exit(0), 50);",
    ].join("\n");
    try {
      execFileSync(process.execPath, ["--input-type=module", "-e", driver]);
      assert.equal(existsSync(marker), false, "the driver exited before the command ended");
      await new Promise((resolve) => setTimeout(resolve, 1000));
      assert.equal(existsSync(marker), true, "the command ran to its end");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
