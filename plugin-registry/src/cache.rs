//! The content-addressed plugin cache on disk.
//!
//! ```text
//! <dir>/blobs/sha256/<hex>              modules and manifests, named by the sha256 of their bytes
//! <dir>/compiled/<engine key>/<hex>     precompiled artifacts of module <hex> for one engine build
//! <dir>/compiled/<engine key>/<hex>.mac      HMAC-SHA256, under a key kept outside the cache, of the
//!                                        engine key, the module digest and the artifact
//! <dir>/tags/<sha256 of reference>.json     the last resolution of a tag reference
//! <dir>/repos/<sha256 of registry/repository>/<hex>   manifest <hex> was pulled from (or confirmed by)
//!                                        that repository: a digest is served to a repository only then
//! <dir>/signatures/<sha256 of registry/repository>/<hex>   the cosign signature manifest of manifest
//!                                        <hex> in that repository, kept for offline starts (re-verified)
//! <dir>/tmp/                             writes in progress (temp file + rename = atomic)
//! ```
//!
//! Everything read is re-hashed: a corrupt entry is deleted and reported as a miss, so it is fetched or
//! compiled again. A compiled artifact is native code: it is loaded only if its MAC verifies under the key
//! the store was given (from a Secret, so that workers sharing a volume trust each other's artifacts) or
//! generated at start (then only this process's own artifacts load). Whoever can write the cache but does
//! not hold the key cannot make the worker run their code: a bad MAC means "compile again".
//!
//! The directory is created private (0700, files 0600); an existing one that is a symlink, owned by another
//! user or open to group or others is refused. Files are read without following symlinks; temp files are
//! created exclusively (`O_EXCL`, which never follows a symlink) under unpredictable names and renamed into
//! place (a rename replaces a planted symlink, never writes through it). Size-bounded: least recently used
//! files go first.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
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

/// The key compiled artifacts are authenticated with. Never stored in the cache.
#[derive(Clone)]
pub struct CompiledKey([u8; 32]);

impl std::fmt::Debug for CompiledKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledKey(<redacted>)")
    }
}

impl CompiledKey {
    /// A fresh random key (artifacts of earlier processes will not verify and are compiled again).
    pub fn generate() -> Result<Self, RegistryError> {
        random_bytes()
            .map(Self)
            .map_err(|e| RegistryError::cache(Path::new("/dev/urandom"), e))
    }

    /// A key derived from secret bytes (e.g. a Kubernetes Secret shared by the workers of one volume); at
    /// least 16 bytes.
    pub fn from_secret(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 16 {
            return Err(format!("{} bytes; at least 16 are needed", secret.len()));
        }
        Ok(Self(Sha256::digest(secret).into()))
    }

    fn mac(&self, engine_key: &str, module_digest: &str, artifact: &[u8]) -> [u8; 32] {
        hmac_sha256(
            &self.0,
            &[
                engine_key.as_bytes(),
                b"\0",
                module_digest.as_bytes(),
                b"\0",
                artifact,
            ],
        )
    }
}

/// HMAC-SHA256 (RFC 2104) of the concatenation of `parts`.
fn hmac_sha256(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let mut inner = Sha256::new();
    inner.update(pad(0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha256::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equality without an early exit (a MAC comparison must not tell how many bytes matched).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
pub struct DiskCache {
    root: PathBuf,
    max_bytes: u64,
    key: CompiledKey,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The effective user of this process (the owner of `/proc/self`), where the system says.
fn effective_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Creates `dir` private, or checks that an existing one is: a real directory, owned by this user, with no
/// access for group or others.
fn private_dir(dir: &Path) -> Result<(), RegistryError> {
    match fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent).map_err(|e| RegistryError::cache(parent, e))?;
            }
            match fs::DirBuilder::new().mode(0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return private_dir(dir),
                Err(e) => return Err(RegistryError::cache(dir, e)),
            }
            // The umask may have taken bits away, never added: set exactly 0700.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| RegistryError::cache(dir, e))
        }
        Err(e) => Err(RegistryError::cache(dir, e)),
        Ok(md) => {
            let refuse = |why: String| {
                Err(RegistryError::cache(
                    dir,
                    format!(
                        "{why}: the plugin cache holds native code and must be private to the worker \
                         (a directory owned by the worker's user, mode 0700); fix it or point \
                         registry.cache_dir at a new path, which is created so"
                    ),
                ))
            };
            if md.file_type().is_symlink() {
                return refuse("it is a symbolic link".into());
            }
            if !md.is_dir() {
                return refuse("it is not a directory".into());
            }
            if let Some(uid) = effective_uid()
                && md.uid() != uid
            {
                return refuse(format!(
                    "it is owned by uid {}, not by this worker's uid {uid}",
                    md.uid()
                ));
            }
            let mode = md.mode() & 0o777;
            if mode & 0o077 != 0 {
                return refuse(format!("its mode is {mode:o}, open to group or others"));
            }
            Ok(())
        }
    }
}

/// Bytes from the system's random source.
fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut b = [0u8; N];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// A number nobody can guess in advance, for temp file names.
fn unpredictable() -> u64 {
    random_bytes().map_or_else(
        |_| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos();
            u64::from(nanos) ^ u64::from(std::process::id()) << 32
        },
        u64::from_le_bytes,
    )
}

impl DiskCache {
    pub fn open(root: &Path, max_bytes: u64, key: CompiledKey) -> Result<Self, RegistryError> {
        private_dir(root)?;
        for sub in [
            "blobs",
            "blobs/sha256",
            "compiled",
            "tags",
            "repos",
            "signatures",
            "tmp",
        ] {
            private_dir(&root.join(sub))?;
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
            key,
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
    /// The temp file is created exclusively (never through a planted symlink) and renamed into place.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
        if let Some(parent) = path.parent() {
            private_dir(parent)?;
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}-{n}-{:016x}", std::process::id(), unpredictable()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| RegistryError::cache(path, e))
    }

    /// A file's bytes; a symlink where a file should be is removed and reads as absent.
    fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, RegistryError> {
        let opened = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path);
        let mut file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                tracing::warn!(path = %path.display(), "a symbolic link in the plugin cache; removed");
                let _ = fs::remove_file(path);
                return Ok(None);
            }
            Err(e) => return Err(RegistryError::cache(path, e)),
        };
        let mut b = Vec::new();
        file.read_to_end(&mut b)
            .map_err(|e| RegistryError::cache(path, e))?;
        touch(path);
        Ok(Some(b))
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

    /// A precompiled artifact of `module_digest` for engine `engine_key` whose MAC verifies under the key.
    pub fn get_compiled(&self, engine_key: &str, module_digest: &str) -> Result<Lookup, RegistryError> {
        let path = self.compiled_path(engine_key, module_digest)?;
        let mac_path = path.with_extension("mac");
        let (Some(artifact), Some(mac)) = (self.read(&path)?, self.read(&mac_path)?) else {
            return Ok(Lookup::Miss);
        };
        let expected = hex::encode(self.key.mac(engine_key, module_digest, &artifact));
        if same(expected.as_bytes(), &mac) {
            Ok(Lookup::Hit(artifact))
        } else {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(&mac_path);
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
        // Artifact first, then its MAC: a crash in between leaves a miss, never a bad hit.
        self.write_atomic(&path, artifact)?;
        let mac = hex::encode(self.key.mac(engine_key, module_digest, artifact));
        self.write_atomic(&path.with_extension("mac"), mac.as_bytes())?;
        self.evict();
        Ok(())
    }

    fn repo_marker(&self, repository: &str, manifest_digest: &str) -> Result<PathBuf, RegistryError> {
        Ok(self
            .root
            .join("repos")
            .join(hex::encode(Sha256::digest(repository.as_bytes())))
            .join(hex_of(manifest_digest)?))
    }

    /// Whether manifest `manifest_digest` was pulled from (or confirmed by) `repository`
    /// (`registry/repository`).
    pub fn repo_has(&self, repository: &str, manifest_digest: &str) -> bool {
        self.repo_marker(repository, manifest_digest)
            .is_ok_and(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
    }

    /// Remembers that `repository` holds manifest `manifest_digest`.
    pub fn put_repo(&self, repository: &str, manifest_digest: &str) -> Result<(), RegistryError> {
        let path = self.repo_marker(repository, manifest_digest)?;
        self.write_atomic(&path, repository.as_bytes())
    }

    fn signature_path(&self, repository: &str, manifest_digest: &str) -> Result<PathBuf, RegistryError> {
        Ok(self
            .root
            .join("signatures")
            .join(hex::encode(Sha256::digest(repository.as_bytes())))
            .join(hex_of(manifest_digest)?))
    }

    /// The signature manifest last seen for `manifest_digest` in `repository` (verified again by the caller).
    pub fn get_signature(
        &self,
        repository: &str,
        manifest_digest: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        self.read(&self.signature_path(repository, manifest_digest)?)
    }

    pub fn put_signature(
        &self,
        repository: &str,
        manifest_digest: &str,
        raw: &[u8],
    ) -> Result<(), RegistryError> {
        self.write_atomic(&self.signature_path(repository, manifest_digest)?, raw)
    }

    pub fn get_tag(&self, reference: &str) -> Option<TagEntry> {
        let bytes = self.read(&self.tag_path(reference)).ok()??;
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

    fn open(root: &Path, max: u64) -> DiskCache {
        DiskCache::open(
            &root.join("cache"),
            max,
            CompiledKey::from_secret(b"0123456789abcdef").unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2 uses a short key; ours are always 32 bytes, so check against the same
        // construction with a key padded by zeros, which HMAC defines as equivalent.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_cache_directory_is_private_and_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("new/cache");
        DiskCache::open(&root, 1 << 20, CompiledKey::generate().unwrap()).unwrap();
        let mode = fs::metadata(&root).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let err = DiskCache::open(&root, 1 << 20, CompiledKey::generate().unwrap()).unwrap_err();
        assert!(err.to_string().contains("mode is 755"), "{err}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let err = DiskCache::open(&link, 1 << 20, CompiledKey::generate().unwrap()).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }

    #[test]
    fn planted_symlinks_are_neither_followed_nor_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 1 << 20);
        let outside = dir.path().join("outside");
        fs::write(&outside, b"module").unwrap();
        let d = sha256(b"module");
        std::os::unix::fs::symlink(&outside, c.blob_path(&d).unwrap()).unwrap();
        assert!(
            matches!(c.get_blob(&d).unwrap(), Lookup::Miss),
            "a symlink is not a cache entry"
        );
        std::os::unix::fs::symlink(&outside, c.blob_path(&d).unwrap()).unwrap();
        c.put_blob(&d, b"module").unwrap();
        assert!(
            !fs::symlink_metadata(c.blob_path(&d).unwrap())
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read(&outside).unwrap(), b"module");
        fs::write(&outside, b"attacker").unwrap();
        assert!(matches!(c.get_blob(&d).unwrap(), Lookup::Hit(b) if b == b"module"));
    }

    #[test]
    fn compiled_artifacts_need_the_key_they_were_written_with() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let m = sha256(b"m");
        let key = || CompiledKey::from_secret(b"0123456789abcdef").unwrap();
        DiskCache::open(&root, 1 << 20, key())
            .unwrap()
            .put_compiled("e", &m, b"native")
            .unwrap();
        let same_key = DiskCache::open(&root, 1 << 20, key()).unwrap();
        assert!(matches!(same_key.get_compiled("e", &m).unwrap(), Lookup::Hit(_)));
        let other = DiskCache::open(&root, 1 << 20, CompiledKey::generate().unwrap()).unwrap();
        assert!(matches!(other.get_compiled("e", &m).unwrap(), Lookup::Corrupt));
        // An artifact moved under another module's name does not verify either.
        let c = DiskCache::open(&root, 1 << 20, key()).unwrap();
        let n = sha256(b"n");
        c.put_compiled("e", &m, b"native m").unwrap();
        c.put_compiled("e", &n, b"native n").unwrap();
        let (pm, pn) = (
            c.compiled_path("e", &m).unwrap(),
            c.compiled_path("e", &n).unwrap(),
        );
        fs::copy(&pn, &pm).unwrap();
        fs::copy(pn.with_extension("mac"), pm.with_extension("mac")).unwrap();
        assert!(matches!(c.get_compiled("e", &m).unwrap(), Lookup::Corrupt));
        assert!(CompiledKey::from_secret(b"short").is_err());
    }

    #[test]
    fn blobs_are_verified_on_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 1 << 20);
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
        let c = open(dir.path(), 1 << 20);
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
        let c = open(dir.path(), 2500);
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
        let c = open(dir.path(), 1 << 20);
        assert!(c.get_tag("r/x:v1").is_none());
        let d = sha256(b"x");
        c.put_tag("r/x:v1", &d).unwrap();
        let t = c.get_tag("r/x:v1").unwrap();
        assert_eq!(t.digest, d);
        assert!(t.age() < Duration::from_secs(5));
    }
}
