/** The container image's entrypoint, as the benchmark reads it to start its driver the same way. */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { imageNodeFlags } from "../../../bench/driver-control.js";
import { repoPath } from "../../support/repo.js";

describe("deploy: the image's entrypoint", () => {
  it("runs the driver with a 1 MiB young generation, and the benchmark finds that flag", () => {
    assert.deepEqual(imageNodeFlags(readFileSync(repoPath("Dockerfile"), "utf8")), [
      "--max-semi-space-size=1",
    ]);
  });

  it("reads only the flags between node and the script, and refuses a shell-form entrypoint", () => {
    const exec = 'FROM x\nENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/main.js"]\nCMD ["serve"]\n';
    assert.deepEqual(imageNodeFlags(exec), []);
    assert.throws(() => imageNodeFlags("ENTRYPOINT node /app/main.js\n"), /no ENTRYPOINT in exec form/);
  });
});
