-- Webhook registrations of the sandbox scheduler (secret included), one JSON record each.
CREATE TABLE sched_webhooks (
    id     TEXT COLLATE "C" PRIMARY KEY,
    record JSONB NOT NULL
);
