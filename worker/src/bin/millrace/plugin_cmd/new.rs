//! `millrace plugin new NAME --lang rust|go|c`: scaffolds a plugin project that builds and passes
//! `millrace plugin test` as generated, so an author starts from something that works in their language:
//! the transform's source, a native unit test, `build.sh` (the .wasm) and `test.sh` (the native tests), and
//! sample records. The SDKs are not published to a registry: the project refers to the SDK of a millrace
//! checkout (`--sdk`, found next to the binary or the current directory when not given).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct NewArgs {
    /// The plugin's name: lowercase letters, digits, `-` and `_`, starting with a letter. A directory of
    /// this name is created.
    name: String,
    /// The language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create the project (default: the current directory).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The `plugins/` directory of a millrace checkout (holding `sdk/`, `sdk-go/` and the C header).
    #[arg(long, env = "MILLRACE_SDK_DIR")]
    sdk: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Go,
    C,
}

pub fn run(a: NewArgs) -> Result<ExitCode> {
    check_name(&a.name)?;
    let sdk = match a.sdk {
        Some(s) => s,
        None => find_sdk()?,
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK directory {}", sdk.display()))?;
    let project = a.dir.join(&a.name);
    if project.exists() {
        bail!("{} already exists", project.display());
    }
    let files = match a.lang {
        Lang::Rust => rust_files(&a.name, &sdk)?,
        Lang::Go => go_files(&a.name, &sdk)?,
        Lang::C => c_files(&a.name, &sdk)?,
    };
    for (path, content, executable) in &files {
        let path = project.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        if *executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    println!(
        "created {} ({:?} plugin, SDK {})",
        project.display(),
        a.lang,
        sdk.display()
    );
    println!("  cd {}", project.display());
    println!("  ./test.sh      # the transform's unit tests, natively");
    println!("  ./build.sh     # {}.wasm", a.name);
    println!("  millrace plugin test {}.wasm --input samples.ndjson", a.name);
    Ok(ExitCode::SUCCESS)
}

fn check_name(name: &str) -> Result<()> {
    let ok = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("plugin name `{name}`: use lowercase letters, digits, `-` and `_`, starting with a letter");
    }
    Ok(())
}

/// The `plugins/` directory of the checkout this binary was built in, or above the current directory.
fn find_sdk() -> Result<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    for start in &starts {
        for dir in start.ancestors() {
            let plugins = dir.join("plugins");
            if plugins.join("sdk/Cargo.toml").is_file() && plugins.join("sdk-go/go.mod").is_file() {
                return Ok(plugins);
            }
        }
    }
    bail!(
        "no millrace SDK found near the binary or the current directory: pass --sdk <millrace checkout>/plugins"
    )
}

type Files = Vec<(PathBuf, String, bool)>;

fn file(path: &str, content: String) -> (PathBuf, String, bool) {
    (PathBuf::from(path), content, false)
}

fn script(path: &str, content: String) -> (PathBuf, String, bool) {
    (PathBuf::from(path), content, true)
}

/// Sample records: one accepted, one rejected.
const SAMPLES: &str = "{\"sensor\":\"s1\",\"celsius\":21.5}\n{\"sensor\":\"s2\",\"celsius\":-300}\n";

fn rust_files(name: &str, sdk: &Path) -> Result<Files> {
    let crate_name = name.replace('-', "_");
    let sdk_path = sdk.join("sdk");
    Ok(vec![
        file(
            "Cargo.toml",
            format!(
                r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib", "rlib"] # cdylib: the .wasm; rlib: native unit tests

[dependencies]
millrace-plugin-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = 3
lto = true
codegen-units = 1
panic = "abort"
strip = "debuginfo"

# A project of its own, not a member of an enclosing workspace.
[workspace]
"#,
                sdk = sdk_path.display()
            ),
        ),
        file(
            ".cargo/config.toml",
            "# A 64 KiB shadow stack instead of Rust's default 1 MiB keeps an instance's memory small.\n\
             [target.wasm32-wasip1]\nrustflags = [\"-C\", \"link-arg=-zstack-size=65536\"]\n"
                .into(),
        ),
        file(
            "src/lib.rs",
            r##"//! A millrace plugin: one function from a record to outputs (see the SDK's documentation).

use millrace_plugin_sdk::{Output, Point, Record, Reject, plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Reading<'a> {
    sensor: &'a str,
    celsius: f64,
}

pub fn transform(record: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
    let r: Reading = record.json()?; // invalid JSON -> rejected with the parse error
    if r.celsius < -273.15 {
        return Err(Reject::new("below absolute zero")); // -> dead-letter topic with this reason
    }
    out.point(&Point::new("temperature").tag("sensor", r.sensor).field("celsius", r.celsius));
    Ok(())
}

plugin!(transform);

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_plugin_sdk::testing::{TestRecord, run};

    #[test]
    fn converts_and_rejects() {
        let o = run(transform, &TestRecord::json(r#"{"sensor":"s1","celsius":21.5}"#));
        assert_eq!(o.points, ["temperature,sensor=s1 celsius=21.5"]);
        let o = run(transform, &TestRecord::json(r#"{"sensor":"s1","celsius":-300}"#));
        assert_eq!(o.rejected.as_deref(), Some("below absolute zero"));
    }
}
"##
            .into(),
        ),
        script(
            "build.sh",
            format!(
                "#!/usr/bin/env bash\n# Builds {name}.wasm (needs `rustup target add wasm32-wasip1`).\nset -euo pipefail\n\
                 cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\"\n\
                 cargo build --release --target wasm32-wasip1\n\
                 cp \"${{CARGO_TARGET_DIR:-target}}/wasm32-wasip1/release/{crate_name}.wasm\" {name}.wasm\n"
            ),
        ),
        script(
            "test.sh",
            "#!/usr/bin/env bash\n# The transform's unit tests, natively against the SDK's host stubs.\nset -euo pipefail\n\
             cd \"$(dirname \"${BASH_SOURCE[0]}\")\"\ncargo test\n"
                .into(),
        ),
        file("samples.ndjson", SAMPLES.into()),
    ])
}

fn go_files(name: &str, sdk: &Path) -> Result<Files> {
    let sdk_path = sdk.join("sdk-go");
    Ok(vec![
        file(
            "go.mod",
            format!(
                "module {name}\n\ngo 1.24\n\nrequire millrace.dev/sdk v0.0.0\n\nreplace millrace.dev/sdk => {}\n",
                sdk_path.display()
            ),
        ),
        file(
            "main.go",
            r#"// Command NAME is a millrace plugin: one function from a record to outputs (see the SDK's godoc).
package main

import millrace "millrace.dev/sdk"

type reading struct {
	Sensor  string  `json:"sensor"`
	Celsius float64 `json:"celsius"`
}

func transform(r millrace.Record, out *millrace.Output) error {
	var v reading
	if err := r.JSON(&v); err != nil {
		return err // invalid JSON -> rejected with the parse error
	}
	if v.Celsius < -273.15 {
		return millrace.Reject("below absolute zero") // -> dead-letter topic with this reason
	}
	out.Point(millrace.NewPoint("temperature").Tag("sensor", v.Sensor).Float("celsius", v.Celsius))
	return nil
}

// A WASI reactor runs package initialisers in _initialize, never main: register here.
func init() { millrace.Register(transform) }

func main() {}
"#
            .replace("NAME", name),
        ),
        file(
            "main_test.go",
            r#"//go:build !wasip1

package main

import (
	"testing"

	millrace "millrace.dev/sdk"
)

func TestConvertsAndRejects(t *testing.T) {
	o := millrace.Run(transform, millrace.JSONRecord(`{"sensor":"s1","celsius":21.5}`))
	if len(o.Points) != 1 || o.Points[0] != "temperature,sensor=s1 celsius=21.5" {
		t.Fatalf("%#v", o)
	}
	o = millrace.Run(transform, millrace.JSONRecord(`{"sensor":"s1","celsius":-300}`))
	if !o.Rejected || o.Reason != "below absolute zero" {
		t.Fatalf("%#v", o)
	}
}
"#
            .into(),
        ),
        script(
            "build.sh",
            format!(
                "#!/usr/bin/env bash\n# Builds {name}.wasm, a WASI reactor (Go 1.24 or later; standard library only).\n\
                 set -euo pipefail\ncd \"$(dirname \"${{BASH_SOURCE[0]}}\")\"\n\
                 GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -o {name}.wasm .\n"
            ),
        ),
        script(
            "test.sh",
            "#!/usr/bin/env bash\n# The transform's unit tests, natively against the SDK's host stubs.\nset -euo pipefail\n\
             cd \"$(dirname \"${BASH_SOURCE[0]}\")\"\ngo vet ./...\ngo test ./...\n"
                .into(),
        ),
        file("samples.ndjson", SAMPLES.into()),
    ])
}

fn c_files(name: &str, sdk: &Path) -> Result<Files> {
    let header_path = sdk.join("examples/c-envelope/millrace.h");
    let header = std::fs::read_to_string(&header_path)
        .with_context(|| format!("reading the C header {}", header_path.display()))?;
    let measurement = name.replace('-', "_");
    Ok(vec![
        file("millrace.h", header),
        file(
            "plugin.c",
            r#"/* A millrace plugin in C: one point per record with the size of its value; tombstones and empty values
 * are rejected. millrace.h is the header-only ABI v1 binding (include it in exactly one file). */
#include <stdio.h>

#include "millrace.h"

int millrace_transform(const millrace_record *r) {
    static const char empty[] = "empty record";
    char line[512];
    int n;
    if (!r->value || r->value_len == 0) {
        millrace_reject(empty, sizeof empty - 1);
        return 0;
    }
    /* Topic names are [a-zA-Z0-9._-]: nothing to escape in a tag value. */
    n = snprintf(line, sizeof line, "MEASUREMENT,topic=%.*s bytes=%ui", (int)r->topic_len, r->topic, r->value_len);
    if (n < 0 || n >= (int)sizeof line) {
        millrace_reject("topic too long", 14);
        return 0;
    }
    millrace_emit_point(line, (uint32_t)n);
    return 0;
}
"#
            .replace("MEASUREMENT", &format!("{measurement}_records")),
        ),
        file(
            "test.c",
            r#"/* Native unit test: the plugin with stub host imports, fed records in the ABI v1 encoding. */
#include <assert.h>
#include <stdio.h>

#include "plugin.c"

static char last_point[512];
static char last_reject[512];

int32_t millrace_emit_point(const char *line, uint32_t len) { snprintf(last_point, sizeof last_point, "%.*s", (int)len, line); return 0; }
int32_t millrace_emit_document(const char *i, uint32_t il, const char *b, uint32_t bl, const char *d, uint32_t dl) {
    (void)i; (void)il; (void)b; (void)bl; (void)d; (void)dl; return 0;
}
void millrace_log(int32_t level, const char *msg, uint32_t len) { (void)level; (void)msg; (void)len; }
void millrace_reject(const char *reason, uint32_t len) { snprintf(last_reject, sizeof last_reject, "%.*s", (int)len, reason); }

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Encodes a record on topic "test" (no key, no headers) into the plugin's input buffer and processes it. */
static void process(const char *value) {
    uint32_t vlen = (uint32_t)strlen(value), len = 40 + 4 + vlen;
    uint8_t *buf = millrace_input(len);
    memset(buf, 0, 40);
    put32(buf + 24, 4);
    put32(buf + 28, MILLRACE_ABSENT);
    put32(buf + 32, vlen);
    memcpy(buf + 40, "test", 4);
    memcpy(buf + 44, value, vlen);
    last_point[0] = last_reject[0] = 0;
    assert(millrace_process(buf, len) == 0);
}

int main(void) {
    process("{\"a\":1}");
    assert(strcmp(last_point, "MEASUREMENT,topic=test bytes=7i") == 0);
    process("");
    assert(strcmp(last_reject, "empty record") == 0);
    printf("1 passed, 0 failed\n");
    return 0;
}
"#
            .replace("MEASUREMENT", &format!("{measurement}_records")),
        ),
        script(
            "build.sh",
            format!(
                "#!/usr/bin/env bash\n# Builds {name}.wasm with clang and wasi-libc (Debian: clang, lld, wasi-libc, \
                 libclang-rt-14-dev-wasm32).\nset -euo pipefail\ncd \"$(dirname \"${{BASH_SOURCE[0]}}\")\"\n\
                 clang --target=wasm32-wasi -O2 -Wall -Wextra -Werror -mexec-model=reactor \\\n    \
                 -Wl,--strip-debug -Wl,-z,stack-size=65536 -o {name}.wasm plugin.c\n"
            ),
        ),
        script(
            "test.sh",
            "#!/usr/bin/env bash\n# The transform's unit test, natively: the wasm-only attributes of millrace.h are ignored.\n\
             set -euo pipefail\ncd \"$(dirname \"${BASH_SOURCE[0]}\")\"\n\
             out=$(mktemp)\ntrap 'rm -f \"$out\"' EXIT\n\
             clang -O1 -Wall -Wno-unknown-attributes -o \"$out\" test.c\n\"$out\"\n"
                .into(),
        ),
        file("samples.ndjson", SAMPLES.into()),
    ])
}
