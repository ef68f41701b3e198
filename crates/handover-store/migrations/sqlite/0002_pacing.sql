-- Evenly spaced slots shared by every instance (token requests per Salesforce org): the next
-- free slot of each key, in Unix milliseconds.
CREATE TABLE pacing (
    key TEXT PRIMARY KEY NOT NULL,
    next_at INTEGER NOT NULL
);
