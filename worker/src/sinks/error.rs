//! [`SinkError`]: every way a sink fails, typed, each naming the configuration key it is about, so that a
//! worker that cannot start says which option to fix (`sinks.influxdb.ca_file`) instead of the caller guessing,
//! and a failed request says whether retrying it may help.

use std::path::PathBuf;

use super::retry::{self, Verdict};

/// A sink could not be built from its configuration, or one request to a store failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `ca_file` cannot be used.
    #[error("{}: {problem}", .path.display())]
    Ca {
        key: &'static str,
        path: PathBuf,
        problem: CaProblem,
    },

    /// A store URL is not a URL.
    #[error("`{url}`: {message}")]
    Url {
        key: &'static str,
        url: String,
        message: String,
    },

    /// The HTTP client or transport could not be built.
    #[error("HTTP client: {message}")]
    Client { key: &'static str, message: String },

    /// A request got no answer: connection refused, TLS handshake, timeout, or its body could not be encoded.
    #[error("{endpoint}: {message}")]
    Transport {
        key: &'static str,
        endpoint: String,
        message: String,
    },

    /// The store answered the whole request with an error status; `message` is (the start of) its body.
    #[error("{endpoint} answered {status}: {message}")]
    Status {
        key: &'static str,
        endpoint: String,
        status: u16,
        message: String,
        /// The store's `Retry-After`, when it sent one: the retry waits at least this long.
        retry_after: Option<std::time::Duration>,
        /// Whether a 400 (or 413, 422) is about the items sent (a bad line, a bad document, a body too
        /// large), so splitting the batch isolates them; `false` when it is about the request itself (a
        /// missing or invalid parameter), which no split can fix: it is retried until an operator fixes it.
        about_items: bool,
    },

    /// The store answered with success, but the answer cannot be read.
    #[error("{endpoint}: unreadable answer: {message}")]
    Response {
        key: &'static str,
        endpoint: String,
        message: String,
    },
}

/// Why a `ca_file` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaProblem {
    #[error("cannot read it: {0}")]
    Unreadable(std::io::Error),
    #[error("not PEM certificates: {0}")]
    NotPem(String),
    #[error("no PEM certificate in it")]
    Empty,
}

impl SinkError {
    /// The configuration key the error is about: the option to fix, or the section of the store that failed.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Ca { key, .. }
            | Self::Url { key, .. }
            | Self::Client { key, .. }
            | Self::Transport { key, .. }
            | Self::Status { key, .. }
            | Self::Response { key, .. } => key,
        }
    }

    /// Whether the same request may succeed later: the [`retry`] policy's verdict is `Retry`.
    pub fn is_retriable(&self) -> bool {
        retry::request_verdict(self) == Verdict::Retry
    }
}

/// A `Retry-After` header: delay-seconds or an HTTP date (RFC 9110), as a delay from now.
pub(crate) fn retry_after(value: Option<&str>) -> Option<std::time::Duration> {
    let v = value?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The start of a store's answer, for a message: enough to say why, bounded (an HTML error page of a proxy).
pub(crate) fn excerpt(text: &str) -> String {
    const MAX_CHARS: usize = 1000;
    let text = text.trim();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

/// An error with its causes: an HTTP client's own message ("error sending request") hides the one that says
/// why (connection refused, certificate not trusted).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        use std::time::Duration;
        assert_eq!(retry_after(Some("120")), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(
            retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(Duration::ZERO),
            "past"
        );
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let d = retry_after(Some(&later)).unwrap();
        assert!(
            d > Duration::from_secs(50) && d <= Duration::from_secs(60),
            "{d:?}"
        );
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn errors_name_their_key_and_say_whether_to_retry() {
        let ca = SinkError::Ca {
            key: "sinks.influxdb.ca_file",
            path: "/etc/ca/not-a-cert.pem".into(),
            problem: CaProblem::Empty,
        };
        assert_eq!(ca.key(), "sinks.influxdb.ca_file");
        assert_eq!(ca.to_string(), "/etc/ca/not-a-cert.pem: no PEM certificate in it");
        assert!(!ca.is_retriable());
        let status = |status| SinkError::Status {
            key: "sinks.elasticsearch",
            endpoint: "_bulk".into(),
            status,
            message: "busy".into(),
            retry_after: None,
            about_items: true,
        };
        assert!(status(503).is_retriable());
        assert!(status(401).is_retriable());
        assert!(!status(400).is_retriable(), "split, not retried as is");
        assert!(!status(405).is_retriable());
        assert_eq!(status(503).to_string(), "_bulk answered 503: busy");
        let down = SinkError::Transport {
            key: "sinks.influxdb",
            endpoint: "http://influx:8086/write".into(),
            message: "connection refused".into(),
        };
        assert!(down.is_retriable());
    }

    #[test]
    fn answers_are_cut_to_an_excerpt() {
        assert_eq!(excerpt("  {\"error\":\"bad\"}\n"), "{\"error\":\"bad\"}");
        let long = "é".repeat(3000);
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 1003);
        assert!(e.ends_with("..."));
    }
}
