//! Validation of user-supplied fields. Every failure is an
//! [`ErrorCode::InvalidArgument`](crate::ErrorCode::InvalidArgument) naming the
//! field and the rule it broke.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::CaddyError;

/// Longest email address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part (before `@`) of an email address, in bytes.
pub const MAX_EMAIL_LOCAL_BYTES: usize = 64;
/// Longest display name of a user, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// Longest tenant name, in characters.
pub const MAX_TENANT_NAME_CHARS: usize = 128;
/// Longest team name, in characters.
pub const MAX_TEAM_NAME_CHARS: usize = 64;
/// Longest API key name, in characters.
pub const MAX_KEY_NAME_CHARS: usize = 64;
/// Longest plan name, in characters.
pub const MAX_PLAN_CHARS: usize = 32;
/// Longest free-text description (roles, keys), in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password, in bytes (bounds hashing work).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// A syntactically valid, lower-case-normalized email address
/// (`local@domain.tld`; reasonable, not RFC 5322-complete).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Trims surrounding whitespace, lower-cases and validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, CaddyError> {
        let email = raw.trim().to_ascii_lowercase();
        let bad = |why: &str| CaddyError::invalid(format!("email {:?} is not valid: {why}", raw.trim()));
        if email.is_empty() {
            return Err(CaddyError::invalid("email is required"));
        }
        if email.len() > MAX_EMAIL_BYTES {
            return Err(bad(&format!("longer than {MAX_EMAIL_BYTES} bytes")));
        }
        let (local, domain) = email.split_once('@').ok_or_else(|| bad("expected name@domain.tld"))?;
        if domain.contains('@') {
            return Err(bad("more than one '@'"));
        }
        if local.is_empty() || local.len() > MAX_EMAIL_LOCAL_BYTES {
            return Err(bad(&format!("the part before '@' must be 1 to {MAX_EMAIL_LOCAL_BYTES} bytes")));
        }
        let local_ok = local.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~.-".contains(&b));
        if !local_ok {
            return Err(bad("the part before '@' contains a character that is not allowed"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(bad("dots before '@' may not lead, trail or repeat"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2 {
            return Err(bad("the domain needs a dot, as in example.com"));
        }
        for label in &labels {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad("each domain label must be 1 to 63 letters, digits or inner '-'"));
            }
        }
        let tld = labels.last().copied().unwrap_or_default();
        if tld.len() < 2 || !tld.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(bad("the top-level domain must be at least two letters"));
        }
        Ok(Email(email))
    }

    /// The normalized address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = CaddyError;
    fn try_from(s: String) -> Result<Self, CaddyError> {
        Email::parse(&s)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl FromStr for Email {
    type Err = CaddyError;
    fn from_str(s: &str) -> Result<Self, CaddyError> {
        Email::parse(s)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A required single-line text field: trimmed, 1..=`max_chars` characters, no
/// control characters. Returns the trimmed value.
pub fn bounded_text(field: &str, value: &str, max_chars: usize) -> Result<String, CaddyError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(CaddyError::invalid(format!("{field} is required and may not be blank")));
    }
    optional_text(field, value, max_chars)
}

/// Like [`bounded_text`] but an empty value is allowed (returned as `""`).
pub fn optional_text(field: &str, value: &str, max_chars: usize) -> Result<String, CaddyError> {
    let value = value.trim();
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(CaddyError::invalid(format!("{field} is {chars} characters long; the limit is {max_chars}")));
    }
    if value.chars().any(char::is_control) {
        return Err(CaddyError::invalid(format!("{field} may not contain control characters (such as newlines)")));
    }
    Ok(value.to_owned())
}

/// A user's display name ([`MAX_DISPLAY_NAME_CHARS`]).
pub fn display_name(value: &str) -> Result<String, CaddyError> {
    bounded_text("display name", value, MAX_DISPLAY_NAME_CHARS)
}

/// A tenant's human-readable name ([`MAX_TENANT_NAME_CHARS`]).
pub fn tenant_name(value: &str) -> Result<String, CaddyError> {
    bounded_text("tenant name", value, MAX_TENANT_NAME_CHARS)
}

/// A team's name ([`MAX_TEAM_NAME_CHARS`]).
pub fn team_name(value: &str) -> Result<String, CaddyError> {
    bounded_text("team name", value, MAX_TEAM_NAME_CHARS)
}

/// Checks a password's length before it is hashed (the server hashes it with
/// argon2id; the password itself never enters a command). Not trimmed.
pub fn password(value: &str) -> Result<(), CaddyError> {
    let chars = value.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(CaddyError::invalid(format!("password must be at least {MIN_PASSWORD_CHARS} characters")));
    }
    if value.len() > MAX_PASSWORD_BYTES {
        return Err(CaddyError::invalid(format!("password must be at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn valid_emails_are_normalized() {
        for (raw, norm) in [
            ("Ada@Example.COM", "ada@example.com"),
            ("  bob.smith+tag@mail.example.co.uk ", "bob.smith+tag@mail.example.co.uk"),
            ("x_y-z@a-b.io", "x_y-z@a-b.io"),
            ("o'neil@example.org", "o'neil@example.org"),
        ] {
            assert_eq!(Email::parse(raw).unwrap().as_str(), norm, "{raw:?}");
        }
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_total = format!("a@{}.com", "b.".repeat(130));
        let long_label = format!("a@{}.com", "b".repeat(64));
        for raw in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@@example.com",
            "a@b@example.com",
            "a@localhost",
            "a@example.c",
            "a@example.c0m",
            "a b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a..b@example.com",
            "a@-example.com",
            "a@example-.com",
            "a@example..com",
            "a@exa_mple.com",
            "a\n@example.com",
            "ä@example.com",
            &long_local,
            &long_total,
            &long_label,
        ] {
            let err = Email::parse(raw).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{raw:?}");
            assert!(err.message.contains("email"), "{raw:?}: {}", err.message);
        }
    }

    #[test]
    fn serde_refuses_invalid_emails() {
        let bytes = postcard::to_allocvec(&"not-an-email".to_string()).unwrap();
        assert!(postcard::from_bytes::<Email>(&bytes).is_err());
    }

    #[test]
    fn bounded_fields() {
        assert_eq!(display_name("  Ada Lovelace ").unwrap(), "Ada Lovelace");
        assert!(display_name("   ").is_err());
        assert!(display_name(&"é".repeat(MAX_DISPLAY_NAME_CHARS)).is_ok());
        let err = display_name(&"é".repeat(MAX_DISPLAY_NAME_CHARS + 1)).unwrap_err();
        assert!(err.message.contains("limit is 128"), "{}", err.message);
        assert!(team_name("a\tb").is_err());
        assert!(tenant_name("Acme Inc.").is_ok());
        assert_eq!(optional_text("description", "", MAX_DESCRIPTION_CHARS).unwrap(), "");
        assert!(password("short").is_err());
        assert!(password("long enough").is_ok());
        assert!(password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
