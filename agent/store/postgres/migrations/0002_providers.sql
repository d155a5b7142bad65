-- Model providers an admin configured (OpenCode's provider JSON). config holds the
-- provider without its secret values; ciphertext holds those values (options.apiKey,
-- header values) sealed with the store's keyring, bound to the provider id.
CREATE TABLE providers (
    id          TEXT PRIMARY KEY,
    config      TEXT NOT NULL,
    ciphertext  BYTEA NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
