-- /etc/therasync/therasyncd.lua — therasyncd's config (docs/CONFIG.md,
-- therasyncd(8)). Every key is shown with its default; the ones commented
-- out have none (or, for secrets, a default only fit for a demo). A key
-- the daemon does not know is an error. Check an edit before a restart:
--   therasyncd --check-config --config /etc/therasync/therasyncd.lua
-- (the systemd unit runs that before every start).

data      = "/var/lib/therasync"       -- default ./var; the unit's StateDirectory
endpoint  = "tcp://127.0.0.1:7410"     -- JSON-RPC ROUTER (ipc:// works too)
events    = "tcp://127.0.0.1:7411"     -- event PUB socket
-- api    = "https://clinic.example/api"  -- the Clinic API; absent: standalone
-- policies = "/etc/therasync/policies"   -- absent: the shipped policies
                                          -- (PREFIX/share/therasync/policies)
log_level = "info"                     -- error | warn | info | debug
insecure  = false                      -- true: allow endpoints beyond loopback
                                       -- without client keys (SECURITY.md)
-- admin  = "127.0.0.1:9464"         -- Prometheus /metrics, /healthz, /readyz (loopback only)

durability        = "strict"           -- "relaxed": answered once the OS has it
max_request_bytes = 1048576            -- larger requests are answered too_large
max_inflight      = 100000             -- calls in flight before new ones get busy
max_db_bytes      = 0                  -- 0: no limit

collections = { "sessions", "consultations" }

auth = {                               -- the daemon's credentials at the Clinic API
  client_id = "therasync",
  -- client_secret = "dev-secret",     -- the demo server's; use client_secret_file
  -- client_secret_file = "/etc/therasync/client-secret",  -- mode 0600, owner therasync
  -- token_url = "https://clinic.example/api/oauth/token", -- default <api>/oauth/token
}

security = {                           -- clients of this daemon (FRONT_DOOR.md)
  -- curve_secret_file = "/etc/therasync/server.key",  -- both or neither:
  -- clients_file      = "/etc/therasync/clients",     -- NAME ROLE PUBLIC-KEY lines
  event_bodies = false,                -- with client keys: events without documents
  -- encryption_key_file = "/etc/therasync/store.key", -- encryption at rest; or the
  --   unit's LoadCredential=therasync.key:... (the default when present)
}

sync = {                               -- the sync actor (SYNC.md)
  concurrency       = 32,
  batch_size        = 128,
  stuck_after       = 8,
  poll_interval_ms  = 5000,
  digest_interval_s = 300,
  digest_soon_s     = 3,
  offline_after     = 3,
  answer_timeout_ms = 10000,
}

lua = {
  memory_mb          = 32,             -- the store's Lua state
  instruction_budget = 1000000,        -- per validation call and selector candidate
}

cache = {                              -- the cache actor (CACHE.md)
  max_bytes               = 67108864,
  max_subscriptions       = 1000,
  max_subscriptions_total = 100000,
}

-- ondemand = {                        -- collections read on demand (CACHE.md)
--   patients = { fresh_ms = 30000, max_stale_ms = 600000, gc_ms = 300000 },
-- }

-- clinic = { name = "Northside Therapy" }  -- the policies' ctx.config
