-- Whether the row already holds outcome $3 (skip reason $4) for generation $2 and firing $5.
-- Run by the Python perform_firing activity (trigger_relay/outcome.py) when record_outcome.sql
-- matched nothing: an earlier attempt of the same workflow recorded this very outcome and its
-- result was lost (the worker killed after the commit). The retry then reports the outcome
-- recorded, so that the workflow counts it (once) rather than asking record_outcome, which
-- would leave the final row alone and count nothing. $6 is the caller's workflow id: only
-- the row's own workflow (the one the claim wrote) can have recorded it.
SELECT 1
FROM trigger_relay_outbox
WHERE id = $1 AND generation = $2 AND state = $3
  AND skip_reason IS NOT DISTINCT FROM $4::text
  AND firing_uuid IS NOT DISTINCT FROM $5::uuid
  AND workflow_id = $6
