//! Which OCI artifacts are wasm plugins: the manifest, config and layer media types accepted, and the choice
//! of the one layer that holds the module.

use oci_client::manifest::{OciDescriptor, OciImageManifest};

/// Manifest media types asked for and accepted.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Layer media types that hold a wasm module as is.
pub const WASM_LAYER_TYPES: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
    "application/vnd.module.wasm.content.layer.v1+wasm",
];

/// What `oras push file.wasm` writes without a media type: the file as is, under this type, with its name
/// in the title annotation.
pub const ORAS_DEFAULT_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const TITLE: &str = "org.opencontainers.image.title";
const ORAS_UNPACK: &str = "io.deis.oras.content.unpack";

/// Config media types accepted: the wasm artifact config, the OCI empty config, and ORAS' defaults.
pub const CONFIG_TYPES: &[&str] = &[
    "application/vnd.wasm.config.v0+json",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.unknown.config.v1+json",
    "application/vnd.oci.image.config.v1+json",
];

/// The media types `millrace plugin push` writes (the CNCF wasm OCI artifact layout).
pub const PUSH_CONFIG_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const PUSH_LAYER_TYPE: &str = "application/wasm";

fn is_wasm_layer(d: &OciDescriptor) -> bool {
    if WASM_LAYER_TYPES.contains(&d.media_type.as_str()) {
        return true;
    }
    let annotations = d.annotations.as_ref();
    d.media_type == ORAS_DEFAULT_LAYER
        && annotations
            .and_then(|a| a.get(TITLE))
            .is_some_and(|t| t.ends_with(".wasm"))
        && annotations.and_then(|a| a.get(ORAS_UNPACK)).is_none()
}

fn describe(d: &OciDescriptor) -> String {
    match d.annotations.as_ref().and_then(|a| a.get(TITLE)) {
        Some(t) => format!("{} ({t})", d.media_type),
        None => d.media_type.clone(),
    }
}

/// Checks the config type and picks the module layer; the error names what was found.
pub fn select_layer(manifest: &OciImageManifest) -> Result<&OciDescriptor, String> {
    if !CONFIG_TYPES.contains(&manifest.config.media_type.as_str()) {
        return Err(format!(
            "config media type `{}` is not one of {}",
            manifest.config.media_type,
            CONFIG_TYPES.join(", ")
        ));
    }
    let wasm: Vec<&OciDescriptor> = manifest.layers.iter().filter(|d| is_wasm_layer(d)).collect();
    match wasm.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no wasm layer among {} layer(s) [{}]; expected one of {} or {ORAS_DEFAULT_LAYER} titled *.wasm",
            manifest.layers.len(),
            manifest
                .layers
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(", "),
            WASM_LAYER_TYPES.join(", ")
        )),
        many => Err(format!(
            "{} wasm layers [{}]; a plugin artifact holds exactly one module",
            many.len(),
            many.iter().map(|d| describe(d)).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config: &str, layers: &[(&str, Option<&str>)]) -> OciImageManifest {
        let desc = |mt: &str, title: Option<&str>| OciDescriptor {
            media_type: mt.into(),
            digest: "sha256:00".into(),
            size: 1,
            annotations: title.map(|t| [(TITLE.to_string(), t.to_string())].into_iter().collect()),
            ..Default::default()
        };
        OciImageManifest {
            config: desc(config, None),
            layers: layers.iter().map(|(m, t)| desc(m, *t)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_wasm_types_and_oras_defaults() {
        for (config, layer, title) in [
            ("application/vnd.wasm.config.v0+json", "application/wasm", None),
            (
                "application/vnd.oci.empty.v1+json",
                "application/vnd.wasm.content.layer.v1+wasm",
                None,
            ),
            (
                "application/vnd.unknown.config.v1+json",
                "application/vnd.module.wasm.content.layer.v1+wasm",
                None,
            ),
            (
                "application/vnd.unknown.config.v1+json",
                ORAS_DEFAULT_LAYER,
                Some("router.wasm"),
            ),
        ] {
            let m = manifest(config, &[(layer, title)]);
            assert_eq!(select_layer(&m).unwrap().media_type, layer);
        }
    }

    #[test]
    fn refuses_other_artifacts_naming_what_it_found() {
        let m = manifest(
            "application/vnd.oci.image.config.v1+json",
            &[("application/vnd.oci.image.layer.v1.tar+gzip", None)],
        );
        let e = select_layer(&m).unwrap_err();
        assert!(e.contains("application/vnd.oci.image.layer.v1.tar+gzip"), "{e}");
        let m = manifest(
            "application/vnd.helm.config.v1+json",
            &[("application/wasm", None)],
        );
        assert!(
            select_layer(&m)
                .unwrap_err()
                .contains("application/vnd.helm.config.v1+json")
        );
        let m = manifest(
            "application/vnd.oci.empty.v1+json",
            &[(ORAS_DEFAULT_LAYER, Some("notes.txt"))],
        );
        assert!(select_layer(&m).unwrap_err().contains("notes.txt"));
        let m = manifest(
            "application/vnd.oci.empty.v1+json",
            &[("application/wasm", None), ("application/wasm", None)],
        );
        assert!(select_layer(&m).unwrap_err().contains("exactly one"));
    }
}
