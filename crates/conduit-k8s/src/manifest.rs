//! Multi-document YAML manifests, as `kubectl apply -f` reads them: split into documents
//! (each keeping its original text, so that a tool can pass a document through unchanged),
//! parsed into JSON values, and read as typed Kubernetes resources on demand. Errors name
//! the file, the document and, where it applies, the field.

use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

pub use conduit_api::names::{is_dns_label, is_dns_subdomain};

/// Where a document came from, for messages: `app.yaml, document 2 (Deployment web)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file name, or `-` for standard input.
    pub source: String,
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    /// `kind name`, when the document has them.
    pub object: Option<String>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.source, self.index)?;
        if let Some(object) = &self.object {
            write!(f, " ({object})")?;
        }
        Ok(())
    }
}

/// One YAML document of a manifest.
#[derive(Clone, Debug)]
pub struct Document {
    /// Where it came from.
    pub origin: Origin,
    /// Its text as written, without the `---` marker (what followed the marker on its
    /// line, a comment say, stays: it is the document's first line).
    pub text: String,
    /// Its content; `Value::Null` for a document with only comments.
    pub value: Value,
}

impl Document {
    /// An object read from the Kubernetes API (`value`, as the API serves it), for the
    /// same readers manifests go through: its errors name it as `kind namespace/name`.
    pub fn from_api(kind: &str, namespace: &str, name: &str, value: Value) -> Document {
        Document {
            origin: Origin {
                source: "the Kubernetes API".into(),
                index: 1,
                object: Some(format!("{kind} {namespace}/{name}")),
            },
            text: String::new(),
            value,
        }
    }
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{origin}: not valid YAML: {message}")]
    Yaml { origin: Origin, message: String },
    #[error("{origin}: {field}: {problem}")]
    Field {
        origin: Origin,
        field: String,
        problem: String,
    },
}

impl Document {
    /// The document's `kind`, if any.
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind")?.as_str()
    }

    /// The document's `apiVersion`, if any.
    pub fn api_version(&self) -> Option<&str> {
        self.value.get("apiVersion")?.as_str()
    }

    /// `metadata.name`, if any.
    pub fn name(&self) -> Option<&str> {
        self.value.get("metadata")?.get("name")?.as_str()
    }

    /// `metadata.namespace`, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.value.get("metadata")?.get("namespace")?.as_str()
    }

    /// The annotation `key` of `metadata.annotations`, if set to a string.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.value
            .get("metadata")?
            .get("annotations")?
            .get(key)?
            .as_str()
    }

    /// Whether the document holds nothing but comments or whitespace.
    pub fn is_empty(&self) -> bool {
        self.value.is_null()
    }

    /// Reads the document as a typed resource, naming the field that does not fit.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, ManifestError> {
        serde_json::from_value(self.value.clone()).map_err(|e| ManifestError::Field {
            origin: self.origin.clone(),
            field: "(document)".to_string(),
            problem: e.to_string(),
        })
    }

    /// Its `spec` as `T`, naming what is wrong.
    pub fn spec<T: DeserializeOwned>(&self) -> Result<T, ManifestError> {
        let spec = self.value.get("spec").filter(|s| !s.is_null());
        let spec = spec.ok_or_else(|| self.field_error("spec", "missing"))?;
        T::deserialize(spec).map_err(|e| self.field_error("spec", e.to_string()))
    }

    /// An error about `field` of this document.
    pub fn field_error(&self, field: &str, problem: impl Into<String>) -> ManifestError {
        ManifestError::Field {
            origin: self.origin.clone(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// Splits `text` at `---` lines and parses every document. Empty documents (only
/// comments) are kept, so that writing the documents back reproduces the file.
pub fn parse(text: &str, source: &str) -> Result<Vec<Document>, ManifestError> {
    let mut docs = Vec::new();
    for (i, raw) in split(text).into_iter().enumerate() {
        let mut origin = Origin {
            source: source.to_string(),
            index: i + 1,
            object: None,
        };
        let value = if raw.trim().is_empty() || raw.lines().all(is_comment_or_blank) {
            Value::Null
        } else {
            serde_saphyr::from_str::<Value>(raw).map_err(|e| ManifestError::Yaml {
                origin: origin.clone(),
                message: e.to_string(),
            })?
        };
        if !(value.is_object() || value.is_null()) {
            return Err(ManifestError::Field {
                origin,
                field: "(document)".into(),
                problem: "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
            });
        }
        let kind = value.get("kind").and_then(Value::as_str);
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str);
        origin.object = match (kind, name) {
            (Some(k), Some(n)) => Some(format!("{k} {n}")),
            (Some(k), None) => Some(k.to_string()),
            _ => None,
        };
        docs.push(Document {
            origin,
            text: raw.to_string(),
            value,
        });
    }
    Ok(docs)
}

fn is_comment_or_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#')
}

/// A `---` line (optionally followed by a comment or content) starts a new document.
fn is_separator(line: &str) -> bool {
    line == "---"
        || line.starts_with("--- ")
        || line.starts_with("---\t")
        || line.starts_with("---#")
}

/// The documents' texts. The `---` markers themselves are dropped ([`join`] puts them
/// back, each on a line of its own); what followed one on its line is kept as its
/// document's first line, so that nothing written there is lost.
fn split(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_separator(bare) {
            if offset > start || !docs.is_empty() {
                docs.push(&text[start..offset]);
            }
            let rest = &bare[3..];
            start = offset
                + if rest.trim().is_empty() {
                    line.len()
                } else {
                    3
                };
        }
        offset += line.len();
    }
    if start < text.len() || docs.is_empty() {
        docs.push(&text[start..]);
    }
    docs
}

/// Writes documents back as one multi-document YAML text.
pub fn join<'a>(docs: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, doc) in docs.into_iter().enumerate() {
        if i > 0 {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("---\n");
        }
        out.push_str(doc);
    }
    out
}

/// Serializes a value as a YAML document (for documents a tool changed).
pub fn to_yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|e| format!("# could not write YAML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "\
# a leading comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: emojivoto
spec:
  ports:
  - port: 80
";

    #[test]
    fn splits_and_names_documents() {
        let docs = parse(TWO, "app.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].kind(), Some("Deployment"));
        assert_eq!(docs[1].namespace(), Some("emojivoto"));
        assert_eq!(
            docs[1].origin.to_string(),
            "app.yaml, document 2 (Service web)"
        );
        assert!(docs[0].text.starts_with("# a leading comment\n"));
    }

    #[test]
    fn joining_reproduces_the_file() {
        for text in [
            TWO,
            "---\na: 1\n",
            "a: 1\n---\n# only a comment\n---\nb: 2",
            "a: 1\n",
        ] {
            let docs = parse(text, "-").unwrap();
            assert_eq!(
                join(docs.iter().map(|d| d.text.as_str())),
                text.trim_start_matches("---\n")
            );
        }
    }

    /// Found by the `inject` fuzzer: a comment on a `---` line was dropped (so injecting
    /// twice differed), and so would anything else written after the marker.
    #[test]
    fn what_follows_a_marker_on_its_line_is_kept() {
        let text = "# a comment\n---#  x: shop\n--- # Source: web.yaml\n--- {kind: Service}\n";
        let docs = parse(text, "-").unwrap();
        let texts: Vec<&str> = docs.iter().map(|d| d.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "# a comment\n",
                "#  x: shop\n",
                " # Source: web.yaml\n",
                " {kind: Service}\n"
            ]
        );
        assert_eq!(docs[3].kind(), Some("Service"));
        // Written back, each marker is a line of its own, and that text reads the same.
        let joined = join(texts.iter().copied());
        assert_eq!(
            joined,
            "# a comment\n---\n#  x: shop\n---\n # Source: web.yaml\n---\n {kind: Service}\n"
        );
        let again = parse(&joined, "-").unwrap();
        assert_eq!(join(again.iter().map(|d| d.text.as_str())), joined);
    }

    #[test]
    fn comment_only_documents_are_empty() {
        let docs = parse("a: 1\n---\n# nothing here\n", "-").unwrap();
        assert!(docs[1].is_empty());
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let err = parse("a: 1\n---\nkind: Service\n  bad: [\n", "svc.yaml").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("svc.yaml, document 2: not valid YAML"),
            "{msg}"
        );
        let err = parse("- just\n- a list\n", "list.yaml").unwrap_err();
        assert!(
            err.to_string().contains("expected a Kubernetes object"),
            "{err}"
        );
    }

    #[test]
    fn typed_reads_name_the_problem() {
        use k8s_openapi::api::apps::v1::Deployment;
        let docs = parse(TWO, "app.yaml").unwrap();
        let d: Deployment = docs[0].to_typed().unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        let bad = parse(
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicas: many\n",
            "x.yaml",
        )
        .unwrap();
        let err = bad[0].to_typed::<Deployment>().unwrap_err().to_string();
        assert!(
            err.contains("x.yaml, document 1 (Deployment)") && err.contains("invalid type"),
            "{err}"
        );
    }
}
