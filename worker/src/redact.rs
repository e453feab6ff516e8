//! Secrets out of text a person reads: `config check`, logs and error messages. Credentials written into a
//! URL (`https://user:password@es:9200`) are as secret as a `password` option, and librdkafka takes keys,
//! passwords and OAuth settings as plain properties: this module says which ones those are and scrubs them.

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Replaces the password of every `scheme://user:password@` in `text` (URLs, or messages quoting them).
pub fn userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first `/`, `?`, `#` or whitespace; userinfo is what precedes its last `@`.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'' | '`' | ')' | ']') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let user_pass = &authority[..at];
                match user_pass.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(REDACTED);
                    }
                    None => out.push_str(user_pass),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// librdkafka properties whose values are secrets (its CONFIGURATION.md marks them sensitive), and names that
/// say so: any property naming a password, secret, token, passphrase, credential, private key or key store.
pub fn is_secret_kafka_property(name: &str) -> bool {
    const SENSITIVE: &[&str] = &[
        "sasl.password",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.extensions",
        "sasl.oauthbearer.assertion.private.key.passphrase",
        "sasl.oauthbearer.assertion.private.key.pem",
        "ssl.key.password",
        "ssl.key.pem",
        "ssl_key",
        "ssl.keystore.password",
        "ssl.engine.callback_data",
    ];
    const WORDS: &[&str] = &[
        "password",
        "secret",
        "token",
        "passphrase",
        "credential",
        "private",
        "jaas",
    ];
    let n = name.to_ascii_lowercase();
    SENSITIVE.contains(&n.as_str()) || WORDS.iter().any(|w| n.contains(w)) || n.ends_with(".key")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_scrubbed_wherever_they_appear() {
        assert_eq!(
            userinfo("https://elastic:chang3me@es:9200/_bulk"),
            "https://elastic:<redacted>@es:9200/_bulk"
        );
        assert_eq!(
            userinfo(r#"urls: ["http://a:b@x:1", "http://y:2"], `http://u:p@q`"#),
            r#"urls: ["http://a:<redacted>@x:1", "http://y:2"], `http://u:<redacted>@q`"#
        );
        assert_eq!(userinfo("http://token@host/x"), "http://token@host/x");
        assert_eq!(userinfo("no url here: a:b@c"), "no url here: a:b@c");
        assert_eq!(userinfo("http://u:p@ss@host"), "http://u:<redacted>@host");
    }

    #[test]
    fn secret_kafka_properties_are_recognised() {
        for p in [
            "sasl.password",
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.assertion.private.key.pem",
            "ssl.key",
        ] {
            assert!(is_secret_kafka_property(p), "{p}");
        }
        for p in [
            "ssl.ca.location",
            "sasl.mechanisms",
            "client.id",
            "ssl.certificate.location",
        ] {
            assert!(!is_secret_kafka_property(p), "{p}");
        }
    }
}
