"""Auth tokens of PocketBase's API-test fixture records (as PocketBase's own API tests use them) and request
bodies its tests send."""

from __future__ import annotations


# Tokens of fixture records, as PocketBase's own API tests use them (they expire in 2050). ``users`` has MFA
# enabled and ``nologin`` has password auth disabled, so those records cannot log in through auth-with-password.
def _token_header(token: str) -> dict[str, str]:
    return {"Authorization": token}


SUPERUSER1 = _token_header(  # _superusers, test@example.com
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6InN5d2JoZWNuaDQ2cmhtMCIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoicGJjXzMxNDI2Mz"
    "U4MjMiLCJleHAiOjI1MjQ2MDQ0NjEsInJlZnJlc2hhYmxlIjp0cnVlfQ.UXgO3j-0BumcugrFjbd7j0M4MQvbrLggLlcu_YNGjoY")
USER1 = _token_header(  # users, test@example.com
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3VzZXJzX2F1"
    "dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.ZT3F0Z3iM-xbGgSG3LEKiEzHrPHr8t8IuHLZGGNuxLo")
USER1_STATIC = _token_header(  # users, test@example.com, not refreshable
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3VzZXJzX2F1"
    "dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6ZmFsc2V9.4IsO6YMsR19crhwl_YWzvRH8pfq2Ri4Gv2dzGyneLak")
USER2 = _token_header(  # users, test2@example.com
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6Im9hcDY0MGNvdDR5cnUycyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3VzZXJzX2F1"
    "dGhfIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.GfJo6EHIobgas_AXt-M-tj5IoQendPnrkMSe9ExuSEY")
CLIENT1 = _token_header(  # clients, test@example.com (verified)
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImdrMzkwcWVnczR5NDd3biIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoidjg1MXE0cjc5MHJo"
    "a25sIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.0ONnm_BsvPRZyDNT31GN1CKUB6uQRxvVvQ-Wc9AZfG0")
CLIENT2 = _token_header(  # clients, test2@example.com (unverified)
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6Im8xeTBkZDBzcGQ3ODZtZCIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoidjg1MXE0cjc5MHJo"
    "a25sIiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.Zi0yXE-CNmnbTdVaQEzYZVuECqRdn3LgEM6pmB3XWBE")
NOLOGIN1 = _token_header(  # nologin, test@example.com
    "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6ImRjNDlrNmpnZWpuNDBoMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoia3B2NzA5c2sybHFi"
    "cWs4IiwiZXhwIjoyNTI0NjA0NDYxLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.fdUPFLDx5b6RM_XFqnqsyiyNieyKA2HIIkRmUh9kIoY")
# users, test@example.com with exp in 2022 (signature irrelevant: an expired token is a guest).
EXPIRED = ("eyJhbGciOiJIUzI1NiJ9.eyJpZCI6IjRxMXhsY2xtZmxva3UzMyIsInR5cGUiOiJhdXRoIiwiY29sbGVjdGlvbklkIjoiX3BiX3V"
           "zZXJzX2F1dGhfIiwiZXhwIjoxNjQwOTk1MjAwLCJyZWZyZXNoYWJsZSI6dHJ1ZX0.ZT3F0Z3iM-xbGgSG3LEKiEzHrPHr8t8IuHLZGGNuxLo")

DEMO4_BODY = {
    "title": "test123", "rel_one_no_cascade": "mk5fmymtx4wsprk", "rel_one_no_cascade_required": "7nwo8tuiatetxdm",
    "rel_one_cascade": "mk5fmymtx4wsprk", "rel_many_no_cascade": "mk5fmymtx4wsprk",
    "rel_many_no_cascade_required": ["7nwo8tuiatetxdm", "lcl9d87w22ml6jy"], "rel_many_cascade": "lcl9d87w22ml6jy",
}
