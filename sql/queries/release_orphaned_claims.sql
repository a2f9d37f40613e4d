-- Claims replica $1 holds on pending rows while it has none in flight (the relay drains one
-- batch at a time and calls this only between batches, within a lease after an error).
-- They were left by a claim or mark_dispatched whose answer was lost: the statement timed
-- out on the daemon's side but ran on the server once the network came back, possibly
-- after the first drain that followed. Handing them back now spares their rows the wait
-- for the lease; a row whose workflow did start is found already started on its next claim.
UPDATE trigger_relay_outbox
SET claimed_by = NULL,
    claimed_until = NULL
WHERE state = 'pending' AND claimed_by = $1
RETURNING id
