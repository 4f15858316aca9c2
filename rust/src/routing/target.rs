//! Request -> tenant resolution: the tenant a request names (by its host or its `/t/{id}` path prefix)
//! and the path to forward to the tenant's backend.

use std::borrow::Cow;

use super::tenant_id::{check_id, is_valid_tenant_id, InvalidId};

/// Normalise a base domain: trimmed, lower-cased, without leading dots.
pub fn normalize_base_domain(base_domain: &str) -> String {
    base_domain
        .trim()
        .to_lowercase()
        .trim_start_matches('.')
        .to_owned()
}

/// Where a resolved request goes on the tenant's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardPath<'a> {
    /// The request path, unchanged (tenant named by the Host header).
    Unchanged,
    /// A suffix of the request path (tenant named by `/t/{id}`); `"/"` when nothing followed the id.
    Slice(&'a str),
}

/// A request's tenant and forward path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub tenant: Cow<'a, str>,
    pub forward: ForwardPath<'a>,
}

/// Find the tenant a request names (see `RoutingTable.resolve` in the `.pyi`).
///
/// `base_domain` must already be normalised ([`normalize_base_domain`]).
pub fn parse_target<'a>(
    path: &'a str,
    host: Option<&'a str>,
    base_domain: &str,
) -> Result<Option<Target<'a>>, InvalidId> {
    if let Some(host) = host {
        if !host.is_empty() && !base_domain.is_empty() && !host.starts_with('[') {
            if let Some(tenant) = tenant_from_host(host, base_domain)? {
                return Ok(Some(Target {
                    tenant,
                    forward: ForwardPath::Unchanged,
                }));
            }
        }
    }
    let Some(rest) = path.strip_prefix("/t/") else {
        return Ok(None);
    };
    let (id, forward) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    check_id(id)?;
    Ok(Some(Target {
        tenant: Cow::Borrowed(id),
        forward: ForwardPath::Slice(forward),
    }))
}

fn tenant_from_host<'a>(host: &'a str, base: &str) -> Result<Option<Cow<'a, str>>, InvalidId> {
    let needs_lower = host.bytes().any(|c| c.is_ascii_uppercase() || c >= 0x80);
    let lower: Cow<'a, str> = if needs_lower {
        Cow::Owned(host.to_lowercase())
    } else {
        Cow::Borrowed(host)
    };
    let h: &str = &lower;
    let h = match h.find(':') {
        Some(i) => &h[..i],
        None => h,
    };
    if h.len() <= base.len() || !h.ends_with(base) || h.as_bytes()[h.len() - base.len() - 1] != b'.'
    {
        // Includes `h == base` (the gateway itself) and any foreign host: fall through to the path.
        return Ok(None);
    }
    let end = h.len() - base.len() - 1;
    let label = &h[..end];
    if label.contains('.') || !is_valid_tenant_id(label) {
        return Err(InvalidId(label.to_owned()));
    }
    Ok(Some(match lower {
        Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
        Cow::Owned(s) => Cow::Owned(s[..end].to_owned()),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t<'a>(tenant: &'a str, forward: ForwardPath<'a>) -> Option<Target<'a>> {
        Some(Target {
            tenant: Cow::Borrowed(tenant),
            forward,
        })
    }

    const BASE: &str = "pb.example.com";

    #[test]
    fn base_domain_normalised() {
        assert_eq!(normalize_base_domain(".PB.Example.com"), "pb.example.com");
        assert_eq!(normalize_base_domain(""), "");
    }

    #[test]
    fn resolve_path() {
        use ForwardPath::*;
        assert_eq!(
            parse_target("/t/acme/api/health", None, BASE),
            Ok(t("acme", Slice("/api/health")))
        );
        assert_eq!(
            parse_target("/t/acme", None, BASE),
            Ok(t("acme", Slice("/")))
        );
        assert_eq!(
            parse_target("/t/acme/", None, BASE),
            Ok(t("acme", Slice("/")))
        );
        assert_eq!(parse_target("/t/a//b", None, ""), Ok(t("a", Slice("//b"))));
        assert_eq!(parse_target("/api/health", None, BASE), Ok(None));
        assert_eq!(parse_target("/t", None, BASE), Ok(None));
        assert_eq!(parse_target("/tx/acme", None, BASE), Ok(None));
        assert_eq!(parse_target("", None, BASE), Ok(None));
        for bad in [
            "/t/",
            "/t//x",
            "/t/Acme/x",
            "/t/../x",
            "/t/a%2eb/x",
            "/t/-a",
        ] {
            assert!(parse_target(bad, None, BASE).is_err(), "{bad}");
        }
        assert_eq!(
            parse_target("/t/Acme/x", None, BASE),
            Err(InvalidId("Acme".into()))
        );
    }

    #[test]
    fn resolve_host() {
        use ForwardPath::*;
        assert_eq!(
            parse_target("/api/health", Some("Acme.PB.example.com:8080"), BASE),
            Ok(t("acme", Unchanged))
        );
        assert_eq!(
            parse_target("/x", Some("acme.pb.example.com"), BASE),
            Ok(t("acme", Unchanged))
        );
        // Host wins over the path.
        assert_eq!(
            parse_target("/t/other/x", Some("acme.pb.example.com"), BASE),
            Ok(t("acme", Unchanged))
        );
        assert_eq!(
            parse_target("/x", Some("a.b.pb.example.com"), BASE),
            Err(InvalidId("a.b".into()))
        );
        assert!(parse_target("/x", Some(".pb.example.com"), BASE).is_err());
        assert!(parse_target("/x", Some("a_b.pb.example.com"), BASE).is_err());
        // The gateway itself, foreign hosts, IPv6 literals and disabled host routing fall through.
        assert_eq!(
            parse_target("/t/acme/x", Some("PB.example.com:443"), BASE),
            Ok(t("acme", Slice("/x")))
        );
        assert_eq!(parse_target("/x", Some("pb.example.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("evil.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("xpb.example.com"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some("[::1]:8080"), BASE), Ok(None));
        assert_eq!(parse_target("/x", Some(""), BASE), Ok(None));
        assert_eq!(
            parse_target("/x", Some("acme.pb.example.com"), ""),
            Ok(None)
        );
        assert_eq!(
            parse_target("/t/acme", Some("[::1]"), BASE),
            Ok(t("acme", Slice("/")))
        );
    }
}
