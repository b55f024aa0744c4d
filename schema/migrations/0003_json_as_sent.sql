-- Keep event payloads and raw reports exactly as the agent sent them. jsonb
-- normalises what it stores: it reorders keys, drops duplicate keys, and prints a
-- number such as 1e1000 back as 1,001 digits, so a small payload could come back
-- a thousand times larger. json stores the validated text itself, and inserts
-- faster because nothing is converted.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
ALTER TABLE reports ALTER COLUMN raw_json TYPE json USING raw_json::json;
