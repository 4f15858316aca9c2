"""PocketBase's own API scenarios that need no set-up, one step each, as its Go tests send them (method, URL,
raw body and headers verbatim, the fixture records' tokens as ``fixture_data`` names them), from the files
``scenarios_go_crud.py`` does not take verbatim (``apis/record_auth_*_test.go``, ``settings_test.go``,
``logs_test.go``, ``backup_test.go``, ``cron_test.go``): only the requests no other scenario module sends (same method, URL, JSON
body and identity). The hand ports (``scenarios_auth_api.py``, ``scenarios_admin_api.py``,
``scenarios_remaining_ports.py``, ``scenarios_patched_ports.py``) send the others, and the cases with a set-up,
under names of their own. (``record_auth_methods_test.go``'s "all auth methods allowed" is
``test_differential_auth.py``'s "all methods", less the OAuth2 links' fresh state and PKCE pair.)

Each Go scenario starts from a fresh fixture; here they run first on the servers of
``test_differential_go_ports.py``'s main pair (they leave nothing behind the hand ports would read: every
request fails or only logs in), the backups they make after the hand ports' backup scenario
(``GO_VERBATIM_BACKUP_PORTS``). The mail-sending ones compare the failure answers: those servers have no mailer
(``test_email_flows.py`` follows mailed tokens)."""

from __future__ import annotations

from differential import Step
from fixture_data import SUPERUSER1, USER1

G = None  # a guest step (the Go scenarios' own headers authenticate)

GO_VERBATIM_PORTS: dict[str, list[Step]] = {
    'apis/logs_test.go': [
        Step('unauthorized', 'GET', '/api/logs', auth=G),
        Step('authorized as regular user', 'GET', '/api/logs', auth=G, headers=USER1),
    ],
    # the job "test" the Go set-up registers (a tenant cannot) is never reached: guests and users are refused first
    'apis/cron_test.go': [
        Step('unauthorized', 'POST', '/api/crons/test', auth=G),
        Step('authorized as regular user', 'POST', '/api/crons/test', auth=G, headers=USER1),
    ],
    'apis/record_auth_impersonate_test.go': [
        Step('unauthorized', 'POST', '/api/collections/users/impersonate/4q1xlclmfloku33', auth=G),
        Step('authorized as superuser', 'POST', '/api/collections/users/impersonate/4q1xlclmfloku33', auth=G, headers=SUPERUSER1),
    ],
    'apis/record_auth_with_password_test.go': [
        Step('already authenticated record', 'POST', '/api/collections/clients/auth-with-password', raw=b'{\n\t\t\t\t"identity":"test@example.com",\n\t\t\t\t"password":"1234567890"\n\t\t\t}', auth=G, headers=USER1),
    ],
    'apis/record_auth_password_reset_confirm_test.go': [
        Step('non auth collection', 'POST', '/api/collections/demo1/confirm-password-reset?expand=rel,missing', raw=b'{\n\t\t\t\t"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InBhc3N3b3JkUmVzZXQiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8iLCJlbWFpbCI6InRlc3RAZXhhbXBsZS5jb20ifQ.xR-xq1oHDy0D8Q4NDOAEyYKGHWd_swzoiSoL8FLFBHY",\n\t\t\t\t"password":"1234567!",\n\t\t\t\t"passwordConfirm":"1234567!"\n\t\t\t}', auth=G),
        Step('different auth collection', 'POST', '/api/collections/clients/confirm-password-reset?expand=rel,missing', raw=b'{\n\t\t\t\t"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImV4cCI6MjUyNDYwNDQ2MSwidHlwZSI6InBhc3N3b3JkUmVzZXQiLCJjb2xsZWN0aW9uSWQiOiJfcGJfdXNlcnNfYXV0aF8iLCJlbWFpbCI6InRlc3RAZXhhbXBsZS5jb20ifQ.xR-xq1oHDy0D8Q4NDOAEyYKGHWd_swzoiSoL8FLFBHY",\n\t\t\t\t"password":"1234567!",\n\t\t\t\t"passwordConfirm":"1234567!"\n\t\t\t}', auth=G),
    ],
    'apis/record_auth_email_change_request_test.go': [
        Step('record authentication but from different auth collection', 'POST', '/api/collections/clients/request-email-change', raw=b'{"newEmail":"change@example.com"}', auth=G, headers=USER1),
        Step('invalid data', 'POST', '/api/collections/users/request-email-change', raw=b'{"newEmail', auth=G, headers=USER1),
        Step('empty data', 'POST', '/api/collections/users/request-email-change', raw=b'{}', auth=G, headers=USER1),
        Step('valid data (existing email)', 'POST', '/api/collections/users/request-email-change', raw=b'{"newEmail":"test2@example.com"}', auth=G, headers=USER1),
        Step('valid data (new email)', 'POST', '/api/collections/users/request-email-change', raw=b'{"newEmail":"change@example.com"}', auth=G, headers=USER1),
    ],
    'apis/record_auth_email_change_confirm_test.go': [
        Step('valid token and incorrect password', 'POST', '/api/collections/users/confirm-email-change', raw=b'{\n\t\t\t\t"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIsInR5cGUiOiJlbWFpbENoYW5nZSIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSIsIm5ld0VtYWlsIjoiY2hhbmdlQGV4YW1wbGUuY29tIiwiZXhwIjoyNTI0NjA0NDYxfQ.Y7mVlaEPhJiNPoIvIqbIosZU4c4lEhwysOrRR8c95iU",\n\t\t\t\t"password":"1234567891"\n\t\t\t}', auth=G),
        Step('valid token in different auth collection', 'POST', '/api/collections/clients/confirm-email-change', raw=b'{\n\t\t\t\t"token":"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsImNvbGxlY3Rpb25JZCI6Il9wYl91c2Vyc19hdXRoXyIsInR5cGUiOiJlbWFpbENoYW5nZSIsImVtYWlsIjoidGVzdEBleGFtcGxlLmNvbSIsIm5ld0VtYWlsIjoiY2hhbmdlQGV4YW1wbGUuY29tIiwiZXhwIjoyNTI0NjA0NDYxfQ.Y7mVlaEPhJiNPoIvIqbIosZU4c4lEhwysOrRR8c95iU",\n\t\t\t\t"password":"1234567890"\n\t\t\t}', auth=G),
    ],
    'apis/settings_test.go': [
        Step('authorized as superuser (missing body + no s3)', 'POST', '/api/settings/test/s3', auth=G, headers=SUPERUSER1),
        Step('authorized as superuser (verifiation template)', 'POST', '/api/settings/test/email', raw=b'{\n\t\t\t\t"template": "verification",\n\t\t\t\t"email": "test@example.com"\n\t\t\t}', auth=G, headers=SUPERUSER1),
        Step('authorized as superuser (password reset template)', 'POST', '/api/settings/test/email', raw=b'{\n\t\t\t\t"template": "password-reset",\n\t\t\t\t"email": "test@example.com"\n\t\t\t}', auth=G, headers=SUPERUSER1),
        Step('authorized as superuser (email change)', 'POST', '/api/settings/test/email', raw=b'{\n\t\t\t\t"template": "email-change",\n\t\t\t\t"email": "test@example.com"\n\t\t\t}', auth=G, headers=SUPERUSER1),
        Step('authorized as superuser (otp)', 'POST', '/api/settings/test/email', raw=b'{\n\t\t\t\t"template": "otp",\n\t\t\t\t"email": "test@example.com"\n\t\t\t}', auth=G, headers=SUPERUSER1),
    ],
}
# After the hand ports' backup scenario (it starts from no backups). Not here: "autogenerated name" and "valid
# name", whose answer is a bare 204 (the hand ports' "create: valid name" makes one) and which cost a backup of the
# data dir each (seconds on a loaded machine).
GO_VERBATIM_BACKUP_PORTS: dict[str, list[Step]] = {
    'apis/backup_test.go': [
        Step('unauthorized', 'POST', '/api/backups', auth=G),
        Step('authorized as regular user', 'POST', '/api/backups', auth=G, headers=USER1),
        Step('authorized as superuser (missing file)', 'POST', '/api/backups/upload', auth=G, headers=SUPERUSER1),
    ],
}
