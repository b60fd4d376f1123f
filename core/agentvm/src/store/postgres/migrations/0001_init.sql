-- agentvm store, PostgreSQL layout 1: the tables of redb's layout (store/redb.rs), as tables.
-- Records are JSONB (the protocol's JSON); the columns beside them are the keys and the
-- fields that queries order or filter by. Applied once, in a transaction, by
-- store/postgres/migrate.rs; never edit a released migration, add the next file instead.

-- Single values: 'schema_version' (the record schema, store::SCHEMA_VERSION) and
-- 'scheduler_instance' (the scheduler's id).
CREATE TABLE meta (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE containers (
    container_id TEXT COLLATE "C" PRIMARY KEY,
    record       JSONB NOT NULL
);

CREATE TABLE definitions (
    name   TEXT COLLATE "C" PRIMARY KEY,
    record JSONB NOT NULL
);

-- Deleting a container deletes its images, their sessions and messages (the store deletes
-- the sessions' replay topics itself: replay entries are not tied to a session record).
CREATE TABLE images (
    image_id     TEXT COLLATE "C" PRIMARY KEY,
    container_id TEXT COLLATE "C" NOT NULL REFERENCES containers (container_id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    record       JSONB NOT NULL
);
CREATE INDEX images_by_container ON images (container_id, created_at, image_id);

-- next_seq: the sequence number of the session's next message. An append takes it with
-- UPDATE ... RETURNING, which locks the row: concurrent appends to one session queue there.
CREATE TABLE sessions (
    session_id   TEXT COLLATE "C" PRIMARY KEY,
    image_id     TEXT COLLATE "C" NOT NULL REFERENCES images (image_id) ON DELETE CASCADE,
    container_id TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    next_seq     BIGINT NOT NULL DEFAULT 0,
    record       JSONB NOT NULL
);
CREATE INDEX sessions_by_image ON sessions (image_id, created_at, session_id);

CREATE TABLE messages (
    session_id TEXT COLLATE "C" NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    message    JSONB NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- The event JSON is kept as the exact bytes the bus published.
CREATE TABLE replay (
    topic     TEXT COLLATE "C" NOT NULL,
    cursor    BIGINT NOT NULL,
    timestamp BIGINT NOT NULL,
    event     BYTEA NOT NULL,
    PRIMARY KEY (topic, cursor)
);

CREATE TABLE tokens (
    hash       TEXT COLLATE "C" PRIMARY KEY,
    id         TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    record     JSONB NOT NULL
);
CREATE INDEX tokens_by_id ON tokens (id);

-- The scheduler's tables (agentvm_scheduler::SchedulerStore).
CREATE TABLE sched_nodes (
    node_id TEXT COLLATE "C" PRIMARY KEY,
    record  JSONB NOT NULL
);

CREATE TABLE sched_templates (
    id     TEXT COLLATE "C" PRIMARY KEY,
    record JSONB NOT NULL
);

CREATE TABLE sched_sandboxes (
    id     TEXT COLLATE "C" PRIMARY KEY,
    record JSONB NOT NULL
);

-- Executions may name a sandbox that is not stored (yet, or any more): no foreign key.
CREATE TABLE sched_executions (
    id         TEXT COLLATE "C" PRIMARY KEY,
    sandbox_id TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    record     JSONB NOT NULL
);
CREATE INDEX sched_executions_by_sandbox ON sched_executions (sandbox_id, created_at, id);
