"""The handlers of a tenant's PocketBase API, one module per PocketBase API group (``apis/*.go``):
:mod:`.health`, :mod:`.collections`, :mod:`.records` (record CRUD), :mod:`.record_auth`; :mod:`.request`
holds what they share. Handlers are synchronous (they run on the node's database worker threads, see
:class:`pbfast.pocketbase.api.TenantApi`), take a :class:`~.request.TenantRequest`, answer through it or
raise :class:`pbfast.http.ApiError`, and call the record and collection services for all database work."""
