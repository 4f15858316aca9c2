"""``GET /_/``: the pages of PocketBase's dashboard that a tenant's own users land on, without the dashboard.

PocketBase's bundled dashboard (``/_/``) is also where its default mails and its OAuth2 redirect send an app's
users: ``/_/#/auth/confirm-verification/<token>``, ``.../confirm-password-reset/<token>``,
``.../confirm-email-change/<token>`` (the links of the verification, password reset and email change mails) and
``/_/#/auth/oauth2-redirect-success`` / ``-failure`` (where ``/api/oauth2-redirect`` sends the browser). A tenant
has no dashboard (it is managed through the API), so this one page serves those four: a small script reads the
fragment (the browser never sends it) and, for a mail's link, shows the form PocketBase shows (a new password
twice, or the current password) and posts it to the tenant's own API with the token, answering with the API's
message. Any other fragment says the tenant has no dashboard.

The collection a token belongs to is read from the token's payload (``collectionId``), as PocketBase's pages do;
the API checks the token itself. The page is static (the same bytes for every tenant), its API base is the
page's own address minus ``_/`` (``/t/<id>/`` through the gateway's path routing, ``/`` under a tenant's host),
and nothing of the fragment is written into the page as HTML (text only).
"""

from __future__ import annotations

from typing import Final

from pbfast.pocketbase.apis.request import TenantRequest

__all__ = ["PATH", "dashboard_page"]

PATH: Final = "/_/"

_PAGE: Final = b"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>Account</title>
<style>
body{font-family:system-ui,sans-serif;max-width:26rem;margin:4rem auto;padding:0 1rem;color:#1a1a1a}
h1{font-size:1.3rem}label{display:block;margin:.8rem 0 .3rem}input{width:100%;padding:.5rem;box-sizing:border-box}
button{margin-top:1rem;padding:.5rem 1.2rem}.error{color:#b00020}.hidden{display:none}
</style>
</head>
<body>
<h1 id="title">Account</h1>
<p id="message"></p>
<form id="form" class="hidden">
<div id="new-password" class="hidden">
<label for="password">New password</label><input id="password" type="password" autocomplete="new-password">
<label for="password-confirm">New password confirm</label>
<input id="password-confirm" type="password" autocomplete="new-password">
</div>
<div id="current-password" class="hidden">
<label for="current">Password</label><input id="current" type="password" autocomplete="current-password">
</div>
<button id="submit" type="submit">Confirm</button>
</form>
<script>
(function () {
  "use strict";
  var api = new URL("../api/collections/", location.href).href;
  var title = document.getElementById("title");
  var message = document.getElementById("message");
  var form = document.getElementById("form");
  function say(heading, text, failed) {
    title.textContent = heading;
    message.textContent = text;
    message.className = failed ? "error" : "";
  }
  function collectionOf(token) {
    try {
      var part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part + "===".slice((part.length + 3) % 4))).collectionId || "";
    } catch (e) {
      return "";
    }
  }
  function post(action, body, done) {
    var collection = collectionOf(body.token);
    if (!collection) {
      say("Invalid or expired link", "The link is not valid: ask for a new one.", true);
      return;
    }
    fetch(api + encodeURIComponent(collection) + "/" + action, {
      method: "POST",
      headers: {"content-type": "application/json"},
      body: JSON.stringify(body)
    }).then(function (answer) {
      if (answer.status === 204) {
        form.className = "hidden";
        say(done, "You can close this window and go back to the app.", false);
        return;
      }
      return answer.json().then(function (error) {
        var details = Object.keys(error.data || {}).map(function (field) {
          return field + ": " + error.data[field].message;
        });
        say(title.textContent, [error.message].concat(details).join(" "), true);
      });
    }).catch(function () {
      say(title.textContent, "The request failed: check your connection and try again.", true);
    });
  }
  var route = location.hash.replace(/^#\\/?/, "").split("/");
  var token = route[2] || "";
  if (route[0] !== "auth") {
    say("No dashboard", "This backend has no dashboard: it is managed through its API.", false);
  } else if (route[1] === "oauth2-redirect-success") {
    say("Signed in", "Auth completed. You can close this window and go back to the app.", false);
  } else if (route[1] === "oauth2-redirect-failure") {
    say("Sign-in failed",
        "Failed to authenticate. You can close this window and go back to the app to try again.", true);
  } else if (route[1] === "confirm-verification" && token) {
    say("Verifying your email", "Please wait...", false);
    post("confirm-verification", {token: token}, "Your email is verified");
  } else if (route[1] === "confirm-password-reset" && token) {
    say("Reset your password", "", false);
    document.getElementById("new-password").className = "";
    form.className = "";
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      post("confirm-password-reset", {token: token,
        password: document.getElementById("password").value,
        passwordConfirm: document.getElementById("password-confirm").value}, "Your password is changed");
    });
  } else if (route[1] === "confirm-email-change" && token) {
    say("Confirm your new email", "Enter your password to confirm the change.", false);
    document.getElementById("current-password").className = "";
    form.className = "";
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      post("confirm-email-change", {token: token, password: document.getElementById("current").value},
           "Your email is changed");
    });
  } else {
    say("No dashboard", "This backend has no dashboard: it is managed through its API.", false);
  }
})();
</script>
</body>
</html>
"""

_HEADERS: Final = [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-cache")]


def dashboard_page(request: TenantRequest) -> None:
    """Event loop only (no database work)."""
    request.proto.response_bytes(200, list(_HEADERS), _PAGE)
