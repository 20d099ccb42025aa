-- Personal data sealed per user (crypto-shredding, docs/ARCHITECTURE.md "Personal data").
--
-- One data key per (instance, purpose, subject): purpose 'user' seals a user's personal fields in
-- events and snapshots, purpose 'index' (subject = the instance id) keys the instance's blind index
-- of unique values. The key itself is stored only sealed under the service keyring (key_id, nonce,
-- ciphertext as the keyring's Sealed value). Erasure destroys it: the row stays as a tombstone
-- (no key material, erased_at set), so the subject's key can never be recreated and every reader
-- can tell "erased" from "never sealed".
CREATE TABLE eventstore.data_keys (
    instance_id uuid        NOT NULL,
    purpose     text        NOT NULL CHECK (purpose IN ('user', 'index')),
    subject_id  uuid        NOT NULL,
    key_id      text,
    nonce       text,
    ciphertext  text,
    created_at  timestamptz NOT NULL DEFAULT statement_timestamp(),
    erased_at   timestamptz,
    PRIMARY KEY (instance_id, purpose, subject_id),
    CONSTRAINT data_keys_erased_has_no_key CHECK (
        (erased_at IS NULL AND key_id IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)
        OR (erased_at IS NOT NULL AND key_id IS NULL AND nonce IS NULL AND ciphertext IS NULL))
);

-- The instance setting that makes a SCIM DELETE of a user an erasure.
ALTER TABLE api.instances ADD COLUMN scim_erase_on_delete boolean;

-- Key rotation reseals keys by keyring key id.
CREATE INDEX data_keys_by_keyring_key ON eventstore.data_keys (key_id) WHERE key_id IS NOT NULL;
