//! Encoding an InfluxDB write: the URL with its query (`db`/`rp` for 1.x, `org`/`bucket` for 2.x, nanosecond
//! precision), the credentials, and the body: one line of line protocol per point, each ended by a newline,
//! gzipped when configured. Kept apart from sending so that it is tested without a server.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::Url;

use crate::config::{InfluxV1Config, InfluxV2Config};

/// How a write authenticates (secrets exposed once, here; never printed).
enum Auth {
    None,
    /// 1.x: `username` and `password`.
    Basic {
        username: String,
        password: String,
    },
    /// 2.x: the value of the `Authorization` header, `Token <token>`.
    Token(String),
}

/// Everything of a write request but its body.
pub(super) struct WriteRequest {
    url: Url,
    /// The URL without its query, for messages.
    endpoint: String,
    auth: Auth,
    gzip: bool,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("url", &self.url.as_str())
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl WriteRequest {
    /// 1.x `/write?db=..&precision=ns[&rp=..]`, with basic credentials when both are given.
    pub(super) fn v1(base: &Url, c: &InfluxV1Config) -> Self {
        let mut url = base.clone();
        url.set_path(&format!("{}write", base.path()));
        url.query_pairs_mut()
            .append_pair("db", &c.database)
            .append_pair("precision", "ns");
        if let Some(rp) = &c.retention_policy {
            url.query_pairs_mut().append_pair("rp", rp);
        }
        let auth = match (&c.username, &c.password) {
            (Some(username), Some(password)) => Auth::Basic {
                username: username.clone(),
                password: password.expose().to_string(),
            },
            _ => Auth::None,
        };
        Self::new(url, auth, c.gzip)
    }

    /// 2.x `/api/v2/write?org=..&bucket=..&precision=ns`, with its token.
    pub(super) fn v2(base: &Url, c: &InfluxV2Config) -> Self {
        let mut url = base.clone();
        url.set_path(&format!("{}api/v2/write", base.path()));
        url.query_pairs_mut()
            .append_pair("org", &c.org)
            .append_pair("bucket", &c.bucket)
            .append_pair("precision", "ns");
        let auth = c
            .token
            .as_ref()
            .map_or(Auth::None, |t| Auth::Token(format!("Token {}", t.expose())));
        Self::new(url, auth, c.gzip)
    }

    fn new(url: Url, auth: Auth, gzip: bool) -> Self {
        let mut endpoint = url.clone();
        endpoint.set_query(None);
        Self {
            endpoint: crate::redact::userinfo(endpoint.as_str()),
            url,
            auth,
            gzip,
        }
    }

    /// The write URL, with its query.
    #[cfg(test)]
    fn url(&self) -> &Url {
        &self.url
    }

    /// The write URL without its query: where errors say they come from.
    pub(super) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The body of a write of `lines`.
    pub(super) fn encode(&self, lines: &[&str]) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
            body.push(b'\n');
        }
        if !self.gzip {
            return Ok(body);
        }
        let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
        enc.write_all(&body)?;
        enc.finish()
    }

    /// The request that posts `body`, an output of [`encode`](Self::encode).
    pub(super) fn build(&self, client: &reqwest::Client, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut req = client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if self.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        match &self.auth {
            Auth::None => {}
            Auth::Basic { username, password } => req = req.basic_auth(username, Some(password)),
            Auth::Token(header) => req = req.header(reqwest::header::AUTHORIZATION, header),
        }
        req.body(body)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;

    fn v1(gzip: bool, rp: Option<&str>) -> InfluxV1Config {
        InfluxV1Config {
            url: "http://influx:8086".into(),
            ca_file: None,
            database: "metrics & more".into(),
            retention_policy: rp.map(String::from),
            username: None,
            password: None,
            gzip,
            timeout: Duration::from_secs(1),
        }
    }

    fn base(u: &str) -> Url {
        Url::parse(u).unwrap()
    }

    #[test]
    fn urls_carry_the_query_of_each_api() {
        let r = WriteRequest::v1(&base("http://influx:8086/"), &v1(false, Some("week")));
        assert_eq!(
            r.url().as_str(),
            "http://influx:8086/write?db=metrics+%26+more&precision=ns&rp=week"
        );
        let r = WriteRequest::v2(
            &base("https://vm/prefix/"),
            &InfluxV2Config {
                url: "https://vm/prefix".into(),
                ca_file: None,
                org: "o".into(),
                bucket: "b/1".into(),
                token: None,
                gzip: true,
                timeout: Duration::from_secs(1),
            },
        );
        assert_eq!(
            r.url().as_str(),
            "https://vm/prefix/api/v2/write?org=o&bucket=b%2F1&precision=ns"
        );
    }

    #[test]
    fn bodies_are_newline_terminated_lines_gzipped_when_asked() {
        let lines = ["cpu,host=a value=1 1", "cpu,host=b value=2 2"];
        let plain = WriteRequest::v1(&base("http://influx:8086/"), &v1(false, None));
        let expected = "cpu,host=a value=1 1\ncpu,host=b value=2 2\n";
        assert_eq!(plain.encode(&lines).unwrap(), expected.as_bytes());
        let gz = WriteRequest::v1(&base("http://influx:8086/"), &v1(true, None));
        let body = gz.encode(&lines).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, expected);
    }

    #[test]
    fn requests_carry_encoding_and_credentials() {
        let client = reqwest::Client::new();
        let gz = WriteRequest::v1(&base("http://influx:8086/"), &v1(true, None));
        let req = gz.build(&client, Vec::new()).build().unwrap();
        assert_eq!(req.headers()["content-encoding"], "gzip");
        assert!(req.headers().get("authorization").is_none());
        let token = WriteRequest::new(
            base("http://vm/api/v2/write"),
            Auth::Token("Token t0k".into()),
            false,
        );
        assert_eq!(token.endpoint(), "http://vm/api/v2/write");
        let req = token.build(&client, Vec::new()).build().unwrap();
        assert_eq!(req.headers()["authorization"], "Token t0k");
        assert!(req.headers().get("content-encoding").is_none());
    }
}
