/**
 * Schema migrations, applied in order inside one transaction each. A migration is never edited once
 * released: add a new one. `user_version` records how far a database has come.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: pools, devices, quarantined device ids.
  `
  CREATE TABLE pools (
    name            TEXT PRIMARY KEY,
    dm_name         TEXT NOT NULL,
    source          TEXT NOT NULL,          -- JSON of the pool source the pool was opened from
    owns_txid       INTEGER NOT NULL,       -- 1: the engine advances the kernel transaction id
    transaction_id  INTEGER NOT NULL,       -- last transaction id the engine committed to the kernel
    block_bytes     INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
  ) STRICT;

  CREATE TABLE devices (
    name          TEXT PRIMARY KEY,
    pool          TEXT NOT NULL REFERENCES pools(name),
    device_id     INTEGER NOT NULL CHECK (device_id >= 0 AND device_id < 16777216),
    kind          TEXT NOT NULL CHECK (kind IN ('volume', 'snapshot')),
    size_bytes    INTEGER NOT NULL CHECK (size_bytes > 0),
    parent        TEXT,                    -- device it was snapshotted from (may since be deleted)
    state         TEXT NOT NULL,
    pending       TEXT,                    -- JSON: the operation in flight (intent), NULL when settled
    last_error    TEXT,
    request_name  TEXT,                    -- the caller's idempotency key (CSI name)
    attributes    TEXT NOT NULL DEFAULT '{}', -- opaque JSON owned by the caller
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (pool, device_id),
    UNIQUE (kind, request_name)
  ) STRICT;
  CREATE INDEX devices_by_parent ON devices(parent);

  CREATE TABLE quarantined_ids (
    pool       TEXT NOT NULL REFERENCES pools(name),
    device_id  INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    since      TEXT NOT NULL,
    PRIMARY KEY (pool, device_id)
  ) STRICT;
  `,
  // 2: node-side records: where a volume is staged and published, with the arguments used.
  `
  CREATE TABLE node_paths (
    volume      TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('stage', 'publish')),
    path        TEXT NOT NULL,
    args        TEXT NOT NULL,             -- JSON of the request arguments that must match on retry
    created_at  TEXT NOT NULL,
    PRIMARY KEY (volume, role, path)
  ) STRICT;
  `,
  // 3: spare thin ids, created ahead of CreateVolume and never activated.
  `
  CREATE TABLE spare_ids (
    pool       TEXT NOT NULL REFERENCES pools(name),
    device_id  INTEGER NOT NULL CHECK (device_id >= 0 AND device_id < 16777216),
    ready      INTEGER NOT NULL,         -- 0: create_thin announced (intent), 1: in the pool's metadata
    PRIMARY KEY (pool, device_id)
  ) STRICT;
  `,
  // 4: each pool's provisioned total (virtual bytes and device count), kept by triggers in the writing
  // transaction: every capacity check reads it, and a SUM over the pool's devices grew with the pool.
  `
  CREATE TABLE pool_provisioned (
    pool   TEXT PRIMARY KEY,
    bytes  INTEGER NOT NULL,
    count  INTEGER NOT NULL
  ) STRICT;
  INSERT INTO pool_provisioned (pool, bytes, count)
    SELECT pool, SUM(size_bytes), COUNT(*) FROM devices GROUP BY pool;
  CREATE TRIGGER devices_provisioned_insert AFTER INSERT ON devices BEGIN
    INSERT OR IGNORE INTO pool_provisioned (pool, bytes, count) VALUES (NEW.pool, 0, 0);
    UPDATE pool_provisioned SET bytes = bytes + NEW.size_bytes, count = count + 1 WHERE pool = NEW.pool;
  END;
  CREATE TRIGGER devices_provisioned_delete AFTER DELETE ON devices BEGIN
    UPDATE pool_provisioned SET bytes = bytes - OLD.size_bytes, count = count - 1 WHERE pool = OLD.pool;
  END;
  CREATE TRIGGER devices_provisioned_update AFTER UPDATE OF pool, size_bytes ON devices BEGIN
    UPDATE pool_provisioned SET bytes = bytes - OLD.size_bytes, count = count - 1 WHERE pool = OLD.pool;
    INSERT OR IGNORE INTO pool_provisioned (pool, bytes, count) VALUES (NEW.pool, 0, 0);
    UPDATE pool_provisioned SET bytes = bytes + NEW.size_bytes, count = count + 1 WHERE pool = NEW.pool;
  END;
  `,
];
