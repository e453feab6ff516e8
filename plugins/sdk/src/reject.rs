//! A record the plugin refuses: it goes to the dead-letter topic with this reason.

use std::fmt;

/// Refuses the record. Return it from the transform (`Err(Reject::new("why"))`, or `?` on a JSON error);
/// outputs already emitted for the record are discarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    reason: String,
}

impl Reject {
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Reject {}

impl From<serde_json::Error> for Reject {
    fn from(e: serde_json::Error) -> Self {
        Self::new(format!("invalid JSON: {e}"))
    }
}

impl From<&str> for Reject {
    fn from(reason: &str) -> Self {
        Self::new(reason)
    }
}

impl From<String> for Reject {
    fn from(reason: String) -> Self {
        Self::new(reason)
    }
}
