//! Manifests from YAML files and folders, the same objects `kubectl apply` would take, watched
//! for changes. No cluster is contacted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::cell::Cell;

use serde::de::{DeserializeSeed, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml_ng::Value;

use crate::config::{quoted, Warning};
use crate::state::{ClusterState, Object};

/// Objects read from one manifest text, and what was refused in it (document index, reason).
#[derive(Debug, Default, Clone)]
pub struct ParsedManifest {
    pub objects: Vec<Object>,
    pub refused: Vec<String>,
}

/// Parses a multi-document YAML text. A syntax error fails the whole text; a document of a
/// kind portier reads that does not fit its schema is refused alone, and so is one that is not a
/// Kubernetes object at all (no apiVersion or kind). Other kinds are ignored, as a folder may
/// hold a whole application.
pub fn parse_manifest(text: &str) -> Result<ParsedManifest, String> {
    let mut parsed = ParsedManifest::default();
    let budget = Cell::new(text.len().saturating_mul(EXPANSION_PER_BYTE).saturating_add(EXPANSION_ALLOWANCE));
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Bounded { budget: &budget }.deserialize(document).map_err(|e| {
            let e = e.to_string();
            // serde_yaml_ng's own limits, explained.
            let why = if e.contains("repetition limit exceeded") {
                " (its aliases, *name, are repeated too often; write the values out)"
            } else if e.contains("recursion limit exceeded") {
                " (it is nested more than 128 levels deep)"
            } else {
                ""
            };
            format!("YAML: {e}{why}")
        })?;
        collect(value, &format!("document {}", index + 1), &mut parsed);
    }
    Ok(parsed)
}

/// Aliases (`*name`) repeat what their anchor (`&name`) holds, so a few kilobytes of YAML can
/// expand to gigabytes. serde_yaml_ng caps the number of alias jumps, which stops the nested
/// "billion laughs", but one jump may copy a large anchored sequence, so a flat file of one
/// anchor and many aliases still grows with the square of its size (20 KB took a minute and
/// gigabytes). Expanded values are therefore paid for from a budget: one unit per node and per
/// byte of string. Without aliases a text never needs more than this per byte of it (a node
/// takes at least a byte, an escape at most grows a string by half).
const EXPANSION_PER_BYTE: usize = 4;
/// What aliases may add beyond that: enough for anchors used as intended (shared labels, a
/// certificate repeated a few times), far from a bomb.
const EXPANSION_ALLOWANCE: usize = 256 * 1024;

/// Builds a `serde_yaml_ng::Value` as its own `Deserialize` does, charging every node and string
/// to a budget, and fails as soon as the budget is spent.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Cell<usize>,
}

impl Bounded<'_> {
    fn charge<E: serde::de::Error>(self, units: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(units) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => Err(E::custom(
                "its aliases (*name) expand it far beyond its own size (a \"billion laughs\"?); write the values out",
            )),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Bool(b))
    }
    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Number(n.into()))
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        self.charge(1 + s.len())?;
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Value, E> {
        self.charge(1 + s.len())?;
        Ok(Value::String(s))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(1)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        self.deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        self.charge(1)?;
        let mut sequence = Vec::new();
        while let Some(item) = items.next_element_seed(self)? {
            sequence.push(item);
        }
        Ok(Value::Sequence(sequence))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.charge(1)?;
        let mut mapping = serde_yaml_ng::Mapping::new();
        while let Some(key) = entries.next_key_seed(self)? {
            if mapping.contains_key(&key) {
                let which = match &key {
                    Value::String(s) => format!("with key {s:?}"),
                    Value::Number(n) => format!("with key {n}"),
                    Value::Bool(b) => format!("with key `{b}`"),
                    Value::Null => "with null key".into(),
                    _ => "in YAML map".into(),
                };
                return Err(serde::de::Error::custom(format!("duplicate entry {which}")));
            }
            let value = entries.next_value_seed(self)?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, contents): (String, _) = data.variant()?;
        if tag.is_empty() {
            return Err(serde::de::Error::custom("empty YAML tag is not allowed"));
        }
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(serde_yaml_ng::value::TaggedValue {
            tag: serde_yaml_ng::value::Tag::new(tag),
            value,
        })))
    }
}

fn collect(value: serde_yaml_ng::Value, at: &str, out: &mut ParsedManifest) {
    if value.is_null() {
        return;
    }
    if !value.is_mapping() {
        out.refused.push(format!("{at}: it is not a Kubernetes object (a mapping with apiVersion and kind)"));
        return;
    }
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let name =
        value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or_default().to_string();
    let label = format!("{at} ({} {})", if kind.is_empty() { "object" } else { kind.as_str() }, quoted(&name));
    fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml_ng::Value) -> Result<Arc<T>, String> {
        serde_yaml_ng::from_value(value).map(Arc::new).map_err(|e| e.to_string())
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        (_, "List") => {
            if let Some(serde_yaml_ng::Value::Sequence(items)) = value.get("items").cloned() {
                for (i, item) in items.into_iter().enumerate() {
                    collect(item, &format!("{at} item {}", i + 1), out);
                }
            }
            return;
        }
        ("", _) | (_, "") => {
            let missing = match (api_version.is_empty(), kind.is_empty()) {
                (true, true) => "apiVersion and kind",
                (true, false) => "apiVersion",
                _ => "kind",
            };
            out.refused.push(format!("{label}: it has no {missing}, so it is not a Kubernetes object"));
            return;
        }
        ("networking.k8s.io/v1", "Ingress") => typed(value).map(Object::Ingress),
        (old @ ("extensions/v1beta1" | "networking.k8s.io/v1beta1"), "Ingress") => Err(format!(
            "apiVersion {old} was removed in Kubernetes 1.22; portier reads networking.k8s.io/v1 (to convert: \
             backend.serviceName and servicePort become backend.service.name and port.number or port.name, \
             and each path needs a pathType)"
        )),
        (other, "Ingress") => Err(format!("apiVersion {} is not supported; use networking.k8s.io/v1", quoted(other))),
        ("v1", "Service") => typed(value).map(Object::Service),
        ("v1", "Secret") => typed(value).map(Object::Secret),
        ("discovery.k8s.io/v1", "EndpointSlice") => typed(value).map(Object::EndpointSlice),
        _ => return,
    };
    match object {
        Ok(object) if name.is_empty() => {
            out.refused.push(format!("{label}: {} has no metadata.name", object.kind()));
        }
        Ok(object) if annotation_bytes(&object) > MAX_ANNOTATION_BYTES => {
            let annotations = object.metadata().annotations.iter().flatten();
            let largest = annotations.max_by_key(|(k, v)| k.len() + v.len()).map(|(k, _)| k.as_str());
            out.refused.push(format!(
                "{label}: its annotations take {} bytes, more than the {MAX_ANNOTATION_BYTES} Kubernetes allows in total (the largest is {})",
                annotation_bytes(&object),
                largest.unwrap_or_default()
            ));
        }
        Ok(object) => out.objects.push(object),
        Err(e) => out.refused.push(format!("{label}: {e}")),
    }
}

/// Kubernetes' limit on the total size of an object's annotations (keys and values): the API
/// server refuses larger objects, so the same objects from files are refused too.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

fn annotation_bytes(object: &Object) -> usize {
    object.metadata().annotations.iter().flatten().map(|(k, v)| k.len() + v.len()).sum()
}

/// The manifests named by `--manifests`, with the last good objects of each file: a file caught
/// half-written or broken keeps serving what it held before.
#[derive(Debug)]
pub struct ManifestSource {
    roots: Vec<PathBuf>,
    last_good: HashMap<PathBuf, Vec<Object>>,
    /// Files found empty that held objects before: an editor or `cat >` truncates before
    /// writing, so the first empty read keeps the old objects and asks for another look.
    emptied: HashMap<PathBuf, Option<std::time::SystemTime>>,
    unsettled: bool,
    /// Each file's last parse, by a hash of its text: an unchanged file is not parsed again, so
    /// a large one costs once, not on every change to any file.
    parsed: HashMap<PathBuf, (u64, Result<ParsedManifest, String>)>,
    /// Files parsed by the last load (the others were unchanged).
    last_parsed: usize,
}

impl ManifestSource {
    /// Fails when a path does not exist, naming it.
    pub fn new(roots: Vec<PathBuf>) -> Result<Self, String> {
        for root in &roots {
            std::fs::metadata(root).map_err(|e| format!("--manifests {}: {e}", root.display()))?;
        }
        Ok(Self {
            roots,
            last_good: HashMap::new(),
            emptied: Default::default(),
            unsettled: false,
            parsed: HashMap::new(),
            last_parsed: 0,
        })
    }

    /// True when the last load kept old contents for a file that looked mid-write: load again
    /// shortly, even without a change event, to settle it.
    pub fn unsettled(&self) -> bool {
        self.unsettled
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Reads every file now. Returns the merged state and the warnings for what was refused.
    pub fn load(&mut self) -> (ClusterState, Vec<Warning>) {
        self.unsettled = false;
        self.last_parsed = 0;
        let mut warnings = Vec::new();
        let mut files = Vec::new();
        for root in &self.roots {
            if root.is_dir() {
                list_yaml(root, &mut files, &mut warnings);
            } else {
                files.push(root.clone());
            }
        }
        files.sort();
        files.dedup();
        let mut state = ClusterState::default();
        let mut origin: HashMap<(&'static str, crate::state::ObjectKey), PathBuf> = HashMap::new();
        let mut seen = HashMap::new();
        for file in files {
            let display = file.display().to_string();
            let warn = |message: String, refused: bool| Warning { object: format!("file {display}"), message, refused };
            // A file that cannot be read, is not UTF-8 or is not valid YAML keeps its last good
            // objects: a write caught half-way can end inside a multi-byte character.
            let parsed = match read_text(&file) {
                Ok(text) if text.trim().is_empty() && self.looks_mid_write(&file) => None,
                Ok(text) => Some(self.parse(&file, &text)),
                Err(e) => Some(Err(e)),
            };
            let objects = match parsed {
                None => {
                    self.unsettled = true;
                    self.last_good.get(&file).cloned().unwrap_or_default()
                }
                Some(Ok(parsed)) => {
                    self.emptied.remove(&file);
                    for reason in parsed.refused {
                        warnings.push(warn(reason, true));
                    }
                    self.last_good.insert(file.clone(), parsed.objects.clone());
                    parsed.objects
                }
                Some(Err(e)) => {
                    let kept = self.last_good.get(&file).cloned().unwrap_or_default();
                    let note = if kept.is_empty() { "" } else { "; its previous contents are kept" };
                    warnings.push(warn(format!("{e}{note}"), true));
                    kept
                }
            };
            for object in objects {
                let id = (object.kind(), object.key());
                if state.insert(object) {
                    origin.insert(id, file.clone());
                } else {
                    let message = match origin.get(&id) {
                        Some(first) if *first == file => {
                            format!("{} {} is defined twice in this file; the later copy is ignored", id.0, id.1)
                        }
                        first => format!(
                            "{} {} is also defined in {}; this copy is ignored",
                            id.0,
                            id.1,
                            first.map(|p| p.display().to_string()).unwrap_or_default()
                        ),
                    };
                    warnings.push(warn(message, true));
                }
            }
            seen.insert(file, ());
        }
        self.last_good.retain(|path, _| seen.contains_key(path));
        self.parsed.retain(|path, _| seen.contains_key(path));
        tracing::debug!(files = seen.len(), parsed = self.last_parsed, "manifests read");
        (state, warnings)
    }

    /// `parse_manifest`, or its result from the last load when the text is the same.
    fn parse(&mut self, file: &Path, text: &str) -> Result<ParsedManifest, String> {
        use std::hash::{Hash, Hasher};
        // SipHash: a change that keeps the hash equal is a 1 in 2^64 accident.
        let mut hasher = std::hash::DefaultHasher::new();
        text.hash(&mut hasher);
        let hash = hasher.finish();
        if let Some((cached, result)) = self.parsed.get(file) {
            if *cached == hash {
                return result.clone();
            }
        }
        self.last_parsed += 1;
        let result = parse_manifest(text);
        self.parsed.insert(file.to_path_buf(), (hash, result.clone()));
        result
    }

    /// An empty file that held objects is taken as mid-write; it counts as empty only when found
    /// empty again with no write in between (the same modification time). A file rewritten in
    /// place again and again can be caught empty at every look, but never unchanged.
    fn looks_mid_write(&mut self, file: &Path) -> bool {
        let had_objects = self.last_good.get(file).is_some_and(|o| !o.is_empty());
        let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        match self.emptied.get(file) {
            _ if !had_objects => {}
            Some(seen) if *seen == modified => {}
            _ => {
                self.emptied.insert(file.to_path_buf(), modified);
                return true;
            }
        }
        self.emptied.remove(file);
        false
    }
}

/// Largest manifest file read. Reading and parsing take memory and time in proportion to the
/// size (several times the text, and seconds for the largest), and reloads wait for them; 16 MiB
/// holds the largest bundles in common use (prometheus-operator's is under 5 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// The file's text, or why it cannot be had.
fn read_text(file: &Path) -> Result<String, String> {
    use std::io::Read;
    let too_large = |size: u64| {
        format!(
            "it is {size} bytes, more than the {} MiB ({MAX_MANIFEST_BYTES} bytes) portier reads from one manifest file; split it into several files",
            MAX_MANIFEST_BYTES >> 20
        )
    };
    let opened = std::fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let size = opened.metadata().map_err(|e| format!("cannot read: {e}"))?.len();
    if size > MAX_MANIFEST_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    // It may grow while read: never take more than the limit.
    opened.take(MAX_MANIFEST_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = 1 + valid.iter().filter(|&&b| b == b'\n').count();
        format!("it is not UTF-8 text (the first invalid byte is on line {line}); save it as UTF-8")
    })
}

fn list_yaml(dir: &Path, out: &mut Vec<PathBuf>, warnings: &mut Vec<Warning>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            warnings.push(Warning {
                object: format!("folder {}", dir.display()),
                message: format!("cannot list: {e}"),
                refused: true,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // Editors' and Kubernetes ConfigMap mounts' hidden files (`..data`, `.swp`) are skipped.
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            list_yaml(&path, out, warnings);
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
}

/// Watches the manifest paths; each change (create, modify, delete, rename) sends a unit.
pub fn watch(roots: &[PathBuf], notify_tx: std::sync::mpsc::Sender<()>) -> Result<notify::RecommendedWatcher, String> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_)) {
                let _ = notify_tx.send(());
            }
        }
    })
    .map_err(|e| format!("cannot watch manifests: {e}"))?;
    for root in roots {
        // A file is watched through its folder, so that replacing it (rename over it) is seen.
        let (path, mode) = if root.is_dir() {
            (root.clone(), RecursiveMode::Recursive)
        } else {
            (
                root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf(),
                RecursiveMode::NonRecursive,
            )
        };
        watcher.watch(&path, mode).map_err(|e| format!("--manifests {}: cannot watch: {e}", root.display()))?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_multi_document_yaml_and_ignores_other_kinds() {
        let text = r#"
---
apiVersion: v1
kind: Service
metadata: {name: dash, namespace: kube-system}
spec: {type: ExternalName, externalName: example.com, ports: [{port: 443}]}
---
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ignored}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: dash}
spec:
  rules:
  - http: {paths: [{path: /k8s, pathType: Prefix, backend: {service: {name: dash, port: {number: 443}}}}]}
"#;
        let parsed = parse_manifest(text).unwrap();
        assert_eq!(parsed.objects.len(), 2);
        assert!(parsed.refused.is_empty());
        assert_eq!(parsed.objects[0].key().to_string(), "kube-system/dash");
        assert_eq!(parsed.objects[1].key().to_string(), "default/dash");
    }

    #[test]
    fn refuses_bad_documents_alone() {
        let text = r#"
apiVersion: extensions/v1beta1
kind: Ingress
metadata: {name: old}
---
apiVersion: v1
kind: Service
metadata: {name: bad}
spec: {ports: "not a list"}
---
apiVersion: v1
kind: Service
metadata: {name: good}
"#;
        let parsed = parse_manifest(text).unwrap();
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.refused.len(), 2);
        assert!(parsed.refused[0].contains("document 1") && parsed.refused[0].contains("networking.k8s.io/v1"));
        assert!(parsed.refused[1].contains("document 2") && parsed.refused[1].contains("\"bad\""));
    }

    #[test]
    fn anchors_and_aliases_used_as_intended_still_work() {
        // Anchors live within one document, so both Services are items of one List.
        let text = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: a, labels: &labels {app: web, tier: front}}
  spec: {ports: [&port {name: http, port: 80}]}
- apiVersion: v1
  kind: Service
  metadata: {name: b, labels: *labels, annotations: {note: !custom tagged}}
  spec: {ports: [*port]}
"#;
        let parsed = parse_manifest(text).unwrap();
        assert!(parsed.refused.is_empty(), "{:?}", parsed.refused);
        let Object::Service(b) = &parsed.objects[1] else { panic!("a Service") };
        assert_eq!(b.metadata.labels.as_ref().unwrap()["tier"], "front");
        assert_eq!(b.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port, 80);
        assert!(parse_manifest("a: 1\na: 2\n").unwrap_err().contains("duplicate entry with key \"a\""));
    }

    #[test]
    fn aliases_that_expand_far_beyond_the_text_are_refused() {
        // One anchored sequence of 10,000 items, aliased 10,000 times: 50 KB of text, 10^8 nodes.
        let text = format!("a: &a [{}]\nb: [{}]\n", "x,".repeat(10_000), "*a,".repeat(10_000));
        let started = std::time::Instant::now();
        let err = parse_manifest(&text).unwrap_err();
        assert!(err.contains("aliases") && err.contains("expand"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "refused without expanding it all");
    }

    #[test]
    fn syntax_error_fails_the_file() {
        assert!(parse_manifest("a: [unclosed").unwrap_err().contains("YAML"));
    }

    #[test]
    fn broken_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]).unwrap();
        let (state, warnings) = source.load();
        assert_eq!(state.services.len(), 1);
        assert!(warnings.is_empty());
        std::fs::write(&file, "apiVersion: v1\nkind: [").unwrap();
        let (state, warnings) = source.load();
        assert_eq!(state.services.len(), 1, "last good contents kept");
        assert!(warnings[0].object.contains("svc.yaml") && warnings[0].message.contains("kept"));
        std::fs::remove_file(&file).unwrap();
        let (state, _) = source.load();
        assert!(state.services.is_empty());
    }

    #[test]
    fn unreadable_or_non_utf8_file_keeps_its_last_good_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]).unwrap();
        assert_eq!(source.load().0.services.len(), 1);
        std::fs::write(&file, b"apiVersion: v1\nkind: Service\nmetadata: {name: \xe9}\n").unwrap();
        for _ in 0..2 {
            let (state, warnings) = source.load();
            assert_eq!(state.services.len(), 1, "last good contents kept, on every load");
            assert!(warnings[0].message.contains("line 3") && warnings[0].message.contains("kept"), "{warnings:?}");
        }
    }

    #[test]
    fn unchanged_files_are_not_parsed_again() {
        let dir = tempfile::tempdir().unwrap();
        let svc = |name: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n");
        std::fs::write(dir.path().join("big.yaml"), svc("big")).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "a: [").unwrap();
        std::fs::write(dir.path().join("small.yaml"), svc("small")).unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]).unwrap();
        let (first, first_warnings) = source.load();
        assert_eq!(source.last_parsed, 3);
        std::fs::write(dir.path().join("small.yaml"), svc("changed")).unwrap();
        let (state, warnings) = source.load();
        assert_eq!(source.last_parsed, 1, "only the changed file is parsed");
        assert!(state.services.contains_key(&crate::state::ObjectKey::new("default", "changed")));
        assert_eq!(state.services.len(), first.services.len());
        assert_eq!(warnings, first_warnings, "the unchanged broken file is still reported");
        std::fs::remove_file(dir.path().join("big.yaml")).unwrap();
        source.load();
        std::fs::write(dir.path().join("big.yaml"), svc("big")).unwrap();
        assert_eq!(source.load().0.services.len(), 2);
        assert_eq!(source.last_parsed, 1, "a file removed and written again is parsed again");
    }

    /// A source over one file that held a Service and was then emptied (not loaded since).
    fn one_service_file_then_emptied() -> (tempfile::TempDir, PathBuf, ManifestSource) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("svc.yaml");
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        let mut source = ManifestSource::new(vec![file.clone()]).unwrap();
        assert_eq!(source.load().0.services.len(), 1);
        std::fs::write(&file, "").unwrap();
        (dir, file, source)
    }

    #[test]
    fn an_emptied_file_keeps_its_objects_for_one_look_then_counts_as_empty() {
        let (_dir, file, mut source) = one_service_file_then_emptied();
        assert_eq!(source.load().0.services.len(), 1, "first empty read: maybe mid-write");
        assert!(source.unsettled());
        assert_eq!(source.load().0.services.len(), 0, "still empty: it is empty");
        assert!(!source.unsettled());
        std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").unwrap();
        assert_eq!(source.load().0.services.len(), 1);
        std::fs::write(&file, "").unwrap();
        assert_eq!(source.load().0.services.len(), 1, "each new emptying gets its second look");
    }

    #[test]
    fn a_file_caught_empty_again_after_another_write_is_still_mid_write() {
        let (_dir, file, mut source) = one_service_file_then_emptied();
        assert_eq!(source.load().0.services.len(), 1);
        // Rewritten in place meanwhile, and caught truncated again: a later write than the
        // first empty look, so not "left empty".
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1);
        std::fs::File::options().write(true).truncate(true).open(&file).unwrap().set_modified(later).unwrap();
        assert_eq!(source.load().0.services.len(), 1, "written since the last look: still mid-write");
        assert!(source.unsettled());
        assert_eq!(source.load().0.services.len(), 0, "empty twice with no write between: empty");
    }

    #[test]
    fn duplicates_across_files_are_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let doc = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n";
        std::fs::write(dir.path().join("1.yaml"), doc).unwrap();
        std::fs::write(dir.path().join("2.yml"), doc).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not yaml").unwrap();
        let mut source = ManifestSource::new(vec![dir.path().to_path_buf()]).unwrap();
        let (state, warnings) = source.load();
        assert_eq!(state.services.len(), 1);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].object.contains("2.yml") && warnings[0].message.contains("1.yaml"));
    }

    #[test]
    fn missing_path_names_the_flag_and_path() {
        let err = ManifestSource::new(vec![PathBuf::from("/nonexistent/portier")]).unwrap_err();
        assert!(err.contains("--manifests /nonexistent/portier"), "{err}");
    }
}
