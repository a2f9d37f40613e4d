-- Give a claimed row back at once (transient error or shutdown) instead of waiting out the
-- lease; it stays pending. Only the replica holding the claim may release it.
UPDATE trigger_relay_outbox
SET claimed_by = NULL,
    claimed_until = NULL,
    last_error = $4
WHERE id = $1 AND generation = $2 AND claimed_by = $3 AND state = 'pending'
