# syntax=docker/dockerfile:1
# thinpool-csi: the CSI driver image (node plugin; Identity + Controller + Node on one socket).
#
#   docker build -t ghcr.io/thinpool-csi/thinpool-csi:0.1.0 .
#
# Not built in this repository's CI: the development machines have no Docker engine.

ARG NODE_VERSION=20

# ---- build: full toolchain, native addon compiled from source ------------------------------------------
FROM node:${NODE_VERSION}-bookworm AS build
WORKDIR /src
ENV npm_config_update_notifier=false \
    npm_config_fund=false \
    npm_config_audit=false

COPY package.json package-lock.json ./
# Install without running any package's install script, whatever the npm version: npm 10 (bundled with
# node:20) would run all of them, npm 11 only those allowed by "allowScripts" in package.json. Then build the
# one native addon the driver needs, better-sqlite3, from source against this image's Node and glibc, and
# prove that it loads.
RUN npm ci --ignore-scripts \
 && npm_config_build_from_source=true npm rebuild better-sqlite3 \
 && node -e "require('better-sqlite3')(':memory:').prepare('select 1').get()"

# Only what the driver is made of: test/, bench/ and the TypeScript scripts are left out by .dockerignore,
# so `npm run build` (code generation by scripts/*.mjs, then tsc over tsconfig.json) compiles src/ alone.
COPY tsconfig.json ./
COPY csi-proto ./csi-proto
COPY scripts ./scripts
COPY src ./src
RUN npm run build \
 && test -f dist/src/cli/main.js \
 && npm prune --omit=dev

# ---- dmsetup: Debian's own lvm2 source package, linked statically -------------------------------------
# The driver starts one dmsetup per kernel operation; a static one starts without loading shared objects
# (the script says why and how it is configured). The VM suites and the benchmark run the same build.
FROM debian:bookworm AS dmsetup
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc make libc6-dev dpkg-dev xz-utils \
 && rm -rf /var/lib/apt/lists/*
# The script itself checks that the result is static and runs.
COPY scripts/build-dmsetup.sh /usr/local/bin/build-dmsetup.sh
RUN bash /usr/local/bin/build-dmsetup.sh /out

# ---- runtime: slim Debian with the device-mapper and filesystem tools -----------------------------------
FROM node:${NODE_VERSION}-bookworm-slim
# mkfs/resize for ext4 and xfs, util-linux and mount (mount, umount, blkid, blkdiscard, losetup, wipefs,
# findmnt), thin_check/thin_repair, modprobe for dm-thin-pool, and tini as PID 1 (signals reach node,
# children of dmsetup/mkfs are reaped). dmsetup itself comes from the stage above, not from Debian's
# dmsetup package, so there is one dmsetup on PATH.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      e2fsprogs \
      xfsprogs \
      util-linux \
      mount \
      thin-provisioning-tools \
      kmod \
      tini \
 && rm -rf /var/lib/apt/lists/*

COPY --from=dmsetup /out/dmsetup /usr/local/sbin/dmsetup

WORKDIR /app
ENV NODE_ENV=production
# Same layout as the repository: code that finds csi-proto/ or package.json relative to itself works.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/csi-proto ./csi-proto
COPY --from=build /src/dist/src ./dist/src
# `thinpool-csi status` for `kubectl exec ... -- thinpool-csi status`.
RUN printf '#!/bin/sh\nexec node /app/dist/src/cli/main.js "$@"\n' > /usr/local/bin/thinpool-csi \
 && chmod 0755 /usr/local/bin/thinpool-csi

LABEL org.opencontainers.image.title="thinpool-csi" \
      org.opencontainers.image.description="CSI driver for node-local thin volumes and snapshots on device-mapper thin pools" \
      org.opencontainers.image.licenses="Apache-2.0"

# Runs as root: device-mapper, loop devices and mounts need it (the pod is privileged).
# A 1 MiB young generation: ~9 MB less resident at 2,000 devices at the same speed (docs/PERFORMANCE.md).
# The benchmark starts its driver with the flags found here.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=1", "/app/dist/src/cli/main.js"]
CMD ["serve"]
