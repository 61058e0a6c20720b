//! Standalone mode's source: Kubernetes manifests in YAML (or JSON) files.
//!
//! The files are read exactly as `kubectl apply -f` would take them: one file or a
//! directory of `.yaml`/`.yml`/`.json` files (not recursive), several documents per file,
//! objects without a namespace land in `default`. The files are the whole truth: each load
//! builds a fresh snapshot from scratch.
//!
//! Every problem names the file, the line (and column, for syntax errors) and, once known,
//! the object as `Kind namespace/name`. A document of a kind Keyway does not read is
//! skipped with a [`Warning`]; a malformed document fails the whole load, so a half-written
//! file is never applied in part. A key written twice in one mapping is an error, as
//! `kubectl apply` makes it (YAML readers disagree on which one wins; a Secret's keys must
//! not depend on that).
//!
//! Secrets are read through their own decoder, whose errors never repeat a value: serde's
//! messages quote the offending input (`invalid type: string "<the key>"`), and a Secret's
//! input is its keys.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use keyway_model::snapshot::{key_of, Objects};
use keyway_model::{Kind, Object, ObjectKey, Origin, Secret, Snapshot};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::yaml_docs::{self, Document};

/// A snapshot read from files, with everything that was skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The objects read.
    pub snapshot: Snapshot,
    /// Documents that were skipped, each with its reason.
    pub warnings: Vec<Warning>,
    /// Every file that was read, in order.
    pub files: Vec<PathBuf>,
    /// A hash of every file's path and content: equal fingerprints, equal snapshots.
    pub fingerprint: u64,
}

/// A document that was read but not used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// File and line of the document.
    pub origin: Origin,
    /// What was skipped and why.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.origin, self.message)
    }
}

/// Why a load failed: one entry per problem, each pointing at a file and line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadError {
    /// File the problem is in.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// `Kind namespace/name` of the object, once known.
    pub resource: Option<String>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        if let Some(resource) = &self.resource {
            write!(f, ": {resource}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for LoadError {}

/// Reads every path (a file or a directory of manifests) into one snapshot.
///
/// Returns every problem found, not just the first, so one run of `keyway check` shows
/// them all.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<LoadError>> {
    FileSource::new(paths.to_vec()).load()
}

/// Standalone mode's source: manifest paths, plus every file's parsed objects keyed by its
/// content.
///
/// Each load reads every file (the files are the whole truth) but parses only those whose
/// content changed since the previous load: with a million keys in a thousand Secret files,
/// a change to one Secret costs one file's parse and digests, not a million.
pub struct FileSource {
    paths: Vec<PathBuf>,
    cache: Mutex<HashMap<PathBuf, ParsedFile>>,
}

/// One file's objects as parsed from a given content.
struct ParsedFile {
    content_hash: u64,
    loaded: Loaded,
    errors: Vec<LoadError>,
}

impl FileSource {
    /// A source reading `paths` (files or directories of manifests).
    pub fn new(paths: Vec<PathBuf>) -> Self {
        FileSource {
            paths,
            cache: Mutex::default(),
        }
    }

    /// The paths given.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reads every path into one snapshot, re-parsing only files that changed.
    pub fn load(&self) -> Result<Loaded, Vec<LoadError>> {
        use std::hash::{Hash as _, Hasher as _};
        let mut errors = Vec::new();
        let mut files = Vec::new();
        for path in &self.paths {
            list_manifests(path, &mut files, &mut errors);
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = HashMap::with_capacity(files.len());
        let mut out = Loaded::default();
        let mut fingerprint = std::collections::hash_map::DefaultHasher::new();
        for file in files {
            let display = file.display().to_string();
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(err) => {
                    errors.push(io_error(&display, err));
                    continue;
                }
            };
            let content_hash = {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                text.hash(&mut h);
                h.finish()
            };
            display.hash(&mut fingerprint);
            content_hash.hash(&mut fingerprint);
            let parsed = match cache.remove(&file) {
                Some(p) if p.content_hash == content_hash => p,
                _ => {
                    let mut loader = Loader::default();
                    loader.add_text(Arc::from(display.as_str()), &text);
                    ParsedFile {
                        content_hash,
                        loaded: loader.loaded,
                        errors: loader.errors,
                    }
                }
            };
            errors.extend(parsed.errors.iter().cloned());
            out.warnings.extend(parsed.loaded.warnings.iter().cloned());
            out.snapshot
                .merge_from(&parsed.loaded.snapshot, |kind, key, first, again| {
                    errors.push(defined_twice(kind, key, first, again));
                });
            out.files.push(file.clone());
            next.insert(file, parsed);
        }
        *cache = next;
        if errors.is_empty() {
            out.fingerprint = fingerprint.finish();
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// Parses manifests given as text, as if read from a file named `path` (tests, stdin).
pub fn load_str(path: &str, text: &str) -> Result<Loaded, Vec<LoadError>> {
    let mut loader = Loader::default();
    loader.add_text(Arc::from(path), text);
    if loader.errors.is_empty() {
        Ok(loader.loaded)
    } else {
        Err(loader.errors)
    }
}

/// The manifest files a path names: itself, or a directory's `.yaml`/`.yml`/`.json` files
/// in name order (not recursive).
fn list_manifests(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<LoadError>) {
    let display = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) => return errors.push(io_error(&display, err)),
    };
    if !meta.is_dir() {
        return files.push(path.to_path_buf());
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(err) => return errors.push(io_error(&display, err)),
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_manifest(p) && p.is_file())
        .collect();
    found.sort();
    files.extend(found);
}

fn io_error(path: &str, err: std::io::Error) -> LoadError {
    LoadError {
        path: path.to_string(),
        line: None,
        column: None,
        resource: None,
        message: format!("cannot read: {err}"),
    }
}

/// The error for an object defined again at `again`, first at `first`.
fn defined_twice(kind: Kind, key: &ObjectKey, first: &Origin, again: &Origin) -> LoadError {
    let (path, line) = match again {
        Origin::File { path, line } => (path.to_string(), Some(*line)),
        other => (other.to_string(), None),
    };
    LoadError {
        path,
        line,
        column: None,
        resource: Some(format!("{kind} {key}")),
        message: format!("defined twice: first at {first}, again here"),
    }
}

#[derive(Default)]
struct Loader {
    loaded: Loaded,
    errors: Vec<LoadError>,
    seen: BTreeMap<(Kind, ObjectKey), Origin>,
}

/// The part of every object needed to know what it is, read from its parsed document.
struct Head {
    api_version: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

impl Head {
    fn of(doc: &serde_yaml_ng::Value) -> Head {
        let text = |v: &serde_yaml_ng::Value| v.as_str().map(str::to_string);
        Head {
            api_version: text(&doc["apiVersion"]),
            kind: text(&doc["kind"]),
            name: text(&doc["metadata"]["name"]),
            namespace: text(&doc["metadata"]["namespace"]),
        }
    }
}

impl Loader {
    fn add_text(&mut self, path: Arc<str>, text: &str) {
        for doc in yaml_docs::split(text) {
            self.add_document(&path, &doc);
        }
    }

    fn add_document(&mut self, path: &Arc<str>, doc: &Document<'_>) {
        let origin = Origin::File {
            path: path.clone(),
            line: doc.content_line(),
        };
        // One generic parse first: syntax errors and duplicate keys surface here, with their
        // line, before anything is read as a typed object.
        let parsed: serde_yaml_ng::Value = match serde_yaml_ng::from_str(doc.text) {
            Ok(v) => v,
            Err(err) => return self.errors.push(yaml_error(path, doc, None, &err)),
        };
        if parsed.is_null() {
            return;
        }
        let head = Head::of(&parsed);
        drop(parsed);
        let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
            return self.errors.push(LoadError {
                path: path.to_string(),
                line: Some(doc.content_line()),
                column: None,
                resource: None,
                message: "not a Kubernetes object: `apiVersion` and `kind` are required".into(),
            });
        };
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let Some(known) = known_kind(group, &api_version, &kind) else {
            let name = head.name.unwrap_or_default();
            let ns = head.namespace.map(|n| format!("{n}/")).unwrap_or_default();
            return self.loaded.warnings.push(Warning {
                origin,
                message: format!(
                    "skipped {api_version} {kind} {ns}{name}: Keyway does not read this kind"
                ),
            });
        };
        let resource = format!(
            "{kind} {}{}",
            if known.is_namespaced() {
                format!("{}/", head.namespace.as_deref().unwrap_or("default"))
            } else {
                String::new()
            },
            head.name.as_deref().unwrap_or("<unnamed>")
        );
        if head.name.as_deref().unwrap_or("").is_empty() {
            return self.errors.push(LoadError {
                path: path.to_string(),
                line: Some(doc.content_line()),
                column: None,
                resource: Some(resource),
                message: "`metadata.name` is required".into(),
            });
        }
        let snap = &mut self.loaded.snapshot;
        let result = match known {
            Kind::GatewayClass => parse_into(doc, known, origin, &mut snap.gateway_classes),
            Kind::Namespace => parse_into(doc, known, origin, &mut snap.namespaces),
            Kind::Gateway => parse_into(doc, known, origin, &mut snap.gateways),
            Kind::HttpRoute => parse_into(doc, known, origin, &mut snap.http_routes),
            Kind::ReferenceGrant => parse_into(doc, known, origin, &mut snap.reference_grants),
            Kind::TrafficPolicy => parse_into(doc, known, origin, &mut snap.traffic_policies),
            Kind::Backend => parse_into(doc, known, origin, &mut snap.backends),
            Kind::Service => parse_into(doc, known, origin, &mut snap.services),
            Kind::EndpointSlice => parse_into(doc, known, origin, &mut snap.endpoint_slices),
            Kind::Secret => match parse_secret(doc, origin, &mut snap.secrets) {
                Ok(inserted) => Ok(inserted),
                Err(SecretError::Yaml(e)) => {
                    let mut err = yaml_error(path, doc, Some(resource), &e);
                    err.message = redact_values(&err.message);
                    return self.errors.push(err);
                }
                Err(SecretError::Base64(entry)) => {
                    return self.errors.push(LoadError {
                        path: path.to_string(),
                        line: Some(doc.content_line()),
                        column: None,
                        resource: Some(resource),
                        message: format!(
                            "data.{entry}: not valid base64 (use stringData for plain text)"
                        ),
                    })
                }
            },
        };
        match result {
            Ok((key, origin)) => {
                if let Some(first) = self.seen.insert((known, key), origin.clone()) {
                    self.errors.push(LoadError {
                        path: path.to_string(),
                        line: Some(doc.content_line()),
                        column: None,
                        resource: Some(resource),
                        message: format!("defined twice: first at {first}, again here"),
                    });
                }
            }
            Err(err) => self
                .errors
                .push(yaml_error(path, doc, Some(resource), &err)),
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Maps `apiVersion` + `kind` to the kinds Keyway reads.
fn known_kind(group: &str, api_version: &str, kind: &str) -> Option<Kind> {
    const GATEWAY: &str = "gateway.networking.k8s.io";
    const KGATEWAY: &str = keyway_model::kgateway::GROUP;
    let k = match (group, kind) {
        ("", "Namespace") if api_version == "v1" => Kind::Namespace,
        ("", "Secret") if api_version == "v1" => Kind::Secret,
        ("", "Service") if api_version == "v1" => Kind::Service,
        ("discovery.k8s.io", "EndpointSlice") if api_version.ends_with("/v1") => {
            Kind::EndpointSlice
        }
        (GATEWAY, "GatewayClass") if api_version.ends_with("/v1") => Kind::GatewayClass,
        (GATEWAY, "Gateway") if api_version.ends_with("/v1") => Kind::Gateway,
        (GATEWAY, "HTTPRoute") if api_version.ends_with("/v1") => Kind::HttpRoute,
        (GATEWAY, "ReferenceGrant") => Kind::ReferenceGrant,
        (KGATEWAY, "TrafficPolicy") => Kind::TrafficPolicy,
        (KGATEWAY, "Backend") => Kind::Backend,
        _ => return None,
    };
    Some(k)
}

type Inserted = Result<(ObjectKey, Origin), serde_yaml_ng::Error>;

fn parse_into<T>(doc: &Document<'_>, kind: Kind, origin: Origin, into: &mut Objects<T>) -> Inserted
where
    T: DeserializeOwned + kube::Resource,
{
    let value: T = serde_yaml_ng::from_str(doc.text)?;
    let mut key = key_of(value.meta(), kind);
    if kind.is_namespaced() && key.namespace.is_empty() {
        key.namespace = "default".into();
    }
    let mut value = value;
    if kind.is_namespaced() {
        value.meta_mut().namespace = Some(key.namespace.clone());
    }
    into.insert(
        key.clone(),
        Object {
            origin: origin.clone(),
            value,
        },
    );
    Ok((key, origin))
}

/// A Secret as written: values kept as text, so a bad value can be reported without
/// repeating any of it (the upstream type's base64 errors quote offending characters).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecret {
    #[serde(default)]
    metadata: keyway_model::core::ObjectMeta,
    #[serde(rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    data: Option<SecretEntries>,
    #[serde(default)]
    string_data: Option<SecretEntries>,
}

/// `data` or `stringData`: entry name to text. Its decoder reports a wrong shape in words
/// of its own and never with the value it found.
struct SecretEntries(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for SecretEntries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EntriesVisitor)
    }
}

struct EntriesVisitor;

const NOT_A_MAP: &str = "must be a map of entry name (the client id) to value";

macro_rules! refuse_scalars {
    ($($name:ident: $ty:ty),*) => {$(
        fn $name<E: serde::de::Error>(self, _: $ty) -> Result<Self::Value, E> {
            Err(E::custom(NOT_A_MAP))
        }
    )*};
}

impl<'de> serde::de::Visitor<'de> for EntriesVisitor {
    type Value = SecretEntries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NOT_A_MAP)
    }

    refuse_scalars!(visit_str: &str, visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64);

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(SecretEntries(BTreeMap::new()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
        Err(serde::de::Error::custom(NOT_A_MAP))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let text = map.next_value::<EntryText>().map_err(|_| {
                serde::de::Error::custom(format_args!(
                    "entry {name}: the value must be text, not a list or a map"
                ))
            })?;
            // A name given twice never gets here: the document's generic parse refuses it.
            out.insert(name, text.0);
        }
        Ok(SecretEntries(out))
    }
}

/// One entry's value: any scalar, as its text.
struct EntryText(String);

impl<'de> Deserialize<'de> for EntryText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(EntryText)
    }
}

fn parse_secret(
    doc: &Document<'_>,
    origin: Origin,
    into: &mut Objects<Secret>,
) -> Result<(ObjectKey, Origin), SecretError> {
    let raw: RawSecret = serde_yaml_ng::from_str(doc.text).map_err(SecretError::Yaml)?;
    let mut data = BTreeMap::new();
    for (name, text) in raw.data.map(|d| d.0).unwrap_or_default() {
        let compact: String = text.split_ascii_whitespace().collect();
        match base64::engine::general_purpose::STANDARD.decode(compact) {
            Ok(bytes) => {
                data.insert(name, k8s_openapi::ByteString(bytes));
            }
            Err(_) => return Err(SecretError::Base64(name)),
        }
    }
    let upstream = k8s_openapi::api::core::v1::Secret {
        metadata: raw.metadata,
        type_: raw.type_,
        data: Some(data),
        string_data: raw.string_data.map(|d| d.0),
        ..Default::default()
    };
    let mut secret = Secret::from_k8s(upstream);
    let key = key_of(&secret.metadata, Kind::Secret);
    secret.metadata.namespace = Some(key.namespace.clone());
    into.insert(
        key.clone(),
        Object {
            origin: origin.clone(),
            value: secret,
        },
    );
    Ok((key, origin))
}

enum SecretError {
    Yaml(serde_yaml_ng::Error),
    Base64(String),
}

/// Drops every quoted part of a message about a Secret (`invalid type: string "..."`,
/// `` `...` ``): a last line of defence, should some decoder still quote its input.
fn redact_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '`' || c == '"' => {
                quote = Some(c);
                out.push_str("<redacted>");
            }
            None => out.push(c),
        }
    }
    out
}

/// 1-based line and column of the `index`th character of `text`, counting lines as
/// editors do (by `\n`; YAML also breaks lines at a lone `\r`, which would point past the
/// end of a file written with stray carriage returns).
fn line_and_column(text: &str, index: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    for c in text.chars().take(index) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// The YAML reader reports a duplicate key at the start of its mapping; point at the
/// second occurrence instead, when the mapping is written one entry per line.
fn second_occurrence(
    doc: &Document<'_>,
    message: &str,
    from: usize,
) -> Option<(usize, Option<usize>)> {
    let key = message
        .split("duplicate entry with key \"")
        .nth(1)?
        .strip_suffix('"')?;
    let skip = from.checked_sub(doc.first_line + 1)?;
    let mut seen = 0;
    for (i, l) in doc.text.lines().enumerate().skip(skip) {
        let t = l.trim_start().trim_start_matches("- ");
        let named = t
            .strip_prefix(key)
            .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
            .or_else(|| t.strip_prefix(&format!("'{key}'")));
        if named.is_some_and(|rest| rest.trim_start().starts_with(':')) {
            seen += 1;
            if seen == 2 {
                return Some((
                    doc.first_line + i + 1,
                    Some(l.len() - l.trim_start().len() + 1),
                ));
            }
        }
    }
    None
}

/// Turns a YAML error into a [`LoadError`] at the right line of the file.
fn yaml_error(
    path: &Arc<str>,
    doc: &Document<'_>,
    resource: Option<String>,
    err: &serde_yaml_ng::Error,
) -> LoadError {
    let text = err.to_string();
    let message = match text.rfind(" at line ") {
        Some(at) if err.location().is_some() => text[..at].to_string(),
        _ => text,
    };
    let (mut line, mut column) = match err.location() {
        Some(loc) => {
            let (l, c) = line_and_column(doc.text, loc.index());
            (doc.first_line + l, Some(c))
        }
        None => (doc.content_line(), None),
    };
    if let Some(at) = second_occurrence(doc, &message, line) {
        (line, column) = at;
    }
    LoadError {
        path: path.to_string(),
        line: Some(line),
        column,
        resource,
        message,
    }
}
