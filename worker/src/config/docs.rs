//! The configuration reference (`docs/configuration.md`), generated from the one declaration of every option:
//! the JSON schema that `schemars` derives from the section structs carries their `///` comments, types and
//! serde defaults, and is rendered here as markdown, a table per section. Nothing lists the options by hand;
//! a test fails when the checked-in file differs from what the code says.

use serde_json::{Map, Value};

use super::ConfigFile;

/// The human-written introduction above the generated tables.
const HEADER: &str = include_str!("reference_header.md");

/// Prose is wrapped at this width (tables are not).
const WIDTH: usize = 110;

/// The configuration reference in markdown (`millrace config docs`).
pub fn reference_markdown() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<ConfigFile>();
    let root = schema.as_value();
    let doc = Doc {
        defs: root.get("$defs").and_then(Value::as_object),
    };
    let mut out = HEADER.trim_end().to_string();
    out.push('\n');
    for (key, prop) in doc.properties(root) {
        let schema = doc.resolve(prop);
        match doc.kind(&schema) {
            Kind::Table => doc.section(&mut out, 2, &format!("[{key}]"), key, prop, &schema),
            Kind::TableList(item) => doc.section(&mut out, 2, &format!("[[{key}]]"), key, prop, &item),
            Kind::Value => {
                out.push_str(&format!("\n## `{key}`\n\n"));
                table(&mut out, &[doc.row(key, prop, is_required(root, key))]);
            }
        }
    }
    out
}

/// What a property is, for the layout.
enum Kind {
    /// A table of options (`[kafka]`).
    Table,
    /// A list of tables (`[[bindings]]`), with the schema of one.
    TableList(Value),
    /// A value: a row of its table.
    Value,
}

struct Doc<'a> {
    defs: Option<&'a Map<String, Value>>,
}

impl Doc<'_> {
    /// The schema a property stands for: references followed, `null` alternatives of options dropped.
    fn resolve(&self, schema: &Value) -> Value {
        if let Some(name) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix("#/$defs/"))
            && let Some(def) = self.defs.and_then(|d| d.get(name))
        {
            return self.resolve(def);
        }
        for combinator in ["anyOf", "oneOf"] {
            if let Some(alternatives) = schema.get(combinator).and_then(Value::as_array) {
                let non_null: Vec<&Value> = alternatives
                    .iter()
                    .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
                    .collect();
                if let [one] = non_null.as_slice() {
                    return self.resolve(one);
                }
            }
        }
        schema.clone()
    }

    fn kind(&self, schema: &Value) -> Kind {
        if schema.get("properties").is_some() {
            return Kind::Table;
        }
        if type_of(schema) == Some("array")
            && let Some(item) = schema.get("items").map(|i| self.resolve(i))
            && item.get("properties").is_some()
        {
            return Kind::TableList(item);
        }
        Kind::Value
    }

    /// A table's properties: the required ones in their declared order, then the others by name.
    fn properties<'v>(&self, schema: &'v Value) -> Vec<(&'v str, &'v Value)> {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return Vec::new();
        };
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out: Vec<(&str, &Value)> = required
            .iter()
            .filter_map(|k| props.get_key_value(*k).map(|(k, v)| (k.as_str(), v)))
            .collect();
        out.extend(
            props
                .iter()
                .filter(|(k, _)| !required.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v)),
        );
        out
    }

    /// A section: heading, documentation, the table of its values, then its
    /// nested tables one level down.
    fn section(&self, out: &mut String, level: usize, title: &str, path: &str, prop: &Value, schema: &Value) {
        out.push_str(&format!("\n{} `{title}`\n", "#".repeat(level)));
        // The table's own documentation (its type's); the field's short one when the type has none.
        if let Some(text) = description(schema).or_else(|| description(prop)) {
            for paragraph in paragraphs(text) {
                out.push('\n');
                out.push_str(&wrap(&paragraph, WIDTH));
                out.push('\n');
            }
        }
        let mut rows = Vec::new();
        let mut nested = Vec::new();
        for (key, p) in self.properties(schema) {
            let resolved = self.resolve(p);
            match self.kind(&resolved) {
                Kind::Value => rows.push(self.row(key, p, is_required(schema, key))),
                Kind::Table => nested.push((key, p, resolved)),
                Kind::TableList(item) => nested.push((key, p, item)),
            }
        }
        if !rows.is_empty() {
            out.push('\n');
            table(out, &rows);
        }
        for (key, p, resolved) in nested {
            let path = format!("{path}.{key}");
            self.section(out, level + 1, &format!("[{path}]"), &path, p, &resolved);
        }
    }

    /// One option: key, type, default, meaning.
    fn row(&self, key: &str, prop: &Value, required: bool) -> [String; 4] {
        let default = match (prop.get("x-default"), prop.get("default")) {
            (Some(Value::String(text)), _) => text.clone(),
            (_, Some(value)) if !value.is_null() => show_value(value),
            _ if required => "required".into(),
            _ => "none".into(),
        };
        let meaning = description(prop)
            .map(|d| paragraphs(d).join(" "))
            .unwrap_or_default();
        [
            format!("`{key}`"),
            self.type_name(prop),
            default,
            meaning.replace('|', "\\|"),
        ]
    }

    /// The type as a reader knows it: `duration` and `size` for the units, `secret` for secrets.
    fn type_name(&self, prop: &Value) -> String {
        let schema = self.resolve(prop);
        if let Some(format) = schema.get("format").and_then(Value::as_str)
            && matches!(format, "duration" | "size" | "secret")
        {
            return format.into();
        }
        let names: Vec<&str> = match (schema.get("enum"), schema.get("oneOf")) {
            (Some(Value::Array(values)), _) => values.iter().filter_map(Value::as_str).collect(),
            (_, Some(Value::Array(variants))) => variants
                .iter()
                .filter_map(|v| v.get("const").or_else(|| v.get("enum")?.get(0))?.as_str())
                .collect(),
            _ => Vec::new(),
        };
        if !names.is_empty() {
            return names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(" or ");
        }
        match type_of(&schema) {
            Some("array") => {
                let item = schema
                    .get("items")
                    .map_or_else(|| "value".into(), |i| self.type_name(i));
                format!("list of {item}s")
            }
            Some("object") => "table".into(),
            Some(t) => t.into(),
            None => "any".into(),
        }
    }
}

/// The JSON type of a schema, ignoring `null` (options).
fn type_of(schema: &Value) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

fn is_required(schema: &Value, key: &str) -> bool {
    schema
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(|r| r.iter().any(|k| k == key))
}

fn description(schema: &Value) -> Option<&str> {
    schema.get("description").and_then(Value::as_str)
}

/// A default as it is written in a file.
fn show_value(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("`{s}`"),
        other => format!("`{other}`"),
    }
}

/// A doc comment's paragraphs, each on one line.
fn paragraphs(doc: &str) -> Vec<String> {
    doc.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect()
}

/// Wraps a paragraph at `width` columns, between words.
fn wrap(paragraph: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line_len = 0;
    for word in paragraph.split(' ') {
        if line_len > 0 && line_len + 1 + word.len() > width {
            out.push('\n');
            line_len = 0;
        } else if line_len > 0 {
            out.push(' ');
            line_len += 1;
        }
        out.push_str(word);
        line_len += word.len();
    }
    out
}

fn table(out: &mut String, rows: &[[String; 4]]) {
    out.push_str("| key | type | default | meaning |\n| --- | --- | --- | --- |\n");
    for [key, ty, default, meaning] in rows {
        out.push_str(&format!("| {key} | {ty} | {default} | {meaning} |\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/configuration.md` is what the code says. `MILLRACE_BLESS=1` rewrites it instead of failing.
    #[test]
    fn the_configuration_reference_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let generated = reference_markdown();
        if std::env::var_os("MILLRACE_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            current == generated,
            "{} is stale: regenerate it with `cargo run -p millrace-worker --bin millrace -- config docs > \
             docs/configuration.md` or `MILLRACE_BLESS=1 cargo test -p millrace-worker --lib config::docs`",
            path.display()
        );
    }

    #[test]
    fn every_option_is_documented_with_its_type_and_default() {
        let md = reference_markdown();
        for row in [
            "| `brokers` | string | required |",
            "| `group_id` | string | `millrace` |",
            "| `session_timeout` | duration | `10s` |",
            "| `max_bytes` | size | `5MiB` |",
            "| `max_records` | integer | 5000 |",
            "| `lanes` | integer | number of cores |",
            "| `memory` | size | `32MiB` |",
            "| `verify_hostname` | boolean | `true` |",
            "| `cache_max_bytes` | size | `1GiB` |",
            "| `password` | secret | none |",
            "| `insecure` | list of strings | `[]` |",
        ] {
            assert!(md.contains(row), "no row starting {row}\n{md}");
        }
        for heading in [
            "## `[kafka]`",
            "### `[kafka.sasl]`",
            "## `[[bindings]]`",
            "### `[bindings.limits]`",
        ] {
            assert!(md.contains(heading), "no {heading}\n{md}");
        }
        for line in md.lines().filter(|l| l.starts_with("| `")) {
            assert!(!line.ends_with("|  |"), "an option without a doc comment: {line}");
        }
    }

    #[test]
    fn prose_wraps_between_words() {
        assert_eq!(wrap("aa bb cc", 5), "aa bb\ncc");
        assert_eq!(paragraphs("a\nb\n\nc"), ["a b", "c"]);
    }
}
