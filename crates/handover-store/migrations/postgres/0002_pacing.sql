-- Evenly spaced slots shared by every instance (token requests per Salesforce org): the next
-- free slot of each key, in Unix milliseconds of the database's clock.
CREATE TABLE pacing (
    key TEXT PRIMARY KEY NOT NULL,
    next_at BIGINT NOT NULL
);
