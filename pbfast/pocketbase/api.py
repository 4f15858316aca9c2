"""The PocketBase HTTP API of one tenant (``/api/...``), answering like PocketBase 0.40: the entry the node
calls (:meth:`TenantApi.handle`), its routes, and how a failure becomes an answer.

The handlers live in :mod:`pbfast.pocketbase.apis`, one module per PocketBase API group (health,
collections, records, record auth, batch); they call the record and collection services and write no SQL. A
``fields`` query parameter trims successful JSON answers, as PocketBase does. Error bodies, status codes and
messages follow the stock server (checked by the differential tests in
``tests/pocketbase/test_differential.py``).

Thread-safety: :meth:`TenantApi.handle` runs on the node's event loop; the handlers are synchronous and run
where ``run`` puts them (the node's database scheduler: one job per tenant at a time, on a worker thread).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final

import apsw

from pbfast.http import ApiError, HeldResponse, HTTPProtocol, Request, Router, Scope
from pbfast.logs import component_logger
from pbfast.pocketbase import auth
from pbfast.pocketbase.apis import backups as backups_api
from pbfast.pocketbase.apis import (batch, collections, collections_meta, crons, dashboard_pages, file, health, logs,
                                    realtime, record_auth, record_auth_email_change, record_auth_impersonate,
                                    record_auth_methods, record_auth_otp, record_auth_password_reset,
                                    record_auth_verification, record_auth_with_oauth2,
                                    record_auth_with_oauth2_redirect, records, settings, settings_apple,
                                    settings_test_email, settings_test_s3, sql_console)
from pbfast.pocketbase.apis.early_uploads import EarlyUploads, plan_early, write_early
from pbfast.pocketbase.apis.rate_limits import CollectionTags, RateLimits
from pbfast.pocketbase.apis.request import (BAD_REQUEST, NO_AUTH, NOT_FOUND, OffTurnFirst, TenantRequest, body_limit,
                                            send_error)
from pbfast.pocketbase.password_checks import PasswordChecks
from pbfast.pocketbase.realtime import RealtimeHub, RealtimeLimits
from pbfast.pocketbase.realtime.hub import DEFAULT_LIMITS as DEFAULT_REALTIME_LIMITS
from pbfast.pocketbase.request_logs import LogEntry, RequestLogs, settings_at_hand
from pbfast.pocketbase.sqlite_guard import TimeLimitExceeded
from pbfast.pocketbase.tenant import Tenant
from pbfast.thread_priority import normal_priority

__all__ = ["TenantApi"]

log = component_logger("TenantNode")

FILE_NOT_FOUND: Final = "File not found."
STORAGE_QUOTA_MESSAGE: Final = "The tenant's storage quota is used up."
TIME_LIMIT_MESSAGE: Final = ("The request was stopped: its database work took longer than the tenant's time limit "
                             "of {seconds:g} s.")
# SQLite errors that the tenant's own SQL or data can cause: a 400 for the request, never a 5xx.
MAX_RUNS_AGAIN: Final = 8  # a handler's turn run again after work off the turn (a bcrypt job each)
_TENANT_SQL_ERRORS: Final = (apsw.AuthError, apsw.SQLError, apsw.TooBigError, apsw.ConstraintError,
                             apsw.MismatchError, apsw.RangeError, apsw.InterruptError)

Handler = Callable[[TenantRequest], None]
# Runs a piece of the tenant's database work where the node wants it (its scheduler's worker threads).
Runner = Callable[[Callable[[], None]], Awaitable[None]]


class TenantApi:
    """Routes of a tenant's PocketBase API, and the answer to each request."""

    def __init__(self, realtime_limits: RealtimeLimits = DEFAULT_REALTIME_LIMITS) -> None:
        self.on_time_limit: Callable[[str], None] | None = None  # called with the tenant id (any thread)
        self.realtime = RealtimeHub(realtime_limits)  # GET /api/realtime is served by the node from it
        self.router: Router[Handler] = Router(escaped=True)  # on routing paths: see Serving.serve_tenant
        add = self.router.add
        add("GET", "/api/health",
            lambda request: health.health(request, backup_running=self.backups.running(request.tenant)))
        add("GET", "/api/collections", collections.list_collections)
        add("POST", "/api/collections", collections.create_collection)
        add("GET", "/api/collections/meta/scaffolds", collections.scaffolds)
        add("PUT", "/api/collections/import", collections.import_collections)
        add("POST", "/api/collections/meta/dry-run-view", collections_meta.dry_run_view)
        add("GET", "/api/collections/meta/oauth2-providers", collections_meta.oauth2_providers)
        add("GET", "/api/collections/{collection}", collections.view_collection)
        add("PATCH", "/api/collections/{collection}", collections.update_collection)
        add("DELETE", "/api/collections/{collection}", collections.delete_collection)
        add("DELETE", "/api/collections/{collection}/truncate", collections.truncate_collection)
        add("GET", "/api/collections/{collection}/records", records.list_records)
        add("POST", "/api/collections/{collection}/records", records.create_record)
        add("GET", "/api/collections/{collection}/records/{id}", records.view_record)
        add("PATCH", "/api/collections/{collection}/records/{id}", records.update_record)
        add("DELETE", "/api/collections/{collection}/records/{id}", records.delete_record)
        add("POST", "/api/collections/{collection}/auth-with-password", record_auth.auth_with_password)
        add("POST", "/api/collections/{collection}/auth-refresh", record_auth.auth_refresh)
        add("POST", "/api/batch", batch.batch_transaction)
        add("POST", "/api/files/token", file.file_token)
        add("GET", "/api/files/{collection}/{id}/{filename}", file.download)
        add("HEAD", "/api/files/{collection}/{id}/{filename}", file.download)
        add("GET", "/api/collections/{collection}/auth-methods", record_auth_methods.auth_methods)
        add("POST", "/api/collections/{collection}/request-otp", record_auth_otp.request_otp)
        add("POST", "/api/collections/{collection}/auth-with-otp", record_auth_otp.auth_with_otp)
        add("POST", "/api/collections/{collection}/impersonate/{id}", record_auth_impersonate.impersonate)
        for name, handler in (("request-verification", record_auth_verification.request_verification),
                              ("confirm-verification", record_auth_verification.confirm_verification),
                              ("request-password-reset", record_auth_password_reset.request_password_reset),
                              ("confirm-password-reset", record_auth_password_reset.confirm_password_reset),
                              ("request-email-change", record_auth_email_change.request_email_change),
                              ("confirm-email-change", record_auth_email_change.confirm_email_change)):
            add("POST", "/api/collections/{collection}/" + name, handler)
        add("POST", "/api/collections/{collection}/auth-with-oauth2", record_auth_with_oauth2.auth_with_oauth2)
        # Network work a handler needs before its database work, done on a thread of its own (holding neither
        # the event loop nor the tenant's database turn).
        self.network_steps: dict[Handler, Handler] = {
            record_auth_with_oauth2.auth_with_oauth2: record_auth_with_oauth2.exchange_code}
        # A login's bcrypt check, done off the tenant's turn (auth.PasswordCheck): the hash it needs, read in a turn.
        self.password_lookups: dict[Handler, Callable[[TenantRequest], auth.PasswordCheck | None]] = {
            record_auth.auth_with_password: record_auth.password_to_check}
        self.password_checks = PasswordChecks()

        def oauth2_redirect(request: TenantRequest) -> None:
            record_auth_with_oauth2_redirect.oauth2_redirect(self.realtime, request)

        add("GET", "/api/oauth2-redirect", oauth2_redirect)
        add("POST", "/api/oauth2-redirect", oauth2_redirect)
        # Handlers without database work (the realtime clients, a static page): answered on the event loop.
        self.loop_handlers: set[Handler] = {oauth2_redirect, dashboard_pages.dashboard_page}
        add("GET", "/api/settings", settings.settings_list)
        add("PATCH", "/api/settings", settings.settings_update)
        add("POST", "/api/settings/test/s3", settings_test_s3.settings_test_s3)
        add("POST", "/api/settings/test/email", settings_test_email.settings_test_email)
        add("POST", "/api/settings/apple/generate-client-secret", settings_apple.generate_apple_client_secret)
        add("POST", "/api/realtime", lambda request: realtime.set_subscriptions(self.realtime, request))
        # Rate limits (the tenant's rateLimits settings); collection routes also count under their tags.
        self.rate_limits = RateLimits()
        self._collection_tags: dict[Handler, CollectionTags] = {}
        for handler, method, path, tags in (
                (records.list_records, "GET", "/api/collections/{collection}/records", ("list",)),
                (records.view_record, "GET", "/api/collections/{collection}/records/{id}", ("view",)),
                (records.create_record, "POST", "/api/collections/{collection}/records", ("create",)),
                (records.update_record, "PATCH", "/api/collections/{collection}/records/{id}", ("update",)),
                (records.delete_record, "DELETE", "/api/collections/{collection}/records/{id}", ("delete",)),
                (record_auth.auth_with_password, "POST", "/api/collections/{collection}/auth-with-password",
                 ("authWithPassword", "auth")),
                (record_auth.auth_refresh, "POST", "/api/collections/{collection}/auth-refresh", ("authRefresh",)),
                (record_auth_methods.auth_methods, "GET", "/api/collections/{collection}/auth-methods",
                 ("listAuthMethods",)),
                (record_auth_otp.request_otp, "POST", "/api/collections/{collection}/request-otp", ("requestOTP",)),
                (record_auth_otp.auth_with_otp, "POST", "/api/collections/{collection}/auth-with-otp",
                 ("authWithOTP", "auth")),
                (record_auth_with_oauth2.auth_with_oauth2, "POST", "/api/collections/{collection}/auth-with-oauth2",
                 ("authWithOAuth2", "auth")),
                *[(handler, "POST", f"/api/collections/{{collection}}/{name}", (tag,)) for handler, name, tag in (
                    (record_auth_verification.request_verification, "request-verification", "requestVerification"),
                    (record_auth_verification.confirm_verification, "confirm-verification", "confirmVerification"),
                    (record_auth_password_reset.request_password_reset, "request-password-reset",
                     "requestPasswordReset"),
                    (record_auth_password_reset.confirm_password_reset, "confirm-password-reset",
                     "confirmPasswordReset"),
                    (record_auth_email_change.request_email_change, "request-email-change", "requestEmailChange"),
                    (record_auth_email_change.confirm_email_change, "confirm-email-change", "confirmEmailChange"))],
                (file.download, "GET", "/api/files/{collection}/{recordId}/{filename}", ("file",))):
            self._collection_tags[handler] = CollectionTags(f"{method} {path}", tags)
        # Request logs (auxiliary.db), written off the request path; the logs API's successes are not logged.
        self.request_logs = RequestLogs()
        self._quiet_on_success: set[Handler] = set()
        for method, path, logs_handler in (("GET", "/api/logs", logs.list_logs),
                                           ("DELETE", "/api/logs", logs.delete_logs),
                                           ("GET", "/api/logs/stats", logs.logs_stats),
                                           ("GET", "/api/logs/{id}", logs.view_log)):
            bound = self._with_logs(logs_handler)
            self._quiet_on_success.add(bound)
            add(method, path, bound)
        # Backups: the node sets backups.location to its object store (without one, only a tenant's own S3).
        self.backups = backups_api.Backups()
        self._backup_upload = self.backups.upload  # compared with every request's handler: one bound method
        add("GET", "/api/backups", self.backups.list)
        add("POST", "/api/backups", self.backups.create)
        add("POST", "/api/backups/upload", self.backups.upload)
        add("GET", "/api/backups/{key}", self.backups.download)
        add("DELETE", "/api/backups/{key}", self.backups.delete)
        add("POST", "/api/backups/{key}/restore", self.backups.restore)
        # PocketBase's built-in cron jobs, listed and run on demand
        self.crons = crons.Crons(self.request_logs, self.backups)
        add("GET", "/api/crons", self.crons.list)
        add("POST", "/api/crons/{id}", self.crons.run)
        add("POST", "/api/sql", sql_console.run_sql)

    async def handle(self, tenant: Tenant, path: str, scope: Scope, proto: HTTPProtocol, *,
                     run: Runner | None = None, time_limit: float | None = None,
                     answer_from_job: Callable[[], bool] | None = None) -> None:
        """Answer one request. The body is read here, on the event loop; the handler, which does all the
        database work, then runs through ``run`` (inline when None) within ``time_limit`` seconds of SQLite
        work, writing its answer to a held response that is sent from here, or by the job itself when
        ``answer_from_job()`` says so on the job's thread (the caller's choice: a heavy tenant's answers sent from
        its lower-priority thread instead of the loop every tenant shares)."""
        handler, params, _ = self.router.find(scope.method, path)
        if handler is None and path == dashboard_pages.PATH and scope.method == "GET":
            handler = dashboard_pages.dashboard_page  # a trailing "/": no route template names it
        if handler is None:
            # PocketBase falls through to its static file handler for GET, else to the router's 404; its
            # middlewares (body limit, rate limits, the request log) run for those requests too.
            static = scope.method in ("GET", "HEAD") and not _file_route_with_encoded_slash(path)
            handler = _NO_STATIC_FILE if static else _NO_ROUTE
        if tenant.realtime is None:
            tenant.realtime = self.realtime  # its record writes publish their events there
        held = HeldResponse()
        request = TenantRequest(scope, held, path, params, tenant)
        if handler == self._backup_upload and not backups_api.may_authenticate(tenant, scope.headers.get("authorization")):
            send_error(proto, 401, NO_AUTH)  # what the handler answers: not worth reading a large body first
            return
        if scope.method not in ("GET", "HEAD"):
            limit = self._body_read_limit(handler, tenant, params)
            if tenant.shared_schema and run is not None and _may_exceed(scope, limit):
                # Another process (a worker of the node) may have raised the limit since this one last read
                # the tenant's settings or collections: read them again before cutting the body short.
                await run(lambda: _refresh_body_limits(tenant))
                limit = self._body_read_limit(handler, tenant, params)
            try:
                request.raw_body = await Request(scope, proto, path, params).body(limit)
            except ApiError as err:
                if err.status != 413:  # a malformed or cut-short body
                    send_error(proto, err.status, err.message, err.data, err.headers)
                    return
                request.raw_body = None
            if _declares_more_than(scope, limit) and self._limit_before_handler(handler):
                handler = _TOO_LARGE
        elif _declares_more_than(scope, 0) and self._limit_before_handler(handler) \
                and _declares_more_than(scope, self._body_read_limit(handler, tenant, params)):
            handler = _TOO_LARGE
        network_step = self.network_steps.get(handler)
        admitted = False
        password_lookup = self.password_lookups.get(handler) if run is not None else None
        if password_lookup is not None:
            def lookup(request: TenantRequest) -> auth.PasswordCheck | None:
                with request.tenant.time_limit.running(time_limit):
                    return password_lookup(request)

            refusal, admitted = await self._admission(handler, request, run, then=lookup)
            if refusal is not None:
                handler = _refused(refusal)
            elif isinstance(request.prepared, auth.PasswordCheck):
                try:
                    checked = await self.password_checks.check(tenant.id, request.prepared,
                                                               getattr(proto, "client_disconnect", None))
                except ApiError as err:  # too many of the tenant's checks waiting
                    handler, checked = _refused(err), True  # answered and logged in a turn, as other refusals
                if not checked:  # the client went away: nobody reads this
                    send_error(proto, 400, BAD_REQUEST)
                    return
        if network_step is not None:
            # PocketBase's middlewares (superuser IPs, rate limits) refuse a request before its handler's network
            # work starts; a refused one is answered and logged as any other.
            refusal, admitted = await self._admission(handler, request, run)
            if refusal is not None:
                handler, network_step = _refused(refusal), None
        if network_step is not None:
            refusal = await self._first(request, OffTurnFirst(network_step), proto)
            if refusal is not None:
                handler = _refused(refusal)  # answered and logged in a turn, as PocketBase logs it

        if handler in self.loop_handlers:
            try:
                handler(request)
            except ApiError as err:
                send_error(proto, err.status, err.message, err.data, err.headers)
                return
            held.replay(proto)
            return

        early = None
        if (handler is records.create_record or handler is records.update_record) and run is not None \
                and request.raw_body and request.prepared is None:
            if not admitted and _admission_may_refuse(tenant.id):
                # PocketBase's middlewares (rate limits, superuser IPs) refuse before the handler writes a file:
                # a refused client costs no early write (and its fsyncs, and its delete).
                refusal, admitted = await self._admission(handler, request, run)
                if refusal is not None:
                    handler = _refused(refusal)
        if (handler is records.create_record or handler is records.update_record) and run is not None \
                and request.raw_body and request.prepared is None:
            early = plan_early(request, update=handler is records.update_record)
            if early is not None:
                request.prepared = early
        try:
            if early is not None:
                await write_early(early)  # the upload's fsyncs, off the tenant's turn: its other requests go on
            await self._answer(handler, request, held, proto, run, time_limit, admitted, answer_from_job, early)
        finally:
            if early is not None:
                early.release_unless_started()  # never run (refused, gone): its files go; a turn releases its own

    async def _answer(self, handler: Handler, request: TenantRequest, held: HeldResponse, proto: HTTPProtocol,
                      run: Runner | None, time_limit: float | None, admitted: bool,
                      answer_from_job: Callable[[], bool] | None, early: EarlyUploads | None) -> None:
        """Run the handler's turn and send its answer (see :meth:`handle`); ``early``: the create's uploads
        written before the turn, released at the turn's end (multipart creates and updates are never tried inline, so
        the turn runs once)."""
        entry: LogEntry | None = None
        answered = False
        running: Handler = handler

        def work() -> None:
            nonlocal entry, answered  # the log of the attempt that counted (an inline attempt may be done again)
            if early is not None and not early.begin_turn():
                return  # the request went away before its turn: its files are gone already
            try:
                entry = self._run(running, request, time_limit, admitted=admitted)
            finally:
                if early is not None and request.first is None:  # a turn to run again still needs its files
                    early.release()
            if request.first is None and answer_from_job is not None and request.after_turn is None \
                    and answer_from_job():
                with normal_priority():  # granian's thread, woken here, must not preempt a GIL holder at nice +10
                    held.replay(proto)
                answered = True

        if run is not None and handler is not batch.batch_transaction and request.method not in ("GET", "HEAD"):
            # bcrypt off the turn (a batch's items: in it, not to run the batch again). Reads hash no password: were
            # one to, its bcrypt would run in its turn (request.bcrypt None), which is slower but as correct.
            request.bcrypt = auth.BcryptRuns()
        runs_again = 0
        while True:
            if run is None:
                work()
            else:
                await run(work)
            first, request.first = request.first, None
            if first is None:
                break
            admitted = True  # the first run made the admission checks (and counted the rate limits)
            runs_again += 1
            refusal = await self._first(request, first, proto) if runs_again <= MAX_RUNS_AGAIN else ApiError(
                500, BAD_REQUEST)  # a handler that asks again and again for its network work
            if refusal is not None:
                running = _refused(refusal)  # answered and logged in a turn
            elif runs_again == MAX_RUNS_AGAIN and request.bcrypt is not None:
                request.bcrypt.defer = False  # the last run makes any more bcrypt work in its turn
        if not answered:
            if request.after_turn is not None and held.status is None:
                await request.after_turn.send(held)  # e.g. a file read from the store: not in the tenant's turn
                if entry is not None and held.status is not None and held.status != entry[5]:
                    entry = logs.with_final_status(entry, held.status, held.error_message())
            held.replay(proto)
        if entry is not None:
            self.request_logs.add(entry)

    async def _first(self, request: TenantRequest, first: OffTurnFirst | auth.BcryptFirst,
                     proto: HTTPProtocol) -> ApiError | None:
        """Do the work a handler's turn asked for before it runs again (:class:`OffTurnFirst`): a bcrypt job on
        the checks' threads (in the tenant's share of them), network work on the provider threads. Returns what
        to answer instead of running it again, None to run it."""
        if isinstance(first, auth.BcryptFirst):
            try:
                made = await self.password_checks.check(request.tenant.id, first.job,
                                                        getattr(proto, "client_disconnect", None))
            except ApiError as err:  # too many of the tenant's checks waiting
                return err
            except Exception as err:  # noqa: BLE001 - answer, log, stay up
                log.error("tenant %s: %s %s: bcrypt failed: %r", request.tenant.id, request.method, request.path, err,
                          exc_info=err)
                return ApiError(500, BAD_REQUEST)
            if not made:  # the client went away: the answer is for nobody, its bcrypt work not worth making
                return ApiError(400, BAD_REQUEST)
            assert request.bcrypt is not None  # BcryptFirst is raised only with a place for its job
            request.bcrypt.jobs.append(first.job)
            return None
        try:
            await asyncio.get_running_loop().run_in_executor(record_auth_with_oauth2.PROVIDER_THREADS, first.step, request)
        except ApiError as err:
            return err
        except Exception as err:  # noqa: BLE001 - answer, log, stay up
            log.error("tenant %s: %s %s failed: %r", request.tenant.id, request.method, request.path, err, exc_info=err)
            return ApiError(500, BAD_REQUEST)
        return None

    def _limit_before_handler(self, handler: Handler) -> bool:
        """Whether PocketBase's body limit middleware guards the route: not a batch (its handler checks its own
        limit after whether batches are on) nor a backup upload (no limit in PocketBase)."""
        return handler is not batch.batch_transaction and handler != self._backup_upload

    def _body_read_limit(self, handler: Handler, tenant: Tenant, params: dict[str, str]) -> int:
        return (batch.body_read_limit(tenant) if handler is batch.batch_transaction
                else backups_api.UPLOAD_LIMIT if handler == self._backup_upload else body_limit(tenant, params))

    def _with_logs(self, handler: Callable[[RequestLogs, TenantRequest], None]) -> Handler:
        return lambda request: handler(self.request_logs, request)

    async def _admission(self, handler: Handler, request: TenantRequest, run: Runner | None,
                         then: Callable[[TenantRequest], object | None] | None = None) -> tuple[ApiError | None, bool]:
        """The superuser IP and rate limit checks of :meth:`_run`, done first (on the tenant's database turn):
        the refusal or None, and whether the checks ran (when they could not, e.g. the tenant closed meanwhile,
        the handler's own turn runs them and answers). ``then``: what to read for the request once admitted, in
        the same turn, left in ``request.prepared``."""
        refusal: ApiError | None = None
        checked = False

        def admit() -> None:
            nonlocal refusal, checked
            try:
                if request.tenant.shared_schema:  # the network step reads the collections before the handler's turn
                    request.tenant.refresh_collections()
                settings.check_superuser_ip(request)
                self.rate_limits.check(request, self._collection_tags.get(handler))
            except ApiError as err:
                refusal = err
            except Exception as err:  # noqa: BLE001 - the handler's turn answers for the tenant
                log.warning("tenant %s: admission checks failed: %r", request.tenant.id, err)
                return
            checked = True
            if then is not None and refusal is None:
                try:
                    request.prepared = then(request)
                except Exception as err:  # noqa: BLE001 - the handler's turn does it again and answers
                    log.warning("tenant %s: %s %s: not prepared: %r", request.tenant.id, request.method,
                                request.path, err)

        if run is None:
            admit()
        else:
            await run(admit)
        return refusal, checked

    def _run(self, handler: Handler, request: TenantRequest, time_limit: float | None, *,
             admitted: bool = False) -> LogEntry | None:
        """Run ``handler`` on the thread that holds the tenant's connection; every failure becomes an answer.
        ``admitted``: :meth:`_admission` passed already. Returns the request's log (None when the tenant's
        settings log nothing)."""
        tenant, proto = request.tenant, request.proto
        started = time.perf_counter()
        error: ApiError | None = None
        try:
            if tenant.closed:  # closed (moved, evicted) while the request waited for its turn
                raise ApiError(503, "The tenant was closed on this node; retry.", headers=[("retry-after", "1")])
            if tenant.shared_schema:  # another process (a worker of the node) may have changed the collections
                tenant.refresh_collections()
            with tenant.time_limit.running(time_limit):
                if not admitted:
                    settings.check_superuser_ip(request)
                    self.rate_limits.check(request, self._collection_tags.get(handler))
                try:
                    with auth.bcrypt_off_turn(request.bcrypt):
                        handler(request)
                except BaseException:
                    request.file_changes.rolled_back()  # its transaction did not commit: its uploads go
                    raise
                request.file_changes.committed()
        except (OffTurnFirst, auth.BcryptFirst) as first:
            request.first = first  # no answer yet: done once the work is done off the turn (TenantApi.handle)
            return None
        except ApiError as err:
            error = err
            send_error(proto, err.status, err.message, err.data, err.headers)
        except TimeLimitExceeded as err:
            self._time_limited(request, err.seconds)
        except apsw.BusyError as err:
            log.warning("tenant %s busy: %s", tenant.id, err)
            send_error(proto, 503, "The database is busy; retry.", headers=[("retry-after", "1")])
        except apsw.FullError:
            send_error(proto, 403, STORAGE_QUOTA_MESSAGE)
        except apsw.NoMemError:
            log.warning("tenant %s: SQLite is at the node's memory limit", tenant.id)
            send_error(proto, 503, "The node is short of memory for this request; retry.", headers=[("retry-after", "2")])
        except _TENANT_SQL_ERRORS as err:
            if tenant.time_limit.expired:  # stopped mid-way, e.g. while a savepoint was rolled back
                self._time_limited(request, time_limit or 0.0)
                return None
            # The tenant's own SQL (a view, an index, an imported trigger) failed or was refused by the guards.
            log.warning("tenant %s: %s %s: %s", tenant.id, request.method, request.path, err)
            send_error(proto, 400, BAD_REQUEST)
        except Exception as err:  # noqa: BLE001 - answer, log, stay up
            log.error("tenant %s: %s %s failed: %r", tenant.id, request.method, request.path, err, exc_info=err)
            send_error(proto, 500, BAD_REQUEST)
        return self._log_entry(handler, request, started, error)

    def _log_entry(self, handler: Handler, request: TenantRequest, started: float,
                   error: ApiError | None) -> LogEntry | None:
        status = getattr(request.proto, "status", None) or 200
        if request.tenant.closed:
            return None
        try:
            return logs.request_entry(request, started, status, error, handler in self._quiet_on_success)
        except (apsw.Error, ValueError, TypeError) as err:  # a log is never worth failing a request for
            log.warning("tenant %s: request not logged: %s", request.tenant.id, err)
            return None

    def _time_limited(self, request: TenantRequest, seconds: float) -> None:
        log.warning("tenant %s: %s %s stopped by its time limit (%g s)", request.tenant.id, request.method,
                    request.path, seconds)
        if self.on_time_limit is not None:
            self.on_time_limit(request.tenant.id)
        send_error(request.proto, 400, TIME_LIMIT_MESSAGE.format(seconds=seconds))


def _admission_may_refuse(tenant_id: str) -> bool:
    """Whether the tenant's settings as last seen (or never seen) have rate limits or superuser IPs: the checks
    of :meth:`TenantApi._admission` may refuse a request (without them it is not worth a turn of its own)."""
    known = settings_at_hand(tenant_id)
    return known is None or bool(known.rate_limits.enabled and known.rate_limits.rules) or bool(known.superuser_ips)


def _refused(refusal: ApiError) -> Handler:
    """A handler that answers ``refusal``."""
    def refuse(request: TenantRequest) -> None:
        raise refusal
    return refuse


def _no_static_file(request: TenantRequest) -> None:
    raise ApiError(404, FILE_NOT_FOUND)  # a new error each time: a raised one keeps its traceback


def _no_route(request: TenantRequest) -> None:
    raise ApiError(404, NOT_FOUND)


def _too_large(request: TenantRequest) -> None:
    raise ApiError(413, "Request entity too large.")


def _declares_more_than(scope: Scope, limit: int) -> bool:
    """Whether the request's Content-Length is over ``limit``: PocketBase's body limit middleware refuses it
    (after the rate limits, before any handler, whether or not the handler reads its body, on every route)."""
    declared = scope.headers.get("content-length")
    return declared is not None and declared.isdigit() and int(declared) > limit


_NO_STATIC_FILE: Final[Handler] = _no_static_file
_NO_ROUTE: Final[Handler] = _no_route
_TOO_LARGE: Final[Handler] = _too_large


def _may_exceed(scope: Scope, limit: int) -> bool:
    """Whether the body may be over ``limit``: its declared length is, or it declares none (chunked)."""
    declared = scope.headers.get("content-length")
    return declared is None or not declared.isdigit() or int(declared) > limit


def _refresh_body_limits(tenant: Tenant) -> None:
    """Re-read what sizes a body read (the collections, the batch settings), in the tenant's turn; a failure
    leaves them as they were (the handler's turn answers for the tenant)."""
    try:
        tenant.refresh_collections()
        batch.remember_settings(tenant)
    except Exception as err:  # noqa: BLE001 - the request goes on with the limits this process knew
        log.warning("tenant %s: could not re-read its body limits: %r", tenant.id, err)


def _file_route_with_encoded_slash(path: str) -> bool:
    """A file path PocketBase's file route matches but pbfast's does not: more segments than the route's five,
    none empty, as an encoded ``/`` in a name gives (the path arrives decoded); PocketBase then finds no such
    file. Fewer segments, or an empty one, fall through to the static handler there too."""
    segments = path.split("/")[1:]
    return path.startswith("/api/files/") and len(segments) > 5 and "" not in segments
