-- Users linked to extensions (SPEC Q12): an agent user sees the queue calls its extension may
-- see. At most one user per extension. The link is by id, so it follows a renumbered
-- extension; the API refuses to delete a linked extension (409), the foreign key unlinks as a
-- last resort.
ALTER TABLE users ADD COLUMN extension_id TEXT NULL REFERENCES extensions(id) ON DELETE SET NULL;
CREATE UNIQUE INDEX users_extension ON users(extension_id) WHERE extension_id IS NOT NULL;
