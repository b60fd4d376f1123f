-- Per topic, the highest cursor that trimming removed from the replay log: a subscriber
-- resuming after an older cursor is told it missed events.
CREATE TABLE replay_floors (
    topic  TEXT PRIMARY KEY,
    cursor BIGINT NOT NULL
);
