//! The content-addressed plugin cache on disk.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>              modules and manifests, named by the sha256 of their bytes
//! <dir>/compiled/<engine key>/<hex>     precompiled artifacts of module <hex> for one engine build
//! <dir>/compiled/<engine key>/<hex>.sha256   the artifact's own sha256, checked before it is loaded
//! <dir>/tags/<sha256 of reference>.json     the last resolution of a tag reference
//! <dir>/tmp/                             writes in progress (temp file + rename = atomic)
//! ```
//!
//! Everything read is re-hashed: a corrupt entry is deleted and reported as a miss, so it is fetched or
//! compiled again. The directory must be private to the worker (Kubernetes: an emptyDir or a PVC): only
//! artifacts it compiled itself may be there, and they are native code. Size-bounded: least recently used
//! files go first.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::RegistryError;

/// `sha256:<hex>` of bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> Result<&str, RegistryError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| RegistryError::Cache {
            path: digest.to_string(),
            message: "not a sha256 digest".into(),
        })
}

/// What a cache lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Vec<u8>),
    Miss,
    /// Present but its bytes did not match its digest: deleted.
    Corrupt,
}

/// A remembered tag resolution.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TagEntry {
    pub reference: String,
    pub digest: String,
    pub resolved_at_unix_ms: u64,
}

impl TagEntry {
    pub fn age(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        now.saturating_sub(Duration::from_millis(self.resolved_at_unix_ms))
    }
}

#[derive(Debug)]
pub struct DiskCache {
    root: PathBuf,
    max_bytes: u64,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl DiskCache {
    pub fn open(root: &Path, max_bytes: u64) -> Result<Self, RegistryError> {
        for sub in ["blobs/sha256", "compiled", "tags", "tmp"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(|e| RegistryError::cache(&d, e))?;
        }
        // Leftovers of writes interrupted by a crash.
        if let Ok(entries) = fs::read_dir(root.join("tmp")) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Self {
            root: root.to_path_buf(),
            max_bytes,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, RegistryError> {
        Ok(self.root.join("blobs/sha256").join(hex_of(digest)?))
    }

    fn compiled_path(&self, engine_key: &str, module_digest: &str) -> Result<PathBuf, RegistryError> {
        Ok(self
            .root
            .join("compiled")
            .join(engine_key)
            .join(hex_of(module_digest)?))
    }

    fn tag_path(&self, reference: &str) -> PathBuf {
        self.root.join("tags").join(format!(
            "{}.json",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    /// Writes `bytes` to `path` atomically: a reader sees the old content or the whole new one.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self.root.join("tmp").join(format!("{}-{n}", std::process::id()));
        let result = (|| {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut f = fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| RegistryError::cache(path, e))
    }

    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, RegistryError> {
        match fs::read(path) {
            Ok(b) => {
                touch(path);
                Ok(Some(b))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::cache(path, e)),
        }
    }

    /// A verified blob (module or manifest).
    pub fn get_blob(&self, digest: &str) -> Result<Lookup, RegistryError> {
        let path = self.blob_path(digest)?;
        match self.read(&path)? {
            None => Ok(Lookup::Miss),
            Some(b) if sha256(&b) == digest => Ok(Lookup::Hit(b)),
            Some(_) => {
                let _ = fs::remove_file(&path);
                Ok(Lookup::Corrupt)
            }
        }
    }

    #[cfg(test)]
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    /// Stores a blob whose digest the caller verified (checked again here: nothing unverified is stored).
    pub fn put_blob(&self, digest: &str, bytes: &[u8]) -> Result<(), RegistryError> {
        let actual = sha256(bytes);
        if actual != digest {
            return Err(RegistryError::DigestMismatch {
                what: "blob to cache".into(),
                expected: digest.into(),
                actual,
            });
        }
        self.write_atomic(&self.blob_path(digest)?, bytes)?;
        self.evict();
        Ok(())
    }

    /// A precompiled artifact whose stored hash matches.
    pub fn get_compiled(&self, engine_key: &str, module_digest: &str) -> Result<Lookup, RegistryError> {
        let path = self.compiled_path(engine_key, module_digest)?;
        let sum_path = path.with_extension("sha256");
        let (Some(artifact), Some(sum)) = (self.read(&path)?, self.read(&sum_path)?) else {
            return Ok(Lookup::Miss);
        };
        if sha256(&artifact).as_bytes() == sum.as_slice() {
            Ok(Lookup::Hit(artifact))
        } else {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(&sum_path);
            Ok(Lookup::Corrupt)
        }
    }

    pub fn put_compiled(
        &self,
        engine_key: &str,
        module_digest: &str,
        artifact: &[u8],
    ) -> Result<(), RegistryError> {
        let path = self.compiled_path(engine_key, module_digest)?;
        // Artifact first, then its hash: a crash in between leaves a miss, never a bad hit.
        self.write_atomic(&path, artifact)?;
        self.write_atomic(&path.with_extension("sha256"), sha256(artifact).as_bytes())?;
        self.evict();
        Ok(())
    }

    pub fn get_tag(&self, reference: &str) -> Option<TagEntry> {
        let bytes = fs::read(self.tag_path(reference)).ok()?;
        serde_json::from_slice::<TagEntry>(&bytes)
            .ok()
            .filter(|t| t.reference == reference && hex_of(&t.digest).is_ok())
    }

    pub fn put_tag(&self, reference: &str, digest: &str) -> Result<(), RegistryError> {
        let entry = TagEntry {
            reference: reference.into(),
            digest: digest.into(),
            resolved_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let bytes = serde_json::to_vec(&entry).map_err(|e| RegistryError::cache(&self.root, e))?;
        self.write_atomic(&self.tag_path(reference), &bytes)
    }

    /// Bytes held by blobs and compiled artifacts.
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|(_, len, _)| len).sum()
    }

    fn entries(&self) -> Vec<(PathBuf, u64, SystemTime)> {
        let mut out = Vec::new();
        let mut dirs = vec![self.root.join("blobs"), self.root.join("compiled")];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let Ok(md) = e.metadata() else { continue };
                if md.is_dir() {
                    dirs.push(e.path());
                } else {
                    out.push((e.path(), md.len(), md.modified().unwrap_or(UNIX_EPOCH)));
                }
            }
        }
        out
    }

    /// Deletes least recently used files until the cache is under 90% of its bound; returns bytes freed.
    pub fn evict(&self) -> u64 {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return 0;
        }
        let target = self.max_bytes / 10 * 9;
        entries.sort_by_key(|(_, _, t)| *t);
        let mut freed = 0;
        for (path, len, _) in entries {
            if total <= target {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
                freed += len;
                tracing::debug!(path = %path.display(), bytes = len, "evicted from the plugin cache");
            }
        }
        freed
    }
}

/// Marks a file as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(f) = fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_on_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let d = sha256(b"module");
        assert!(matches!(c.get_blob(&d).unwrap(), Lookup::Miss));
        assert_eq!(c.put_blob(&d, b"other").unwrap_err().kind(), "digest_mismatch");
        c.put_blob(&d, b"module").unwrap();
        assert!(matches!(c.get_blob(&d).unwrap(), Lookup::Hit(b) if b == b"module"));
        fs::write(c.blob_path(&d).unwrap(), b"tampered").unwrap();
        assert!(matches!(c.get_blob(&d).unwrap(), Lookup::Corrupt));
        assert!(!c.has_blob(&d), "a corrupt blob is deleted");
    }

    #[test]
    fn compiled_artifacts_are_keyed_by_engine_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        let m = sha256(b"m");
        c.put_compiled("engine-a", &m, b"native code").unwrap();
        assert!(matches!(c.get_compiled("engine-a", &m).unwrap(), Lookup::Hit(_)));
        assert!(matches!(c.get_compiled("engine-b", &m).unwrap(), Lookup::Miss));
        let p = c.compiled_path("engine-a", &m).unwrap();
        fs::write(&p, b"native code, patched").unwrap();
        assert!(matches!(c.get_compiled("engine-a", &m).unwrap(), Lookup::Corrupt));
        assert!(matches!(c.get_compiled("engine-a", &m).unwrap(), Lookup::Miss));
    }

    #[test]
    fn eviction_removes_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 2500).unwrap();
        let blobs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000]).collect();
        let digests: Vec<String> = blobs.iter().map(|b| sha256(b)).collect();
        c.put_blob(&digests[0], &blobs[0]).unwrap();
        c.put_blob(&digests[1], &blobs[1]).unwrap();
        // Make blob 0 older than blob 1, then use blob 0 so that blob 1 is the least recently used.
        let old = SystemTime::now() - Duration::from_secs(60);
        for d in &digests[..2] {
            let f = fs::File::options()
                .append(true)
                .open(c.blob_path(d).unwrap())
                .unwrap();
            f.set_modified(old).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(matches!(c.get_blob(&digests[0]).unwrap(), Lookup::Hit(_)));
        c.put_blob(&digests[2], &blobs[2]).unwrap();
        assert!(c.has_blob(&digests[0]) && !c.has_blob(&digests[1]) && c.has_blob(&digests[2]));
        assert!(c.size() <= 2500);
    }

    #[test]
    fn tags_remember_their_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path(), 1 << 20).unwrap();
        assert!(c.get_tag("r/x:v1").is_none());
        let d = sha256(b"x");
        c.put_tag("r/x:v1", &d).unwrap();
        let t = c.get_tag("r/x:v1").unwrap();
        assert_eq!(t.digest, d);
        assert!(t.age() < Duration::from_secs(5));
    }
}
