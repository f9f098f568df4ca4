-- The configuration `make run` starts therasyncd with (scripts/run.sh),
-- beside the flags it passes: the demo clinic-api's patients are read on
-- demand, through the cache (docs/CACHE.md), not replicated in full.
ondemand = {
  patients = { fresh_ms = 30000, max_stale_ms = 600000, gc_ms = 300000 },
}
