-- The extension that answered a call to a number that is not that extension (a ring group's
-- member, a queue's agent, where an IVR sent the caller); NULL otherwise (SPEC T7, T9).
ALTER TABLE call_logs ADD COLUMN callee TEXT NULL;
