"""The PocketBase-compatible backend of one tenant: schema, records, filters, auth, on PocketBase's own
data.db layout (so a stock PocketBase data dir is a pbfast tenant and back)."""
