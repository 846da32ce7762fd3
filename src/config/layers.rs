//! The layers a configuration is stacked from (the defaults, then files, then environment
//! variables) and the one rule that stacks them.
//!
//! Each layer is checked on its own as it is read, against the same structs the program uses,
//! so that a refusal names the file or variable, the key and the line: once parsed into a
//! `Value`, YAML has forgotten its lines. Only checked layers are merged.

use super::{Config, ConfigError, Search, SYSTEM_CONFIG};
use std::path::{Path, PathBuf};
use yaml_serde::{Mapping, Value};

/// What one file or variable sets: the keys it names, with their checked values.
#[derive(Debug)]
pub struct Layer {
    /// The file, or `environment variable NAME`.
    pub source: String,
    pub value: Value,
}

impl Layer {
    /// A file's text as a layer; `None` when it sets nothing (empty, or only comments).
    pub fn from_file(text: &str, source: &str) -> Result<Option<Layer>, ConfigError> {
        let invalid = |e: yaml_serde::Error| ConfigError::Invalid {
            source: source.to_string(),
            message: e.to_string(),
        };
        let written: Value = yaml_serde::from_str(text).map_err(invalid)?;
        if written.is_null() {
            return Ok(None);
        }
        // Checked from the text, not from `written`: only the text still knows its lines.
        let checked: Config = yaml_serde::from_str(text).map_err(invalid)?;
        Layer::new(source.to_string(), written, &checked).map(Some)
    }

    /// What `written` sets, with each value as the checks read it: a header value written `600`
    /// is the text "600", where `written` holds a number.
    fn new(source: String, written: Value, checked: &Config) -> Result<Layer, ConfigError> {
        let checked = yaml_serde::to_value(checked).map_err(|e| ConfigError::Invalid {
            source: source.clone(),
            message: e.to_string(),
        })?;
        let value = keys_of(&normalized(written), &checked);
        Ok(Layer { source, value })
    }

    /// One layer per `EVENTSOURCED_<SECTION>_<KEY>` that `variable` finds, in the order of the keys.
    pub fn from_environment(
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Layer>, ConfigError> {
        let mut layers = Vec::new();
        for key in environment_keys() {
            let name = environment_variable(&key.section, &key.key);
            let Some(raw) = variable(&name) else {
                continue;
            };
            let source = format!("environment variable {name}");
            let invalid = |e: yaml_serde::Error| ConfigError::Invalid {
                source: source.clone(),
                message: e.to_string(),
            };
            let value = match key.reading {
                Reading::Text => Value::String(raw),
                Reading::CommaList => raw
                    .split(',')
                    .map(|item| Value::String(item.trim().to_string()))
                    .collect(),
                Reading::Yaml => yaml_serde::from_str(&raw).map_err(invalid)?,
            };
            // An empty variable sets nothing, as an unset one.
            if value.is_null() {
                continue;
            }
            // `tls.cert` is `tls: {cert: …}`.
            let nested = key.key.rsplit('.').fold(value, |inner, part| {
                Value::from(Mapping::from_iter([(Value::from(part), inner)]))
            });
            let written = Value::from(Mapping::from_iter([(Value::from(key.section), nested)]));
            let checked: Config = yaml_serde::from_value(written.clone()).map_err(invalid)?;
            layers.push(Layer::new(source, written, &checked)?);
        }
        Ok(layers)
    }
}

/// The files `search` names, each as a layer, in the order they apply.
pub fn files(search: Search) -> Result<Vec<Layer>, ConfigError> {
    let paths: Vec<(PathBuf, bool)> = match search {
        Search::File(path) => vec![(path, true)],
        Search::Default => {
            let mut paths = vec![(PathBuf::from(SYSTEM_CONFIG), false)];
            let beside = std::env::current_exe().ok();
            if let Some(dir) = beside.as_deref().and_then(Path::parent) {
                paths.push((dir.join("config.yml"), false));
            }
            paths
        }
    };
    let mut layers = Vec::new();
    for (path, required) in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(ConfigError::Read { path, error }),
        };
        layers.extend(Layer::from_file(&text, &path.display().to_string())?);
    }
    Ok(layers)
}

/// `layers` stacked over the defaults: scalars and lists replace, maps merge key by key (as the
/// original's YAML decoder does when it reads into an existing value), except `auth`, where the
/// last layer that names a secret decides, whichever form it uses.
pub fn merged(layers: Vec<Layer>) -> Value {
    let mut merged = defaults();
    for layer in layers {
        if names_a_secret(&layer.value) {
            if let Some(auth) = merged.get_mut("auth").and_then(Value::as_mapping_mut) {
                for &(_, key) in SECRET_FORMS {
                    auth.remove(key);
                }
            }
        }
        merge(&mut merged, layer.value);
    }
    merged
}

/// The defaults as the merge and the environment see them: the `-c` dump of `Config::default()`.
pub fn defaults() -> Value {
    yaml_serde::to_value(Config::default()).expect("the defaults are plain data")
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        // A section written with nothing under it sets nothing.
        (_, Value::Null) => {}
        (Value::Mapping(base), Value::Mapping(over)) => {
            for (key, value) in over {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, over) => *base = over,
    }
}

fn names_a_secret(layer: &Value) -> bool {
    SECRET_FORMS
        .iter()
        .any(|&(section, key)| layer[section].get(key).is_some())
}

/// The keys `written` names, each with its value in `checked`.
fn keys_of(written: &Value, checked: &Value) -> Value {
    match (written, checked) {
        (Value::Null, _) => Value::Null,
        (Value::Mapping(written), Value::Mapping(checked)) => Value::Mapping(
            written
                .iter()
                .filter_map(|(key, written)| {
                    Some((key.clone(), keys_of(written, checked.get(key)?)))
                })
                .collect(),
        ),
        (_, checked) => checked.clone(),
    }
}

/// Spellings a layer may use for one key become that key, so that the merge sees them as one:
/// `queue.expire` (the seed README's) is `queue.expires`, and header names take the case they
/// are sent in.
fn normalized(mut layer: Value) -> Value {
    if let Some(queue) = layer.get_mut("queue").and_then(Value::as_mapping_mut) {
        if let Some(expire) = queue.remove("expire") {
            queue.insert("expires".into(), expire);
        }
    }
    if let Some(header) = layer.get_mut("header").and_then(Value::as_mapping_mut) {
        for (_, headers) in header.iter_mut() {
            if let Some(headers) = headers.as_mapping_mut() {
                *headers = std::mem::take(headers)
                    .into_iter()
                    .map(|(name, value)| match name {
                        Value::String(name) => (super::canonical_header_name(&name).into(), value),
                        other => (other, value),
                    })
                    .collect();
            }
        }
    }
    layer
}

/// How an environment variable's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// Taken as it is: a pattern such as `${query:id}` or a secret is text, whatever YAML
    /// would make of it.
    Text,
    /// Comma-separated, each item text: broker URLs.
    CommaList,
    /// Read as YAML: numbers, booleans, lists, maps.
    Yaml,
}

/// A key an environment variable can set.
#[derive(Debug)]
pub struct EnvironmentKey {
    pub section: String,
    pub key: String,
    pub reading: Reading,
}

/// Sections within sections, whose keys get variables of their own
/// (`EVENTSOURCED_SERVER_TLS_CERT` for `server.tls.cert`).
const SUBSECTIONS: &[(&str, &str)] = &[("server", "tls"), ("broker", "tls")];

/// The keys whose variables are read with `Reading::CommaList`.
const COMMA_LISTS: &[(&str, &str)] = &[("broker", "node")];

/// The two forms of the secret in force: the last layer that names either decides.
const SECRET_FORMS: &[(&str, &str)] = &[("auth", "secret"), ("auth", "secret_file")];

/// The `auth` keys: the section is left out of the default dump (it is off unless a secret is
/// set), so the defaults cannot name them. The secrets are text.
const AUTH_KEYS: &[(&str, &str, Reading)] = &[
    ("auth", "secret", Reading::Text),
    ("auth", "secret_file", Reading::Text),
    ("auth", "previous_secret", Reading::Text),
    ("auth", "max_ttl", Reading::Yaml),
];

/// Every key the defaults hold, and the secrets: the same description as the files', so that a
/// new key gets its variable by being given a default. A key whose default is text is read as
/// text.
pub fn environment_keys() -> Vec<EnvironmentKey> {
    let defaults = defaults();
    let described = defaults.as_mapping().into_iter().flatten();
    let mut keys = Vec::new();
    for (section, values) in described {
        let (Some(section), Some(values)) = (section.as_str(), values.as_mapping()) else {
            continue;
        };
        let mut flat = Vec::new();
        for (key, default) in values {
            let Some(key) = key.as_str() else {
                continue;
            };
            match default.as_mapping() {
                Some(inner) if SUBSECTIONS.contains(&(section, key)) => {
                    flat.extend(inner.iter().filter_map(|(sub, default)| {
                        Some((format!("{key}.{}", sub.as_str()?), default))
                    }));
                }
                _ => flat.push((key.to_string(), default)),
            }
        }
        for (key, default) in flat {
            let key = key.as_str();
            let reading = if COMMA_LISTS.contains(&(section, key)) {
                Reading::CommaList
            } else if default.is_string() {
                Reading::Text
            } else {
                Reading::Yaml
            };
            keys.push(EnvironmentKey {
                section: section.to_string(),
                key: key.to_string(),
                reading,
            });
        }
    }
    keys.extend(
        AUTH_KEYS
            .iter()
            .map(|&(section, key, reading)| EnvironmentKey {
                section: section.to_string(),
                key: key.to_string(),
                reading,
            }),
    );
    keys
}

/// `EVENTSOURCED_<SECTION>_<KEY>`; a key within a subsection, `tls.cert`, is `TLS_CERT`.
pub fn environment_variable(section: &str, key: &str) -> String {
    format!(
        "EVENTSOURCED_{}_{}",
        section.to_uppercase(),
        key.to_uppercase().replace('.', "_")
    )
}
