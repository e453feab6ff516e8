//! The one loader of a sink's `ca_file`: a PEM bundle (one or more CA certificates, with any text around them,
//! as in distribution bundles) read and split once, then converted for each HTTP stack: `reqwest` for the
//! InfluxDB sinks, `elasticsearch::cert::Certificate` for the Elasticsearch transport (which bundles another
//! `reqwest`). An unusable file is a typed [`SinkError::Ca`] naming the key and the file.

use std::path::{Path, PathBuf};

use super::{CaProblem, SinkError};

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// The certificates of a `ca_file`, each as its own PEM block.
#[derive(Debug, Clone)]
pub struct CaBundle {
    key: &'static str,
    path: PathBuf,
    blocks: Vec<String>,
}

impl CaBundle {
    /// Reads `path` (the value of the option `key`) and splits it into its certificates.
    pub fn load(key: &'static str, path: &Path) -> Result<Self, SinkError> {
        let err = |problem| SinkError::Ca {
            key,
            path: path.to_path_buf(),
            problem,
        };
        let bytes = std::fs::read(path).map_err(|e| err(CaProblem::Unreadable(e)))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| err(CaProblem::NotPem("not UTF-8 text (a DER file?)".into())))?;
        let blocks = split_pem(&text).map_err(|m| err(CaProblem::NotPem(m)))?;
        if blocks.is_empty() {
            return Err(err(CaProblem::Empty));
        }
        let bundle = Self {
            key,
            path: path.to_path_buf(),
            blocks,
        };
        // Parse once now, so that a broken certificate stops the worker at start, whichever store uses it.
        bundle.reqwest()?;
        Ok(bundle)
    }

    /// How many certificates the bundle holds.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The certificates for a `reqwest` client (`tls_certs_merge`).
    pub fn reqwest(&self) -> Result<Vec<reqwest::Certificate>, SinkError> {
        self.blocks
            .iter()
            .enumerate()
            .map(|(i, b)| reqwest::Certificate::from_pem(b.as_bytes()).map_err(|e| self.not_pem(i, &e)))
            .collect()
    }

    /// The certificates for the Elasticsearch transport (`CertificateValidation::Full`).
    pub fn elasticsearch(&self) -> Result<elasticsearch::cert::Certificate, SinkError> {
        let mut chain: Option<elasticsearch::cert::Certificate> = None;
        for (i, b) in self.blocks.iter().enumerate() {
            let cert =
                elasticsearch::cert::Certificate::from_pem(b.as_bytes()).map_err(|e| self.not_pem(i, &e))?;
            match &mut chain {
                Some(c) => c.append(cert),
                None => chain = Some(cert),
            }
        }
        chain.ok_or_else(|| SinkError::Ca {
            key: self.key,
            path: self.path.clone(),
            problem: CaProblem::Empty,
        })
    }

    fn not_pem(&self, index: usize, e: &dyn std::fmt::Display) -> SinkError {
        SinkError::Ca {
            key: self.key,
            path: self.path.clone(),
            problem: CaProblem::NotPem(format!("certificate {}: {e}", index + 1)),
        }
    }
}

/// The `BEGIN CERTIFICATE` .. `END CERTIFICATE` blocks of a PEM text, each ending with a newline; text around
/// them is ignored (bundles carry comments). A block without its end is an error.
fn split_pem(text: &str) -> Result<Vec<String>, String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            return Err(format!("certificate {} has no END line", blocks.len() + 1));
        };
        let end = start + len + END.len();
        blocks.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = include_str!("testdata/ca-bundle.pem");

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    fn problem(r: Result<CaBundle, SinkError>) -> CaProblem {
        match r {
            Err(SinkError::Ca { key, problem, .. }) => {
                assert_eq!(key, "sinks.x.ca_file");
                problem
            }
            other => panic!("expected a CA error, got {other:?}"),
        }
    }

    #[test]
    fn a_bundle_is_split_into_its_certificates_for_both_stacks() {
        let f = file(BUNDLE.as_bytes());
        let b = CaBundle::load("sinks.x.ca_file", f.path()).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.reqwest().unwrap().len(), 2);
        assert_eq!(b.elasticsearch().unwrap().len(), 2);
    }

    #[test]
    fn an_unusable_file_is_a_typed_error_naming_key_and_file() {
        let garbage = file(b"this is not a certificate\n");
        assert!(matches!(
            problem(CaBundle::load("sinks.x.ca_file", garbage.path())),
            CaProblem::Empty
        ));
        let empty = file(b"");
        assert!(matches!(
            problem(CaBundle::load("sinks.x.ca_file", empty.path())),
            CaProblem::Empty
        ));
        let der = file(&[0x30, 0x82, 0xff, 0xfe, 0x00]);
        assert!(matches!(
            problem(CaBundle::load("sinks.x.ca_file", der.path())),
            CaProblem::NotPem(_)
        ));
        let cut = file(format!("{BEGIN}\nMIIB\n").as_bytes());
        assert!(matches!(
            problem(CaBundle::load("sinks.x.ca_file", cut.path())),
            CaProblem::NotPem(m) if m.contains("no END")
        ));
        let bad_base64 = file(format!("{BEGIN}\nnot base64 at all!\n{END}\n").as_bytes());
        assert!(matches!(
            problem(CaBundle::load("sinks.x.ca_file", bad_base64.path())),
            CaProblem::NotPem(m) if m.contains("certificate 1")
        ));
        let missing = CaBundle::load("sinks.x.ca_file", Path::new("/nonexistent/not-a-cert.pem"));
        let text = missing.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(text.contains("not-a-cert.pem"), "{text}");
        assert!(matches!(problem(missing), CaProblem::Unreadable(_)));
    }
}
