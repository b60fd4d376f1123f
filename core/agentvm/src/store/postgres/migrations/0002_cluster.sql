-- Cluster membership and container leases (docs/cluster.md).
--
-- Every time here is the database's (`now()`), never a server's clock: servers agree on when a
-- lease expires because one clock decides it.

-- The servers of a cluster: who they are, where their Channel is, when they last showed life.
CREATE TABLE cluster_servers (
    id           TEXT COLLATE "C" PRIMARY KEY,
    url          TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    draining     BOOLEAN NOT NULL DEFAULT false
);

-- Which server owns a container (tenant), until when, and in which epoch. The epoch grows by
-- one at every change of hands (and at every re-acquisition of an expired lease), so a write
-- stamped with an epoch can be attributed to one tenure of one server.
CREATE TABLE container_leases (
    container_id TEXT COLLATE "C" PRIMARY KEY,
    owner        TEXT COLLATE "C" NOT NULL,
    epoch        BIGINT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL
);

-- Which server wrote a message, in which epoch of its container's lease (NULL: written
-- without cluster membership).
ALTER TABLE messages ADD COLUMN lease_owner TEXT, ADD COLUMN lease_epoch BIGINT;
