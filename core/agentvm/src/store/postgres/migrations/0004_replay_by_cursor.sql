-- The newest cursor of the whole log, read when a server takes a container's lease (so its
-- cursors continue above every server's): an index makes that MAX a lookup, not a scan.
CREATE INDEX replay_by_cursor ON replay (cursor);
