//! Tenant ids: a tenant id is a DNS label, so it can name the tenant in a host (`{id}.{base_domain}`)
//! as well as in a path (`/t/{id}`).

use std::fmt;

/// True when `id` is a DNS label: 1-63 bytes of `[a-z0-9-]`, not starting or ending with `-`.
pub fn is_valid_tenant_id(id: &str) -> bool {
    let b = id.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// A tenant id that is not a DNS label (the offending id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidId(pub String);

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid tenant id '{}': must be a DNS label", self.0)
    }
}

impl std::error::Error for InvalidId {}

pub(super) fn check_id(id: &str) -> Result<(), InvalidId> {
    if is_valid_tenant_id(id) {
        Ok(())
    } else {
        Err(InvalidId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for ok in ["a", "0", "acme", "a-b", "a--b", "abc123", &"a".repeat(63)] {
            assert!(is_valid_tenant_id(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "-",
            "A",
            "Acme",
            "a_b",
            "a.b",
            "..",
            "a%2e",
            "é",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_valid_tenant_id(bad), "{bad}");
        }
    }
}
