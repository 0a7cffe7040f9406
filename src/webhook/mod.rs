//! Mailchimp's audience webhooks (issue 18, SPEC §15): the secret in the
//! receiver's path, the events' form bodies, and the HTTP handler that
//! takes them and tells the Controller.

mod event;
pub mod receiver;

use std::fmt;
use std::str::FromStr;

pub use event::{EventKind, UnsubscribeAction, WebhookError, WebhookEvent, MAX_BODY_BYTES};

/// The shortest `IMPORTER_WEBHOOK_SECRET` taken: 16 random characters of
/// 64 are 96 bits, beyond guessing at any rate a server answers.
pub const MIN_SECRET_CHARS: usize = 16;

/// `IMPORTER_WEBHOOK_SECRET`: the last segment of the receiver's path.
/// Mailchimp signs nothing, so knowing the URL is the authentication; the
/// secret is never logged, nor shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(String);

impl WebhookSecret {
    /// The secret itself, for the one place that needs it: the URL given
    /// to Mailchimp.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the secret, in a time that does not depend
    /// on where they differ (`subtle`): an early exit at the first wrong
    /// byte would let a sender find the secret a byte at a time by timing
    /// the 404s. Only the length can show, and it is no secret worth
    /// keeping: at least [`MIN_SECRET_CHARS`] random characters.
    pub fn matches(&self, candidate: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.0.as_bytes().ct_eq(candidate.as_bytes()))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl FromStr for WebhookSecret {
    type Err = String;
    /// At least [`MIN_SECRET_CHARS`] characters, each unreserved in a URL
    /// (`A-Z a-z 0-9 - . _ ~`), so that it stands in a path as it is. The
    /// errors never repeat the value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let secret = s.trim();
        if let Some(bad) = secret
            .chars()
            .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')))
        {
            return Err(format!(
                "character {} is not one of A-Z a-z 0-9 - . _ ~ (the secret stands in a URL as it is)",
                bad + 1
            ));
        }
        if secret.len() < MIN_SECRET_CHARS {
            return Err(format!(
                "it has {} characters, fewer than {MIN_SECRET_CHARS} (e.g. `openssl rand -hex 16`)",
                secret.len()
            ));
        }
        Ok(WebhookSecret(secret.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_long_url_safe_and_never_shown() {
        let secret: WebhookSecret = "0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
        assert!(secret.matches("0123456789abcdef"));
        for wrong in ["0123456789abcdeF", "0123456789abcde", "0123456789abcdef0", ""] {
            assert!(!secret.matches(wrong), "{wrong}");
        }
        assert_eq!(
            "0123456789abcde".parse::<WebhookSecret>().unwrap_err(),
            "it has 15 characters, fewer than 16 (e.g. `openssl rand -hex 16`)"
        );
        assert_eq!(
            "0123456789abcdef/x".parse::<WebhookSecret>().unwrap_err(),
            "character 17 is not one of A-Z a-z 0-9 - . _ ~ (the secret stands in a URL as it is)"
        );
        assert!("0123456789abcdé0123".parse::<WebhookSecret>().is_err());
        assert!("A-b.C_d~0123456789".parse::<WebhookSecret>().is_ok());
    }
}
